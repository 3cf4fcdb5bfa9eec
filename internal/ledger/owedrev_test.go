package ledger_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestDoubtRetryLeavesAnAccountRedisLostToAHold: an item in doubt whose retry
// (settleDoubt) reaches a Redis that came back without the account must
// stay for A's next hold, as carryOne's does: taken as landed it goes into
// A's seed, applied nowhere, and is lost when B seeds the account first.
func TestDoubtRetryLeavesAnAccountRedisLostToAHold(t *testing.T) {
	g := newLostRigWith(t, 300*time.Millisecond, time.Second)
	ctx := context.Background()
	budget := 10.0
	keyA := ledger.NewBook(nil).Account(store.KindKey, "k", ledger.Spec{Budget: &budget})
	accts := []*ledger.Account{keyA}
	sB := ledger.NewShared(runner(t, g.c), ledger.SharedOptions{Prefix: g.prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	keyB := ledger.NewAccount(store.KindKey, "k", ledger.USD(0.11), ledger.USD(10)) // the store's 0.11

	g.spend(t, keyA, ledger.USD(0.1))
	ledger.Spend(accts, ledger.USD(0.01)) // loads the carry script
	g.s.CarryUnheld(accts)
	g.s.WaitResolved()
	g.waitSpent(t, "k", ledger.USD(0.11))

	g.p.BlackHole() // the carry's answer is lost: in doubt, settleDoubt retries
	ledger.Spend(accts, ledger.USD(0.02))
	g.s.CarryUnheld(accts)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && keyA.Doubt() == 0; time.Sleep(time.Millisecond) {
	}
	if keyA.Doubt() == 0 {
		t.Fatal("the carry never came in doubt")
	}
	g.c.Del(ctx, "{"+g.prefix+"}:bud:key:k") // Redis restarted empty
	if err := g.p.Restore(); err != nil {
		t.Fatal(err)
	}
	g.r.Recover()
	g.s.WaitResolved() // settleDoubt's retry reached the empty Redis

	hb, err := sB.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.1)) // B seeds the account
	if err != nil {
		t.Fatal(err)
	}
	hb.Settle(ledger.USD(0.05))
	g.spend(t, keyA, ledger.USD(0.01)) // A's next hold
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.19)); got != want {
		t.Fatalf("Redis has spent %s, want %s (the store's 0.11, B's 0.05, A's 0.02 in doubt and 0.01, each once)", got, want)
	}
}

// TestSettleInDoubtOnAnAccountRedisLostCountsOnce: a settle whose answer was lost
// (in doubt as "s:<lease>") on an account Redis then lost (restarted
// empty, its leases with it) must still count once when replica B seeds
// the account first: A's next hold does not seed, and the lease it is
// applied under is gone.
func TestSettleInDoubtOnAnAccountRedisLostCountsOnce(t *testing.T) {
	g := newLostRigWith(t, 300*time.Millisecond, time.Second)
	ctx := context.Background()
	budget := 10.0
	keyA := ledger.NewBook(nil).Account(store.KindKey, "k", ledger.Spec{Budget: &budget})
	sB := ledger.NewShared(runner(t, g.c), ledger.SharedOptions{Prefix: g.prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	keyB := ledger.NewAccount(store.KindKey, "k", ledger.USD(0.1), ledger.USD(10)) // the store's 0.1

	g.spend(t, keyA, ledger.USD(0.1))
	h, err := g.s.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.5))
	if err != nil {
		t.Fatal(err)
	}
	g.p.BlackHole() // the settle's answer is lost: in doubt, settleDoubt retries
	h.Settle(ledger.USD(0.02))
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && keyA.Doubt() == 0; time.Sleep(time.Millisecond) {
	}
	if keyA.Doubt() == 0 {
		t.Fatal("the settle never came in doubt")
	}
	g.c.Del(ctx, "{"+g.prefix+"}:bud:key:k") // Redis restarted empty
	g.back(t, true)
	g.s.WaitResolved() // settleDoubt's retry reached the empty Redis

	hb, err := sB.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.1)) // B seeds the account
	if err != nil {
		t.Fatal(err)
	}
	hb.Settle(ledger.USD(0.05))
	g.spend(t, keyA, ledger.USD(0.01)) // A's next hold
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.18)); got != want {
		all, _ := g.c.HGetAll(ctx, "{"+g.prefix+"}:bud:key:k").Result()
		t.Logf("hash %v doubt %d unsynced %d degraded %v", all, keyA.Doubt(), keyA.Unsynced(), g.r.Degraded())
		t.Fatalf("Redis has spent %s, want %s (the store's 0.1, B's 0.05, A's settle in doubt 0.02 and 0.01, each once)", got, want)
	}
}

