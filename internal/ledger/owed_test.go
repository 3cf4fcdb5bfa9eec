package ledger_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestOfflineSpendReachesOtherReplicasWithoutAHold: replica A books spend
// while its Redis is away - an offline hold within its share, then spend
// without a hold (a charged cache hit, a batch) that takes the key past
// its budget - and, once Redis answers again, makes no further hold on
// the key (its own view refuses it: the cache's spentOut, a batch's
// MayAfford). Replica B, on the same Redis, must come to refuse the key
// with nothing from A but its presence actor (Announce) running. Before
// the sweep Redis never got that spend while A ran (only A's next hold,
// or its stop, carried it), and B served on past the budget. Redis must
// count A's spend once.
func TestOfflineSpendReachesOtherReplicasWithoutAHold(t *testing.T) {
	g := newLostRig(t) // replica A, through a proxy it can cut
	ctx := context.Background()
	budget := 1.0
	bookA := ledger.NewBook(nil)
	keyA := bookA.Account(store.KindKey, "k", ledger.Spec{Budget: &budget})
	rB := runner(t, g.c) // replica B, straight to Redis
	sB := ledger.NewShared(rB, ledger.SharedOptions{Prefix: g.prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	keyB := ledger.NewBook(nil).Account(store.KindKey, "k", ledger.Spec{Budget: &budget})

	g.spend(t, keyA, ledger.USD(0.1)) // Redis has the key; A heard what remains
	g.p.Cut()
	g.r.Degrade(errAway)
	h, err := g.s.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.2)) // offline, within A's share
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.2))
	ledger.Spend([]*ledger.Account{keyA}, ledger.USD(1)) // unheld, as BookUnheld books it
	g.s.CarryUnheld([]*ledger.Account{keyA})             // Redis is down: nothing sent
	if err := g.p.Restore(); err != nil {
		t.Fatal(err)
	}
	g.r.Recover()

	actx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { g.s.Announce(actx); close(done) }()
	defer func() { stop(); <-done; g.s.WaitResolved() }()

	refused := false
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		h, err := sB.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.01))
		var ex *ledger.ExceededError
		if errors.As(err, &ex) {
			refused = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		h.Release()
	}
	if !refused {
		t.Fatalf("replica B still holds on a key replica A spent past its budget while Redis was away (Redis has spent %s): A's offline spend never reached Redis without a hold of A's", g.field("k", "spent"))
	}
	want := usdString(ledger.USD(1.3))
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && (g.field("k", "spent") != want || g.s.Owed() != 0); time.Sleep(10 * time.Millisecond) {
	}
	if got := g.field("k", "spent"); got != want {
		t.Fatalf("Redis has spent %s, want %s (A's spend, once)", got, want)
	}
	if n := keyA.Unsynced(); n != 0 {
		t.Fatalf("A still has %d unsynced", n)
	}
}

// TestCarryOfflineWaitsForASlowCarry: a replica stops while a background
// carry (CarryUnheld's) is on its way through a slow network: slower than
// the second the stop used to wait for carries in flight (half of its 2 s),
// within the carry's own deadline (the larger of 2 s and the hold's wait).
// The stop, given the time the server gives it (StopTimeout), must wait
// for the carry, which lands: Redis has the spend when the stop returns,
// and the stop reports nothing left uncarried. Before, the stop returned
// after a second reporting every account carried, and the carry then ended
// with an error once the client closed, its spend in doubt.
func TestCarryOfflineWaitsForASlowCarry(t *testing.T) {
	t.Parallel()
	g := newLostRigWith(t, 30*time.Second, 10*time.Second) // the carry's deadline: 10 s
	book, accts := g.carriedKey(t)

	g.p.Delay(3 * time.Second)
	ledger.Spend(accts, ledger.USD(0.02))
	g.s.CarryUnheld(accts)
	for deadline := time.Now().Add(time.Minute); accts[0].Unsynced() != 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // until the carry has claimed the spend
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.s.StopTimeout())
	defer cancel()
	failed := g.s.CarryOffline(ctx, book)
	got, want := g.field("k", "spent"), usdString(ledger.USD(0.13))
	if got != want {
		t.Errorf("the stop returned (reporting %d accounts not carried) with Redis at spent %s, want %s: it did not wait for the carry in flight", failed, got, want)
	}
	if failed != 0 {
		t.Errorf("the stop reports %d accounts not carried", failed)
	}
	g.s.WaitResolved()
}

