package ledger_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/rscript"
)

// TestSharedHolds: two replicas' books share one budget on Redis; a hold a
// dead replica left expires; a period reset and an operator edit reseed it.
func TestSharedHolds(t *testing.T) {
	m := miniredis.RunT(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	a := ledger.NewShared(runner(t, c), "t", slog.New(slog.DiscardHandler))
	b := ledger.NewShared(runner(t, c), "t", slog.New(slog.DiscardHandler))
	a.LeaseTTL = time.Minute
	keyA := ledger.NewAccount(ledger.KindKey, "k", 0, ledger.USD(1))
	keyB := ledger.NewAccount(ledger.KindKey, "k", 0, ledger.USD(1)) // replica B's view
	team := ledger.NewAccount(ledger.KindTeam, "t", 0, ledger.Unlimited)

	h1, err := a.Reserve(ctx, []*ledger.Account{team, keyA}, ledger.USD(0.6))
	if err != nil {
		t.Fatal(err)
	}
	var ex *ledger.ExceededError
	if _, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.6)); !errors.As(err, &ex) || ex.Reserved != ledger.USD(0.6) {
		t.Fatalf("replica B ignored A's hold: %v", err)
	}
	h1.Settle(ledger.USD(0.5))
	if keyA.Spent() != ledger.USD(0.5) || team.Spent() != ledger.USD(0.5) {
		t.Fatalf("local mirror: key %v team %v", keyA.Spent(), team.Spent())
	}
	if _, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.6)); err == nil {
		t.Fatal("0.5 spent + 0.6 fitted a budget of 1")
	}
	h2, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.4))
	if err != nil {
		t.Fatal(err)
	}
	_ = h2 // replica B dies holding 0.4
	if _, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.2)); err == nil {
		t.Fatal("the dead replica's hold was not counted")
	}
	m.SetTime(time.Now().Add(16 * time.Minute)) // B's lease (15 min) expires
	h3, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.2))
	if err != nil {
		t.Fatalf("an expired hold still blocks: %v", err)
	}
	h3.Release()

	if err := a.ResetPeriod(ctx, ledger.KindKey, "k", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.9)); err != nil {
		t.Fatalf("after the reset: %v", err)
	}
}

// TestSharedCatchesUpAndTakesEdits: spend booked while Redis was away
// reaches Redis with the next hold, and an operator's spend edit applies on
// every replica.
func TestSharedCatchesUpAndTakesEdits(t *testing.T) {
	m := miniredis.RunT(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	degraded := false
	a := ledger.NewShared(runner(t, c), "t", slog.New(slog.DiscardHandler))
	a.Degraded = func() bool { return degraded }
	b := ledger.NewShared(runner(t, c), "t", slog.New(slog.DiscardHandler))
	keyA := ledger.NewAccount(ledger.KindKey, "k", 0, ledger.USD(1))
	keyB := ledger.NewAccount(ledger.KindKey, "k", 0, ledger.USD(1))

	h, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.5))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.5))
	degraded = true
	h, err = a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.4))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.4)) // booked in process only
	degraded = false
	if h, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.05)); err != nil {
		t.Fatalf("0.9 spent, 0.05 more: %v", err)
	} else {
		h.Release()
	}
	// Redis now has 0.9: replica B must refuse 0.4.
	if _, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.4)); err == nil {
		t.Fatal("the spend booked while Redis was away never reached it")
	}
	// An operator resets the spend on A; B's next hold sees it.
	if err := a.SetSpent(ctx, ledger.KindKey, "k", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.9)); err != nil {
		t.Fatalf("after the edit: %v", err)
	}
}

// runner runs scripts on c as the server does.
func runner(tb testing.TB, c *redis.Client) *rscript.Runner {
	r, err := rscript.NewRunner(c)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}
