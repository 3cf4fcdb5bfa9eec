package ledger_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestSlowRedisReplicaCountsAsCutOffOnce: default mode, two replicas on
// one budget. Replica A reaches Redis directly and spends all Redis lets
// it; replica S stays on Redis (nothing refuses its connection) but
// Redis reaches it late: each hold misses its deadline and falls back to
// S's share, while the calls themselves run on Redis late (carrying S's
// offline spend, which S keeps in doubt until it learns they did), over
// and over. docs/spend-and-limits.md, "Redis trouble": such a replica
// counts as cut off, once, with its share as last heard: spend ≤ budget
// + that share, however many times it falls back and hears Redis again
// in between. Once Redis is quick again, it has every booking once.
func TestSlowRedisReplicaCountsAsCutOffOnce(t *testing.T) {
	g := newLostRigWith(t, 10*time.Second, 50*time.Millisecond) // S: a hold waits 50 ms
	ctx := context.Background()
	budget, cost := ledger.USD(1), ledger.USD(0.02)
	a := newAllotReplica(t, g.prefix, budget, time.Minute) // A: its Shared, per request
	sKey := ledger.NewAccount(store.KindKey, "k", 0, budget)
	if _, err := g.s.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	refused := func(err error) bool {
		var ex *ledger.ExceededError
		var un *ledger.UnavailableError
		return errors.As(err, &ex) || errors.As(err, &un)
	}
	var served, byS, byA ledger.Amount
	// S hears the budget (a hold answered in time: on a loaded machine
	// one may miss its 50 ms and fall back, then Redis is asked again).
	for deadline := time.Now().Add(time.Minute); ; {
		if _, alive := sKey.LastHeard(); alive == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("S never heard the budget from Redis")
		}
		h, err := g.s.Reserve(ctx, []*ledger.Account{sKey}, cost)
		if err != nil {
			if !refused(err) {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		h.Settle(cost)
		served += cost
		byS += cost
	}
	remaining, alive := g.s.Share(sKey)
	share := remaining / ledger.Amount(alive)
	g.p.Delay(100 * time.Millisecond) // every call of S reaches Redis 100 ms late

	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed error
	run := func(reserve func() (ledger.Hold, error), attempts int, stopAfterRefusals int, mine *ledger.Amount) {
		defer wg.Done()
		inARow := 0
		for range attempts {
			h, err := reserve()
			if err != nil {
				if !refused(err) {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
				if inARow++; stopAfterRefusals > 0 && inARow >= stopAfterRefusals {
					return
				}
				continue
			}
			inARow = 0
			h.Settle(cost)
			mu.Lock()
			served += cost
			*mine += cost
			mu.Unlock()
		}
	}
	wg.Add(2)
	go run(func() (ledger.Hold, error) { return g.s.Reserve(ctx, []*ledger.Account{sKey}, cost) }, 120, 0, &byS)
	go run(func() (ledger.Hold, error) { return a.s.Reserve(ctx, []*ledger.Account{a.key}, cost) }, 1000, 30, &byA)
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
	offline := g.s.Offline()
	if offline == 0 {
		t.Fatal("no hold of S fell back: nothing probed")
	}

	// Redis quick again: S's offline spend and items in doubt reach it.
	if err := g.p.Restore(); err != nil {
		t.Fatal(err)
	}
	g.r.Recover()
	g.s.WaitOutcomes()
	g.s.WaitResolved()
	for deadline := time.Now().Add(time.Minute); sKey.Unsynced() != 0 || sKey.Doubt() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("S's offline spend never reached Redis: %d unsynced, %d items in doubt", sKey.Unsynced(), sKey.Doubt())
		}
		if h, err := g.s.Reserve(ctx, []*ledger.Account{sKey}, 0); err == nil { // carries it
			h.Release()
		}
		g.s.WaitOutcomes()
		g.s.WaitResolved()
		time.Sleep(10 * time.Millisecond)
	}
	spent, _ := strconv.ParseInt(g.field("k", "spent"), 10, 64)
	t.Logf("A served %v, S %v", byA.Dollars(), byS.Dollars())
	t.Logf("served %v of a budget of %v (S's share %v as last heard before Redis slowed; %d of S's holds fell back); Redis has spent %v",
		served.Dollars(), budget.Dollars(), share.Dollars(), offline, ledger.Amount(spent).Dollars())
	if served > budget+share {
		t.Fatalf("served %v: past the budget %v + S's share %v", served.Dollars(), budget.Dollars(), share.Dollars())
	}
	if ledger.Amount(spent) != served {
		t.Fatalf("Redis has spent %v, the replicas served %v: every booking once", ledger.Amount(spent).Dollars(), served.Dollars())
	}
}
