package server

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/netsim"
	"github.com/tollgate/tollgate/internal/store"
)

// TestOfflineSpendSweptToOtherReplica: the sweep (ledger/owed.go) through
// two real gateways on one PostgreSQL and one Redis. Replica A reaches
// Redis through a proxy the test cuts; B straight. A serves a budgeted key
// while its Redis is away (offline holds within its share: the spend is
// booked in A's ledger and the store, not on Redis), B serves the key on
// Redis meanwhile until the spend of both passes the budget, and Redis
// comes back. A gets no further request on the key, so no hold of A's
// carries its offline spend: only A's presence actor (its heartbeat, then
// the sweep) can. B must come to refuse the key, and Redis must count
// every request once, with allotments on (the default with Redis) and off.
func TestOfflineSpendSweptToOtherReplica(t *testing.T) {
	t.Parallel() // each case a rig and proxy of its own (waitBound)
	tests := []struct{ name, extra string }{
		{"allotments on", ""},
		{"allotments off", "  budget_allotments: false\n"},
	}
	const price = 0.0003 // chat3: 3 completion tokens at 0.0001
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, rigSpec{name: "sweep", postgres: true, redis: true})
			p, err := netsim.NewProxy(r.ropts.Addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Cut)
			opts := Options{ResyncInterval: 100 * time.Millisecond}
			a := r.start(t, pricedConfig+"  redis_url: redis://"+p.Addr()+"/"+strconv.Itoa(r.ropts.DB)+"\n"+tt.extra, opts)
			b := r.start(t, pricedConfig+"  redis_url: {{REDIS}}\n"+tt.extra, opts)
			ua, ub := r.urls[0], r.urls[1]
			const key = "sk-sweep-replica-key"
			// 6 requests. Below 4 worst-case holds per live replica
			// left, no replica holds an allotment of the key: A's offline
			// requests are decided against its share, not an allotment.
			r.key(t, key, `"max_budget": 0.0018`)
			for _, s := range []*Server{a, b} {
				if _, ok := within(time.Minute, func() bool { return s.shared.Alive() == 2 }); !ok {
					t.Fatalf("a replica counts %d replicas alive, not 2", s.shared.Alive())
				}
			}
			serve := func(u, who string) {
				t.Helper()
				if code, body := send(t, u+"/v1/chat/completions", key, chat3); code != 200 {
					t.Fatalf("%s: %d %s", who, code, body)
				}
			}
			// A on Redis: 1 of 6 spent; A hears 5 remain, 2 replicas (its
			// share when cut off: 2.5 requests).
			serve(ua, "A before the cut")
			p.Cut()
			// A cut off: 2 requests within its share, booked in A alone.
			serve(ua, "A cut off")
			serve(ua, "A cut off")
			if !a.limits.Limiter.Degraded() {
				t.Fatal("replica A does not take Redis for away")
			}
			// B on Redis: 4 more. Redis counts 5 of 6; the spend is 7.
			for range 4 {
				serve(ub, "B")
			}
			if err := p.Restore(); err != nil {
				t.Fatal(err)
			}
			served := r.mock.Stats().Requests
			if served != 7 {
				t.Fatalf("the upstream served %d requests, want 7", served)
			}
			// No request to A from here on. B refuses the key once Redis
			// has A's offline spend; a probe spends nothing (its
			// deployment is unreachable: its hold is released).
			if !refusedWithinAMinute(t, ub, key) {
				ra, _ := a.book.Lookup(store.KindKey, sha(key))
				t.Fatalf("replica B does not refuse a key spent past its budget a minute after Redis came back to replica A (A degraded %v, owes %d accounts, its view %.4f): A's offline spend never reached Redis without a request to A",
					a.limits.Limiter.Degraded(), a.shared.Owed(), ra.Spent().Dollars())
			}
			if code, body := send(t, ub+"/v1/chat/completions", key, chat3); code != 400 || !strings.Contains(body, "budget_exceeded") {
				t.Fatalf("replica B served a key spent past its budget: %d %s", code, body)
			}
			if got := r.mock.Stats().Requests; got != served {
				t.Fatalf("the upstream served %d requests after Redis came back, want none", got-served)
			}
			// Redis counts the 7 requests once; so does the store.
			c := r.client(t)
			want := strconv.FormatInt(int64(ledger.USD(float64(served)*price)), 10)
			var got string
			within(time.Minute, func() bool {
				got, _ = c.HGet(context.Background(), r.budget("key", sha(key)), "spent").Result()
				return got == want
			})
			if got != want {
				t.Fatalf("Redis has spent %s, want %s (%d requests, each once)", got, want, served)
			}
			r.flush()
			k, err := r.st.GetKey(context.Background(), sha(key))
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(k.Spend-float64(served)*price) > 1e-9 {
				t.Fatalf("the store has spent %v for %d requests", k.Spend, served)
			}
		})
	}
}

// TestOfflineCacheHitsSweptToOtherReplica: the case the sweep was made
// for, through two real gateways. Replica A, cut off from Redis, serves a
// key charged cache hits (booked without a hold: nothing carries them
// while Redis is away) until its own view refuses the key (the cache
// path's spentOut, before any hold). Redis comes back and A gets no
// further request: no hold of A's will ever carry the hits' spend, and
// the refusal's own carry found Redis away. B must come to refuse the key.
func TestOfflineCacheHitsSweptToOtherReplica(t *testing.T) {
	r := newRig(t, rigSpec{name: "sweephits", postgres: true, redis: true})
	p, err := netsim.NewProxy(r.ropts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Cut)
	opts := Options{ResyncInterval: 100 * time.Millisecond}
	a := r.start(t, pricedConfig+"  redis_url: redis://"+p.Addr()+"/"+strconv.Itoa(r.ropts.DB)+"\n"+cacheOn+"  cache_params: {charge_hits: true}\n", opts)
	r.start(t, pricedConfig+"  redis_url: {{REDIS}}\n", opts)
	ua, ub := r.urls[0], r.urls[1]
	const key = "sk-sweep-hits-key"
	r.key(t, key, `"max_budget": 0.003`) // 10 × 3e-4
	// A: one request upstream (held on Redis, and cached), then Redis away.
	if code, body := send(t, ua+"/v1/chat/completions", key, chat3); code != 200 {
		t.Fatal(code, body)
	}
	p.Cut()
	hits := serveUntilRefused(t, ua, key)
	if hits != 9 || r.mock.Stats().Requests != 1 {
		t.Fatalf("replica A served %d charged hits and %d upstream calls on a budget for 10", hits, r.mock.Stats().Requests)
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	// No request to A from here on.
	if !refusedWithinAMinute(t, ub, key) {
		t.Fatalf("replica B does not refuse a key replica A spent out in charged cache hits while Redis was away, a minute after Redis came back (A degraded %v, owes %d accounts)",
			a.limits.Limiter.Degraded(), a.shared.Owed())
	}
	c := r.client(t)
	want := strconv.FormatInt(int64(ledger.USD(0.003)), 10)
	var got string
	within(time.Minute, func() bool {
		got, _ = c.HGet(context.Background(), r.budget("key", sha(key)), "spent").Result()
		return got == want
	})
	if got != want {
		t.Fatalf("Redis has spent %s, want %s (one request and 9 hits, each once)", got, want)
	}
}
