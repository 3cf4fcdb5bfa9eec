package server

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/netsim"
	"github.com/tollgate/tollgate/internal/store"
)

// TestRedisCutKeepsBudgets: three gateways on one PostgreSQL, each reaching
// Redis through its own cuttable proxy, burst at a key whose budget covers
// 100 requests; Redis is cut, for one replica or for all, once 40 are
// served. In strict mode no request is served past the budget (the cut
// replicas answer 503 budget_unavailable). In default mode the spend stays
// within the stated bound: budget + the sum, over the replicas cut off, of
// their share (remaining / replicas alive, as each last heard). Without
// shares, a replica cut off would spend all that remained on top of what
// the others spend through Redis. Once Redis is back, every replica's local
// spend reaches Redis exactly once (with allotments, on by default: spend
// booked outside them while cut off is carried by a per-request hold, which
// an account owing it takes instead of its allotment). Nothing waits on a
// deadline: the replicas wait for Redis as long as it takes, so only a cut
// makes a replica decide alone, however loaded the machine.
func TestRedisCutKeepsBudgets(t *testing.T) {
	tests := []struct {
		name, mode string
		cut        int // replicas cut off from Redis (the first ones)
	}{
		{"default, one replica cut", "default", 1},
		{"default, all cut", "default", 3},
		{"strict, one replica cut", "strict", 1},
		{"strict, all cut", "strict", 3},
	}
	const price, budget = 0.0003, 0.03 // 100 requests
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, rigSpec{name: "cut", postgres: true, redis: true, mock: mockupstream.Options{Delay: 5 * time.Millisecond}})
			mock, st := r.mock, r.st
			var proxies []*netsim.Proxy
			for range 3 {
				p, err := netsim.NewProxy(r.ropts.Addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(p.Cut)
				r.start(t, pricedConfig+"  redis_url: redis://"+p.Addr()+"/"+strconv.Itoa(r.ropts.DB)+"\n"+
					"litellm_settings:\n  budget_enforcement: "+tt.mode+"\n",
					Options{ResyncInterval: 100 * time.Millisecond, RedisHoldTimeout: time.Minute, RedisReadTimeout: time.Minute})
				proxies = append(proxies, p)
			}
			urls, srvs := r.urls, r.srvs
			const key = "sk-redis-cut-key"
			r.key(t, key, `"max_budget": 0.03`)
			for _, s := range srvs {
				if _, ok := within(time.Minute, func() bool { return s.shared.Alive() == 3 }); !ok {
					t.Fatalf("a replica counts %d replicas alive, not 3", s.shared.Alive())
				}
			}
			var ok, refused, unavailable atomic.Int64
			var cutOnce sync.Once
			cut := func() {
				for _, p := range proxies[:tt.cut] {
					p.Cut()
				}
			}
			var wg sync.WaitGroup
			for i := range 30 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 10 {
						if mock.Stats().Requests >= 40 {
							cutOnce.Do(cut)
						}
						code, body := send(t, urls[i%3]+"/v1/chat/completions", key, chat3)
						switch {
						case code == 200:
							ok.Add(1)
						case code == 400 && strings.Contains(body, "budget_exceeded"):
							refused.Add(1)
						case code == 503 && strings.Contains(body, "budget_unavailable"):
							unavailable.Add(1)
						default:
							t.Errorf("status %d: %s", code, body)
						}
					}
				}()
			}
			wg.Wait()
			cutOnce.Do(cut)
			// The shares the cut replicas spent by, as each took it: as last
			// heard, or, for a replica that never heard of the key before
			// the cut (LastHeard says 0 remaining, 0 alive), its local view
			// divided by its heartbeat's count (Shared.Share).
			bound := ledger.USD(budget)
			for _, s := range srvs[:tt.cut] {
				if a, found := s.book.Lookup(store.KindKey, sha(key)); found {
					hr, ha := a.LastHeard()
					rem, alive := s.shared.Share(a)
					var share ledger.Amount
					if alive > 0 && rem > 0 {
						share = rem / ledger.Amount(alive)
					}
					t.Logf("cut replica last heard: %.4f remaining, %d alive; its share %.4f / %d = %.4f", hr.Dollars(), ha, rem.Dollars(), alive, share.Dollars())
					if tt.mode == "default" {
						bound += share
					}
				}
			}
			// Only the replicas cut are in the bound because only they
			// decide without Redis: the replicas wait for Redis as long as
			// it takes (RedisHoldTimeout, RedisReadTimeout), and a cut fails
			// at once (connections closed, refused). With the 500 ms
			// default, a replica not cut whose call missed its deadline on a
			// loaded machine fell back for that request and spent within its
			// own share as well - inside the documented bound, which counts
			// it as cut off, but past this one (138 served for a bound of
			// about 121, branch router1; branch redistrouble counted such
			// fallbacks on the replicas not cut beside a CPU hog).
			if tt.mode == "default" {
				// Default mode's own allowance: one request per budget may
				// cost more than it holds - on Redis, and on each replica
				// spending its share without Redis.
				bound += ledger.USD(price) * ledger.Amount(1+tt.cut)
			}
			served := mock.Stats().Requests
			t.Logf("%s: %d served (%d ok, %d refused 400, %d refused 503) for a budget of 100; bound %.0f requests",
				tt.name, served, ok.Load(), refused.Load(), unavailable.Load(), bound.Dollars()/price)
			if spent := ledger.USD(float64(served) * price); spent > bound {
				t.Errorf("%d requests served: $%.4f spent, past the bound $%.4f", served, spent.Dollars(), bound.Dollars())
			}
			if tt.mode == "strict" && unavailable.Load() == 0 {
				t.Error("no request was refused for want of Redis in strict mode")
			}

			// Back on Redis, each replica carries what it spent alone, once.
			for _, p := range proxies[:tt.cut] {
				if err := p.Restore(); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range srvs {
				if _, back := within(time.Minute, func() bool { return !s.limits.Limiter.Degraded() }); !back {
					t.Fatal("a replica did not return to Redis")
				}
			}
			for _, u := range urls {
				if code, body := send(t, u+"/v1/chat/completions", key, chat3); code != 200 && code != 400 {
					t.Fatalf("after Redis came back: %d %s", code, body)
				}
			}
			r.flush()
			served = mock.Stats().Requests
			k, err := st.GetKey(context.Background(), sha(key))
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(k.Spend-float64(served)*price) > 1e-9 {
				t.Errorf("recorded spend %v for %d served requests", k.Spend, served)
			}
			_, total, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
			if int64(total) != served {
				t.Errorf("%d spend logs for %d served requests", total, served)
			}
			c := r.client(t)
			// A settle whose reply the cut lost is taken as run: its lease
			// still holds the amount, so spent + held covers it. With
			// allotments (on by default with Redis) spend decided against
			// an allotment reaches Redis at the allotter's next flush (≤ one
			// interval, 100 ms): waited for, with a generous bound ('spent'
			// only grows, so an overshoot stays one).
			want := ledger.USD(k.Spend)
			var rs, rh int64
			within(time.Minute, func() bool {
				v, err := c.HMGet(context.Background(), r.budget("key", sha(key)), "spent", "held").Result()
				if err != nil {
					t.Fatal(err)
				}
				rs, _ = strconv.ParseInt(fmt.Sprint(v[0]), 10, 64)
				rh, _ = strconv.ParseInt(fmt.Sprint(v[1]), 10, 64)
				return ledger.Amount(rs) > want || ledger.Amount(rs+rh) >= want
			})
			if ledger.Amount(rs) > want || ledger.Amount(rs+rh) < want {
				t.Errorf("redis has spent %v + held %v for a recorded spend of %v: local spend was not carried exactly once",
					ledger.Amount(rs).Dollars(), ledger.Amount(rh).Dollars(), k.Spend)
			}
		})
	}
}

