package server

import (
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/netsim"
)

// TestSlowRedisKeepsRpmAcrossReplicas: two gateways on one Redis, the
// second through a proxy that delays what it sends by 700 ms (Redis slow,
// as on a loaded machine, not down), both with a Redis hold deadline of a
// minute. A key with rpm_limit 3 served three times on the first is
// refused on the second: its rate-limit admission waits for Redis as long
// as a budget hold would, instead of falling back to local counters after
// a fixed 500 ms, where the other replica's admissions are not seen (this
// is how TestAllotmentsAcrossReplicas once served 204 with rpm_limit 200,
// its 300 requests taking seconds, not a minute).
func TestSlowRedisKeepsRpmAcrossReplicas(t *testing.T) {
	r := newRig(t, rigSpec{name: "slowrl", redis: true})
	p, err := netsim.NewProxy(r.ropts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Cut)
	opts := Options{RedisHoldTimeout: time.Minute, RedisReadTimeout: time.Minute}
	base := pricedConfig + "  budget_allotments: false\n"
	r.start(t, base+"  redis_url: {{REDIS}}\n", opts)
	r.start(t, base+"  redis_url: redis://"+p.Addr()+"/"+strconv.Itoa(r.ropts.DB)+"\n", opts)
	r.key(t, "sk-slow-rpm", `"rpm_limit": 3`)
	for i := range 3 {
		if code, body := send(t, r.urls[0]+"/v1/chat/completions", "sk-slow-rpm", chat3); code != 200 {
			t.Fatalf("request %d on the first replica: %d %s", i, code, body)
		}
	}
	p.Delay(700 * time.Millisecond)
	for i := range 3 {
		if code, body := send(t, r.urls[1]+"/v1/chat/completions", "sk-slow-rpm", chat3); code != 429 {
			t.Fatalf("request %d on the replica Redis answers 700 ms late: %d %s (rpm_limit 3, 3 served on the other)", i+4, code, body)
		}
	}
}
