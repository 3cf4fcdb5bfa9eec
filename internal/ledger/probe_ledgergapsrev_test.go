package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeSettleReadAfterThePeriodEndMovedIsNotLost: the budget period's
// end moves without a rollover (Book.Account: an operator moved
// budget_reset_at, or gave the key a budget_duration: SetResetAt, spend
// kept) while a $0.60 settle is on its way. The settle runs on Redis in
// the period Redis has (the old end); its reply is read after the view took
// the new end. On ledgergaps the reply was dropped as "an older period's"
// and nothing else books the settle in the view, so the next hold (of the
// new end: fresh on Redis) reseeded Redis from a view without it: $0.60
// never reset was gone, and a $0.50 request on the $1 budget was granted
// (strict budget passed by the settle).
func TestProbeSettleReadAfterThePeriodEndMovedIsNotLost(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	_, s, _ := twoLiveReplicas(t, c, prefix)
	budget := ledger.USD(1)
	for _, tc := range []struct {
		id       string
		from, to time.Time
	}{
		{"moved", time.Now().Add(time.Hour), time.Now().Add(2 * time.Hour)},
		{"durationadded", time.Time{}, time.Now().Add(time.Hour)},
	} {
		t.Run(tc.id, func(t *testing.T) {
			key := ledger.NewAccount(store.KindKey, tc.id, 0, budget)
			key.SetResetAt(tc.from)
			h, err := s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.6))
			if err != nil {
				t.Fatal(err)
			}
			settling := ledger.SendSettle(h, ledger.USD(0.6), true)
			key.SetResetAt(tc.to) // the period's end moved: no reset, spend kept
			settling.Wait()
			if got := key.Spent(); got < ledger.USD(0.6) {
				t.Errorf("the view has %v after a $0.60 settle and no reset", got.Dollars())
			}
			h, err = s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.5))
			if err == nil {
				h.Release()
				t.Fatalf("a $0.50 request granted on a $1 budget that spent $0.60 (Redis spent %s)", budField(c, prefix, tc.id, "spent"))
			}
		})
	}
}

// TestProbeSettleMirrorsWithAResetTimeNotWholeSeconds: a reset time with
// microseconds (an operator's budget_reset_at, a LiteLLM database's,
// PostgreSQL's precision) is past 2^53 ns: the period a settle's reply
// returns went through a Lua number, rounded to 256 ns, here down. On
// ledgergaps the reply then read as "of an older period" and was never
// mirrored: replica S's view kept none of the $0.60 another replica spent
// (nor, before ledgergapsrev, its own $0.01), so its headers, soft budget
// and fallback share ran on $0 (main: $0.61).
func TestProbeSettleMirrorsWithAResetTimeNotWholeSeconds(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	_, s, other := twoLiveReplicas(t, c, prefix)
	budget := ledger.USD(1)
	// Whole seconds are a multiple of 512 ns; 6 µs more rounds down to
	// the 256 ns a double has there.
	reset := time.Now().Add(time.Hour).Truncate(time.Second).Add(6 * time.Microsecond)
	spend := func(x *ledger.Shared, key *ledger.Account, amt ledger.Amount) {
		t.Helper()
		h, err := x.Reserve(ctx, []*ledger.Account{key}, amt)
		if err != nil {
			t.Fatal(err)
		}
		h.Settle(amt)
	}
	keyO := ledger.NewAccount(store.KindKey, "k", 0, budget)
	keyO.SetResetAt(reset)
	keyS := ledger.NewAccount(store.KindKey, "k", 0, budget)
	keyS.SetResetAt(reset)
	spend(other, keyO, ledger.USD(0.6))
	spend(s, keyS, ledger.USD(0.01))
	if got, want := keyS.Spent(), ledger.USD(0.61); got != want {
		t.Fatalf("S's view after its settle: %v, want Redis's %v (Redis period %s, view's %d)", got.Dollars(), want.Dollars(), budField(c, prefix, "k", "period"), reset.UnixNano())
	}
}

// TestProbeFlushMirrorsWithAResetTimeNotWholeSeconds: the allotment
// flush's answer, as TestProbeSettleMirrorsWithAResetTimeNotWholeSeconds:
// with a reset time of microseconds rounded down through Lua, ledgergaps
// never mirrored it, and replica A's view kept only its own bookings, not
// the $0.30 replica B spent.
func TestProbeFlushMirrorsWithAResetTimeNotWholeSeconds(t *testing.T) {
	_, prefix := realRedis(t)
	ctx := context.Background()
	reset := time.Now().Add(time.Hour).Truncate(time.Second).Add(6 * time.Microsecond)
	a := newAllotReplica(t, prefix, ledger.USD(10), time.Minute)
	b := newAllotReplica(t, prefix, ledger.USD(10), time.Minute)
	a.key.SetResetAt(reset)
	b.key.SetResetAt(reset)
	h, err := b.s.Reserve(ctx, []*ledger.Account{b.key}, ledger.USD(0.3))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.3))
	cost := ledger.USD(0.01)
	warm(t, a, cost)
	spendLocal(t, a, 2, cost)
	if err := a.x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got, want := a.key.Spent(), ledger.USD(0.3)+2*cost; got != want {
		t.Fatalf("A's view after its flush: %v, want Redis's %v", got.Dollars(), want.Dollars())
	}
	if err := a.x.Flush(ctx, true); err != nil {
		t.Fatal(err)
	}
}
