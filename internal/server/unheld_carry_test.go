package server

import (
	"strings"
	"testing"
	"time"
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
	r := newRig(t, rigSpec{name: "unheld", postgres: true, redis: true})
	base := pricedConfig + "  redis_url: {{REDIS}}\n"
	r.start(t, base+cacheOn+"  cache_params: {charge_hits: true}\n", Options{ResyncInterval: 100 * time.Millisecond})
	r.start(t, base, Options{ResyncInterval: 100 * time.Millisecond})
	a, b := r.urls[0], r.urls[1]
	const key = "sk-unheld-carry-key"
	r.key(t, key, `"max_budget": 0.003`) // 10 × 3e-4
	// A: one request upstream, then hits (each booked without a hold)
	// until A refuses the key.
	served := serveUntilRefused(t, a, key)
	if served != 10 {
		t.Fatalf("replica A served %d requests on a budget for 10", served)
	}
	// B: a probe that spends nothing (its deployment is unreachable: the
	// hold is released) is refused for the budget once Redis has A's spend.
	if !refusedWithinAMinute(t, b, key) { // generous: a busy machine; without the carry it never happens
		t.Fatal("replica B does not refuse a key that replica A spent out without holds: Redis never got the hits' spend")
	}
	if code, body := send(t, b+"/v1/chat/completions", key, `{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"on B"}]}`); code != 400 {
		t.Fatalf("replica B served a spent-out key: %d %s", code, body)
	}
}

// serveUntilRefused sends chat3 on key to the gateway at base, up to 30
// times, until it is refused for the budget; it returns how many were
// served and fails the test on any other answer.
func serveUntilRefused(t *testing.T, base, key string) int {
	t.Helper()
	served := 0
	for range 30 {
		code, body := send(t, base+"/v1/chat/completions", key, chat3)
		if code == 400 && strings.Contains(body, "budget_exceeded") {
			break
		}
		if code != 200 {
			t.Fatal(code, body)
		}
		served++
	}
	return served
}

// refusedWithinAMinute reports whether the gateway at base comes to refuse
// key for its budget within a minute, asked by a probe that spends nothing
// (its deployment is unreachable: the hold is released).
func refusedWithinAMinute(t *testing.T, base, key string) bool {
	t.Helper()
	probe := `{"model":"broken","max_tokens":3,"messages":[{"role":"user","content":"probe"}]}`
	_, ok := within(time.Minute, func() bool {
		code, body := send(t, base+"/v1/chat/completions", key, probe)
		return code == 400 && strings.Contains(body, "budget_exceeded")
	})
	return ok
}
