package server

import (
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// TestUnheldSpendReachesOtherReplicas: spend a replica books without a
// hold (here cache hits under charge_hits; batches book the same way) must
// reach Redis without waiting for that replica's next hold on the account.
// Replica A serves one request upstream (held: Redis has it), then cache
// hits until its own view puts the key at its budget, after which A
// refuses the key locally, before any hold (spentOut), so no hold of A's
// would ever carry the hits' spend. Replica B must then refuse the key
// within a bounded wait; before the fix Redis knew one request's spend
// and B served nine more, passing the budget by what A booked.
func TestUnheldSpendReachesOtherReplicas(t *testing.T) {
	pg, rd := os.Getenv("TOLLGATE_TEST_POSTGRES_URL"), os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if pg == "" || rd == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL and TOLLGATE_TEST_REDIS_URL are needed for the shared-budget test")
	}
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	base := strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL) + "  redis_url: " + rd + "\n"
	cfgA, err := config.Parse("a.yaml", []byte(base+cacheOn+"  cache_params: {charge_hits: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfgB, err := config.Parse("b.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	st := storetest.OpenPostgres(t, pg)
	prefix := "unheld-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	a, _ := serveSrv(t, cfgA, Options{Store: st, RedisPrefix: prefix, ResyncInterval: 100 * time.Millisecond})
	b, _ := serveSrv(t, cfgB, Options{Store: st, RedisPrefix: prefix, ResyncInterval: 100 * time.Millisecond})
	const key = "sk-unheld-carry-key"
	if code, body := send(t, a+"/key/generate", "sk-1234", `{"key": "`+key+`", "max_budget": 0.003}`); code != 200 { // 10 × 3e-4
		t.Fatal(code, body)
	}
	if _, ok := within(30*time.Second, func() bool {
		c, _ := send(t, b+"/v1/chat/completions", key, `{"model":"nope"}`)
		return c == 404
	}); !ok {
		t.Fatal("replica B does not know the key")
	}
	// A: one request upstream, then hits (each booked without a hold)
	// until A refuses the key.
	served := 0
	for range 30 {
		code, body := send(t, a+"/v1/chat/completions", key, chat3)
		if code == 400 && strings.Contains(body, "budget_exceeded") {
			break
		}
		if code != 200 {
			t.Fatal(code, body)
		}
		served++
	}
	if served != 10 {
		t.Fatalf("replica A served %d requests on a budget for 10", served)
	}
	// B: a probe that spends nothing (its deployment is unreachable: the
	// hold is released) is refused for the budget once Redis has A's spend.
	probe := `{"model":"broken","max_tokens":3,"messages":[{"role":"user","content":"probe"}]}`
	if _, ok := within(time.Minute, func() bool { // generous: a busy machine; without the carry it never happens
		code, body := send(t, b+"/v1/chat/completions", key, probe)
		return code == 400 && strings.Contains(body, "budget_exceeded")
	}); !ok {
		t.Fatal("replica B does not refuse a key that replica A spent out without holds: Redis never got the hits' spend")
	}
	if code, body := send(t, b+"/v1/chat/completions", key, `{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"on B"}]}`); code != 400 {
		t.Fatalf("replica B served a spent-out key: %d %s", code, body)
	}
}
