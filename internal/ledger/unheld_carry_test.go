package ledger_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestCarryUnheldOneAtATimePerAccount: a flood of spend booked without
// a hold (charged cache hits) on one account while Redis does not answer
// (not yet marked down) must not start one background carry per booking:
// at most one carry per account runs at once, and what is booked while it
// runs is not left behind (Redis ends up with every booking, once).
func TestCarryUnheldOneAtATimePerAccount(t *testing.T) {
	g := newLostRig(t)
	ctx := context.Background()
	book := ledger.NewBook(nil)
	budget := 10.0
	key := book.Account(store.KindKey, "k", ledger.Spec{Budget: &budget})
	accts := []*ledger.Account{key}
	g.spend(t, key, ledger.USD(0.1)) // Redis has the account
	// A first carry, answered, loads the script.
	ledger.Spend(accts, ledger.USD(0.01))
	g.s.CarryUnheld(accts)
	g.waitSpent(t, "k", ledger.USD(0.11))
	g.s.WaitResolved()

	g.p.BlackHole()
	before := runtime.NumGoroutine()
	const n = 50
	for range n {
		ledger.Spend(accts, ledger.USD(0.01))
		g.s.CarryUnheld(accts)
	}
	if extra := runtime.NumGoroutine() - before; extra > 10 {
		t.Errorf("%d goroutines more after %d unheld bookings on one account while Redis does not answer: one carry per booking, unbounded", extra, n)
	}
	g.back(t, false)
	want := ledger.USD(0.11) + n*ledger.USD(0.01)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		g.r.Recover()
		if g.s.CarryOffline(ctx, book) == 0 && g.field("k", "spent") == usdString(want) {
			break
		}
	}
	if got := g.field("k", "spent"); got != usdString(want) {
		t.Fatalf("Redis has spent %s, want %s", got, usdString(want))
	}
	g.s.WaitResolved()
}

// TestCarryUnheldFloodReachesRedis: bookings without a hold from many
// goroutines at once on one account (one carry at a time runs; the others
// leave their spend to it) all reach Redis, once, with no hold and no
// CarryOffline after them.
func TestCarryUnheldFloodReachesRedis(t *testing.T) {
	g := newLostRig(t)
	book := ledger.NewBook(nil)
	budget := 10.0
	key := book.Account(store.KindKey, "k", ledger.Spec{Budget: &budget})
	team := book.Account(store.KindTeam, "t", ledger.Spec{Budget: &budget})
	accts := []*ledger.Account{key, team}
	h, err := g.s.Reserve(context.Background(), accts, ledger.USD(1))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.1)) // Redis has the accounts
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				ledger.Spend(accts, ledger.USD(0.01))
				g.s.CarryUnheld(accts)
			}
		}()
	}
	wg.Wait()
	g.s.WaitResolved()
	want := usdString(ledger.USD(0.1) + workers*each*ledger.USD(0.01))
	if got := g.field("k", "spent"); got != want {
		t.Fatalf("Redis has spent %s on the key, want %s", got, want)
	}
	if got, _ := g.c.HGet(context.Background(), "{"+g.prefix+"}:bud:team:t", "spent").Result(); got != want {
		t.Fatalf("Redis has spent %s on the team, want %s", got, want)
	}
}

// TestCarryOfflineWaitsForUnheldCarry: CarryOffline (a replica
// stopping) while a CarryUnheld carry is in flight, its request held back
// in the network: the carry's spend is claimed (in carrying, not
// unsynced), so CarryOffline must wait for it to end before it carries,
// or it reports every account carried while Redis lacks that spend, and
// the carry's goroutine goes on after the replica has closed its client.
func TestCarryOfflineWaitsForUnheldCarry(t *testing.T) {
	g := newLostRigWith(t, 500*time.Millisecond, time.Second)
	book, accts := g.carriedKey(t)
	g.p.Stall()
	ledger.Spend(accts, ledger.USD(0.02))
	g.s.CarryUnheld(accts)
	// The carry has claimed the spend (its request is on its way).
	for deadline := time.Now().Add(30 * time.Second); accts[0].Unsynced() != 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	failed := g.s.CarryOffline(ctx, book)
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.13)); failed == 0 && got != want {
		t.Errorf("CarryOffline reported every account carried, Redis has spent %s, want %s", got, want)
	}
	if err := g.p.Restore(); err != nil {
		t.Fatal(err)
	}
	g.r.Recover()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && g.field("k", "spent") != usdString(ledger.USD(0.13)); time.Sleep(20 * time.Millisecond) {
		g.r.Recover()
		g.s.CarryOffline(context.Background(), book)
	}
	g.s.WaitResolved()
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.13)); got != want {
		t.Fatalf("Redis has spent %s, want %s (once)", got, want)
	}
}