// TestCarryKeepsSpendForAStalePeriodsReseed: Redis still has the account in the period
// before the one replica A booked offline spend in (its period reset while
// Redis was away, and no hold has reseeded it yet). A's carry (the sweep's,
// CarryUnheld's) must keep that spend for the hold that reseeds the new
// period, as for an account Redis lacks: taken as the store's alone, it
// goes into A's seed and is lost when replica B reseeds the period first.
func TestCarryKeepsSpendForAStalePeriodsReseed(t *testing.T) {
	g := newLostRig(t)
	ctx := context.Background()
	p1 := time.Now().Add(time.Hour).Truncate(time.Second)
	p2 := p1.Add(time.Hour)
	keyA := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(10))
	keyA.SetResetAt(p1)
	accts := []*ledger.Account{keyA}
	sB := ledger.NewShared(runner(t, g.c), ledger.SharedOptions{Prefix: g.prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	keyB := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(10)) // rolled over from the store: 0 in p2
	keyB.SetResetAt(p2)

	g.spend(t, keyA, ledger.USD(0.1)) // Redis has the account in p1
	g.p.Cut()
	g.r.Degrade(errAway)
	keyA.SetResetAt(p2) // the period resets while Redis is away
	keyA.SetSpent(0)
	ledger.Spend(accts, ledger.USD(0.2)) // offline spend of p2
	g.s.CarryUnheld(accts)               // Redis down: noted
	if err := g.p.Restore(); err != nil {
		t.Fatal(err)
	}
	g.r.Recover()
	g.s.CarryUnheld(accts) // the sweep's carry
	g.s.WaitResolved()

	hb, err := sB.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.1)) // B reseeds p2
	if err != nil {
		t.Fatal(err)
	}
	hb.Settle(ledger.USD(0.05))
	g.spend(t, keyA, ledger.USD(0.01)) // A's next hold
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.26)); got != want {
		t.Fatalf("Redis has spent %s in period %s, want %s (A's offline 0.2, B's 0.05, A's 0.01, each once)", got, g.field("k", "period"), want)
	}
}

// TestSweepRacingHoldsCountsOnce: once Redis is back, the sweep,
// CarryUnheld's carries and per-request holds all race to carry the same
// account's offline spend (and the spend booked meanwhile): Redis must
// count every amount once.
func TestSweepRacingHoldsCountsOnce(t *testing.T) {
	g := newLostRig(t)
	ctx := context.Background()
	keyA := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1000))
	accts := []*ledger.Account{keyA}
	g.spend(t, keyA, ledger.USD(0.1))
	g.p.Cut()
	g.r.Degrade(errAway)
	for range 10 {
		ledger.Spend(accts, ledger.USD(0.03))
		g.s.CarryUnheld(accts) // noted
	}
	if err := g.p.Restore(); err != nil {
		t.Fatal(err)
	}
	g.r.Recover()
	actx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { g.s.Announce(actx); close(done) }()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				ledger.Spend(accts, ledger.USD(0.01))
				g.s.CarryUnheld(accts)
				h, err := g.s.Reserve(ctx, accts, ledger.USD(0.1))
				if err != nil {
					t.Error(err)
					return
				}
				h.Settle(ledger.USD(0.02))
			}
		}()
	}
	wg.Wait()
	want := usdString(ledger.USD(0.1 + 0.3 + 8*20*0.03))
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && (g.field("k", "spent") != want || keyA.Unsynced() != 0); time.Sleep(10 * time.Millisecond) {
		g.s.CarryUnheld(accts)
	}
	stop()
	<-done
	g.s.WaitResolved()
	if got := g.field("k", "spent"); got != want || keyA.Unsynced() != 0 || g.r.Degraded() {
		t.Fatalf("Redis has spent %s, want %s (unsynced %d, degraded %v)", got, want, keyA.Unsynced(), g.r.Degraded())
	}
}