// TestEnforcementMode: litellm_settings.budget_enforcement sets the mode;
// a key's metadata.budget_enforcement can make that key strict, never
// relax a global strict.
func TestEnforcementMode(t *testing.T) {
	tests := []struct {
		name, global string
		meta         map[string]any
		want         ledger.Enforcement
	}{
		{"default", "", nil, ledger.EnforceDefault},
		{"global strict", "strict", nil, ledger.EnforceStrict},
		{"key strict", "default", map[string]any{"budget_enforcement": "strict"}, ledger.EnforceStrict},
		{"key cannot relax", "strict", map[string]any{"budget_enforcement": "default"}, ledger.EnforceStrict},
		{"unknown value ignored", "", map[string]any{"budget_enforcement": "lax"}, ledger.EnforceDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse("t.yaml", []byte("litellm_settings:\n  budget_enforcement: \""+tt.global+"\"\n"))
			if err != nil {
				t.Fatal(err)
			}
			s := &Server{snap: auth.NewSnapshot(nil)}
			s.cfg.Store(cfg)
			s.snap.PutKey(&store.Key{TokenHash: "h", KeyName: "sk-...h", Metadata: tt.meta})
			accts := []*ledger.Account{ledger.NewAccount(store.KindGlobal, "global", 0, ledger.USD(1)), ledger.NewAccount(store.KindKey, "h", 0, ledger.USD(1))}
			if got := s.enforcement(accts); got != tt.want {
				t.Fatalf("mode %v, want %v", got, tt.want)
			}
		})
	}
}
