package ledger_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeConcurrentHolds: two replicas, many goroutines on one account
// near its limit: strict never passes the budget, up-to by at most one
// request's overshoot; held returns to 0 and no lease is left.
func TestProbeConcurrentHolds(t *testing.T) {
	c, p := realRedis(t)
	ctx := context.Background()
	for _, strict := range []bool{true, false} {
		id := "conc" + strconv.FormatBool(strict)
		const budget, each = 10500, 1000
		var reps []*ledger.Shared
		var accts []*ledger.Account
		for range 2 {
			reps = append(reps, ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: p, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute}))
			accts = append(accts, ledger.NewAccount(store.KindKey, id, 0, budget))
		}
		var wg sync.WaitGroup
		for g := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, a := reps[g%2], accts[g%2]
				for range 5 {
					var h ledger.Hold
					var err error
					if strict {
						h, err = s.Reserve(ctx, []*ledger.Account{a}, each)
					} else {
						h, err = s.ReserveUpTo(ctx, []*ledger.Account{a}, each)
					}
					var ex *ledger.ExceededError
					if errors.As(err, &ex) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					h.Settle(each) // worst case: the answer costs what was asked
				}
			}()
		}
		wg.Wait()
		k := "{" + p + "}:bud:key:" + id
		v, _ := c.HGetAll(ctx, k).Result()
		spent, _ := strconv.ParseInt(v["spent"], 10, 64)
		limit := int64(budget)
		if !strict {
			limit += each
		}
		if spent > limit || spent < budget-each {
			t.Errorf("strict=%v: spent %d, budget %d", strict, spent, budget)
		}
		if v["held"] != "0" {
			t.Errorf("strict=%v: held %q after every settle", strict, v["held"])
		}
		for f, val := range v {
			if len(f) == 24 {
				t.Errorf("strict=%v: lease %s=%s left", strict, f, val)
			}
		}
	}
}

// TestProbeCrashedHolderAndLateSettle: a replica dies holding; its lease
// expires and the budget returns. A settle after its lease was swept books
// the spend and does not take held below what others hold.
func TestProbeCrashedHolderAndLateSettle(t *testing.T) {
	c, p := realRedis(t)
	ctx := context.Background()
	s := ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: p, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	s.LeaseTTL = 300 * time.Millisecond
	a := ledger.NewAccount(store.KindTeam, "crash", 0, 1000)
	dead, err := s.Reserve(ctx, []*ledger.Account{a}, 800)
	if err != nil {
		t.Fatal(err)
	}
	s.LeaseTTL = time.Hour
	var h ledger.Hold
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if h, err = s.Reserve(ctx, []*ledger.Account{a}, 900); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if h == nil {
		t.Fatalf("the dead lease never expired: %v", err)
	}
	k := "{" + p + "}:bud:team:crash"
	if v, _ := c.HGet(ctx, k, "held").Result(); v != "900" {
		t.Fatalf("held %s after the sweep, want 900", v)
	}
	dead.Settle(50) // late: its lease is gone
	dead.Settle(50) // and again: a no-op
	if v, _ := c.HMGet(ctx, k, "held", "spent").Result(); v[0] != "900" || v[1] != "50" {
		t.Fatalf("after the late settle held/spent %v, want 900/50", v)
	}
	h.Settle(100)
	if v, _ := c.HMGet(ctx, k, "held", "spent").Result(); v[0] != "0" || v[1] != "150" {
		t.Fatalf("held/spent %v, want 0/150", v)
	}
}