// TestCarryOfflineStopsDoubtRetries: a stop while settleDoubt retries an
// item in doubt (Redis not answering) ends the retries - nothing of the
// ledger's keeps running after it - and what it could not carry is
// counted (the server's warning), the item still in doubt. Once Redis
// answers, a later carry lands it once.
func TestCarryOfflineStopsDoubtRetries(t *testing.T) {
	g := newLostRigWith(t, 300*time.Millisecond, time.Second)
	book, accts := g.carriedKey(t)

	g.p.BlackHole() // answers lost, Redis not marked down: settleDoubt retries
	ledger.Spend(accts, ledger.USD(0.02))
	g.s.CarryUnheld(accts)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && accts[0].Unsynced() != 0; time.Sleep(time.Millisecond) {
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.s.StopTimeout())
	defer cancel()
	if failed := g.s.CarryOffline(ctx, book); failed != 1 {
		t.Errorf("the stop reports %d accounts not carried, want 1 (Redis does not answer)", failed)
	}
	stopped := make(chan struct{})
	go func() { g.s.WaitResolved(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(time.Minute):
		t.Fatal("background carries still running a minute after the stop")
	}
	if err := g.p.Restore(); err != nil {
		t.Fatal(err)
	}
	g.r.Recover()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && g.field("k", "spent") != usdString(ledger.USD(0.13)); time.Sleep(20 * time.Millisecond) {
		g.r.Recover()
		g.s.CarryOffline(context.Background(), book)
	}
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.13)); got != want {
		t.Fatalf("Redis has spent %s, want %s (once)", got, want)
	}
}

// TestSweepLeavesAnAccountRedisLostToAHold: Redis comes back without the
// account (restarted empty) while replica A owes it spend booked offline.
// A's sweep must not drop that spend into A's seed (applied nowhere): when
// replica B seeds the account first, from its own view, A's next hold must
// still carry it, so that Redis counts it once.
func TestSweepLeavesAnAccountRedisLostToAHold(t *testing.T) {
	g := newLostRig(t)
	ctx := context.Background()
	budget := 10.0
	keyA := ledger.NewBook(nil).Account(store.KindKey, "k", ledger.Spec{Budget: &budget})
	sB := ledger.NewShared(runner(t, g.c), ledger.SharedOptions{Prefix: g.prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	keyB := ledger.NewAccount(store.KindKey, "k", ledger.USD(0.1), ledger.USD(10)) // the store's 0.1

	g.spend(t, keyA, ledger.USD(0.1))
	g.p.Cut()
	g.r.Degrade(errAway)
	h, err := g.s.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.2))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.2)) // offline: owed to Redis
	if err := g.p.Restore(); err != nil {
		t.Fatal(err)
	}
	g.c.Del(ctx, "{"+g.prefix+"}:bud:key:k") // Redis restarted empty
	g.r.Recover()
	actx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { g.s.Announce(actx); close(done) }()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && g.s.Owed() != 0; time.Sleep(5 * time.Millisecond) {
	}
	stop()
	<-done
	g.s.WaitResolved() // the sweep has carried (or left) the account

	hb, err := sB.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.1)) // B seeds the account
	if err != nil {
		t.Fatal(err)
	}
	hb.Settle(ledger.USD(0.05))
	g.spend(t, keyA, ledger.USD(0.01)) // A's next hold
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.36)); got != want {
		t.Fatalf("Redis has spent %s, want %s (the store's 0.1, B's 0.05, A's offline 0.2 and 0.01, each once)", got, want)
	}
}
