package ledger_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeEditOfAnAccountRedisLacksSurvivesTheNextHold: an operator sets
// the spend of an account with a reset period (budget_duration) to 0 while
// Redis does not have the account (idle a week, emptied); the edit makes
// the hash. Replica B, whose view still has $0.60, holds next. Before
// branch ledgergaps the edit's hash had no period, B's hold took it for a
// hash of an older period and reseeded it from its view: the edit was
// undone ($0.60 back on Redis, no reseed mark), and a $0.50 request on
// the $1 budget the operator had cleared was refused. Both with the
// period told (the admin API's replica knows the account) and without
// (it does not: the hash is taken as the holding replica's period).
func TestProbeEditOfAnAccountRedisLacksSurvivesTheNextHold(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	_, b, a := twoLiveReplicas(t, c, prefix)
	budget, viewB := ledger.USD(1), ledger.USD(0.6)
	next := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		id   string
		told time.Time
	}{{"told", next}, {"untold", time.Time{}}} {
		t.Run(tc.id, func(t *testing.T) {
			keyA := ledger.NewAccount(store.KindKey, tc.id, viewB, budget)
			keyB := ledger.NewAccount(store.KindKey, tc.id, viewB, budget)
			keyA.SetResetAt(next)
			keyB.SetResetAt(next)
			if err := a.SetSpent(ctx, store.KindKey, tc.id, 0, tc.told); err != nil { // Redis lacks the account
				t.Fatal(err)
			}
			keyA.SetSpent(0)
			h, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.01))
			if err != nil {
				t.Fatal(err)
			}
			h.Release()
			if got := budField(c, prefix, tc.id, "spent"); got != "0" {
				t.Fatalf("after the edit to 0 B's hold left Redis's spend at %s (B's view: %d)", got, viewB)
			}
			if got := budField(c, prefix, tc.id, "period"); got != strconv.FormatInt(next.UnixNano(), 10) {
				t.Errorf("Redis's period is %q, want %d", got, next.UnixNano())
			}
			h, err = a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.5))
			if err != nil {
				t.Fatalf("a $0.50 request on the $1 budget edited to 0 spent: %v", err)
			}
			h.Release()
		})
	}
}

// TestProbeSettleOfTheOldPeriodReadAfterTheRolloverIsDropped: $0.60 is
// settled in the old budget period, then a $0.10 settle runs on Redis in
// the old period and its reply is read after this replica rolled its view
// over to the new period. Before branch ledgergaps the reply set the new
// period's view to the old period's $0.70, and the next hold, finding
// Redis still in the old period (its reset not sent), reseeded Redis's new
// period from that view: spend the new period never had, and a $0.50
// request on the $1 budget was refused. The old period's figure is
// dropped; the settle's own $0.10 stays in the view (it may have been
// spent after the period's end: over, never under; ledgergapsrev).
func TestProbeSettleOfTheOldPeriodReadAfterTheRolloverIsDropped(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	_, s, _ := twoLiveReplicas(t, c, prefix)
	budget := ledger.USD(1)
	ended, next := time.Now().Add(-time.Second), time.Now().Add(time.Hour)
	key := ledger.NewAccount(store.KindKey, "k", 0, budget)
	key.SetResetAt(ended)
	h, err := s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.6)) // Redis has the old period
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.6))
	h, err = s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.1))
	if err != nil {
		t.Fatal(err)
	}
	settling := ledger.SendSettle(h, ledger.USD(0.1), true) // runs in the old period
	if !key.RollTo(next, 0) {                               // the view rolls over before the reply is read
		t.Fatal("no rollover")
	}
	settling.Wait()
	if got, want := key.Spent(), ledger.USD(0.1); got != want {
		t.Errorf("the new period's view has spent %v after the old period's settle reply, want %v (its own spend)", got.Dollars(), want.Dollars())
	}
	h, err = s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.5)) // reseeds Redis's new period
	if err != nil {
		t.Fatalf("a $0.50 request in the new period of a $1 budget: %v", err)
	}
	h.Release()
	if got, want := budField(c, prefix, "k", "spent"), strconv.FormatInt(int64(ledger.USD(0.1)), 10); got != want {
		t.Fatalf("Redis's new period was seeded with spent %s, want %s", got, want)
	}
}
