package ledger_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/netsim"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeCutBeforeHeard: replica B is cut from Redis at the worst moment,
// right after it started: it has never heard about the account, and in the
// first case not even how many replicas are alive (its first heartbeat has
// not answered). Replicas A and C, on real Redis, and B, cut off, then
// spend on one budget concurrently. Spend must stay within the documented
// bound: budget + B's share, remaining ÷ the replicas Redis counts alive.
// A replica that knows neither the account nor the replica count must not
// read that as "I am alone" and spend the whole budget (the fallback the
// shares replaced); one that knows the count takes its share of the
// account's remaining as it knows it locally.
func TestProbeCutBeforeHeard(t *testing.T) {
	url := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if url == "" {
		t.Skip("TOLLGATE_TEST_REDIS_URL is needed for the cut probe")
	}
	ropts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	const price = ledger.Amount(1_000_000) // $0.001 a request
	const budget = 60 * price
	tests := []struct {
		name      string
		beat      bool  // B's first heartbeat answered before the cut
		alive     int64 // replicas Redis counts alive (B's share divides by it)
		maxB      ledger.Amount
		want503   bool // B refuses with 503 (budget not known to be spent)
		wantServe bool // B serves some requests offline
	}{
		{"no heartbeat answered", false, 2, 0, true, false},
		{"heartbeat answered, account never heard", true, 3, budget / 3, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b [6]byte
			_, _ = rand.Read(b[:])
			opts := func() ledger.SharedOptions {
				return ledger.SharedOptions{Prefix: "probe-" + hex.EncodeToString(b[:]),
					Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute}
			}
			onRedis := func() *ledger.Shared {
				c := redis.NewClient(ropts)
				t.Cleanup(func() { c.Close() })
				return ledger.NewShared(runner(t, c), opts())
			}
			a, c := onRedis(), onRedis()
			p, err := netsim.NewProxy(ropts.Addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Cut)
			bo := *ropts
			bo.Addr = p.Addr()
			bc := redis.NewClient(&bo)
			t.Cleanup(func() { bc.Close() })
			bs := ledger.NewShared(runner(t, bc), opts())
			ctx := context.Background()
			beaters := []*ledger.Shared{a, c}
			if tt.beat {
				beaters = append(beaters, bs)
			}
			for _, s := range beaters {
				if _, err := s.Heartbeat(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if n, err := a.Heartbeat(ctx); err != nil || n != tt.alive {
				t.Fatalf("Redis counts %d replicas alive (%v), want %d", n, err, tt.alive)
			}
			p.Cut() // B has heard nothing about the account

			var acctB *ledger.Account
			var spentB, spentRedis atomic.Int64
			var unavailable, exceeded atomic.Int64
			var wg sync.WaitGroup
			for _, r := range []struct {
				s     *ledger.Shared
				spent *atomic.Int64
			}{{a, &spentRedis}, {c, &spentRedis}, {bs, &spentB}} {
				acct := ledger.NewAccount(store.KindKey, "k", 0, budget) // each replica's own view
				if r.s == bs {
					acctB = acct
				}
				for range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							h, err := r.s.Reserve(ctx, []*ledger.Account{acct}, price)
							var un *ledger.UnavailableError
							var ex *ledger.ExceededError
							switch {
							case errors.As(err, &un):
								if r.s == bs {
									unavailable.Add(1)
								}
								return
							case errors.As(err, &ex):
								if r.s == bs {
									exceeded.Add(1)
								}
								return
							case err != nil:
								t.Error(err)
								return
							}
							h.Settle(price)
							r.spent.Add(int64(price))
						}
					}()
				}
			}
			wg.Wait()
			total := ledger.Amount(spentB.Load() + spentRedis.Load())
			bound := budget + budget/ledger.Amount(tt.alive)
			t.Logf("spent %d requests (B, cut off: %d; A and C on Redis: %d) of a budget of %d; bound %d",
				total/price, spentB.Load()/int64(price), spentRedis.Load()/int64(price), budget/price, bound/price)
			if total > bound {
				t.Errorf("spent %d requests' worth, past the bound of %d (budget + remaining / %d alive)", total/price, bound/price, tt.alive)
			}
			if got := ledger.Amount(spentB.Load()); got > tt.maxB {
				t.Errorf("B spent %d requests' worth cut off, more than %d", got/price, tt.maxB/price)
			}
			// What TestRedisCutKeepsBudgets saw under t.Parallel: a cut
			// replica that never heard of the account reports "0 remaining,
			// 0 alive" (LastHeard), yet spends its share of its local view:
			// a bound summed from LastHeard leaves that share out.
			if rem, alive := acctB.LastHeard(); rem != 0 || alive != 0 {
				t.Errorf("B last heard %d remaining, %d alive; want nothing", rem, alive)
			}
			if rem, alive := bs.Share(acctB); tt.beat && (rem != budget || alive != tt.alive) {
				t.Errorf("B's share: %d / %d, want the local view's %d / %d", rem, alive, budget, tt.alive)
			} else if !tt.beat && alive != 0 {
				t.Errorf("B's share: %d / %d, want nothing (alive 0)", rem, alive)
			}
			if tt.wantServe && spentB.Load() == 0 {
				t.Error("B served nothing offline though it knew the replica count")
			}
			if tt.want503 && (unavailable.Load() == 0 || exceeded.Load() != 0) {
				t.Errorf("B's refusals: %d 503, %d 400; want 503 only (the budget is not known to be spent)", unavailable.Load(), exceeded.Load())
			}
		})
	}
}
