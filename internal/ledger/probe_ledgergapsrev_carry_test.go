package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeCarryOfflineOntoAnUntoldEditsHash: an edit whose replica did not
// know the account made Redis's hash with no period; replica A then books
// $0.50 without a hold and stops (CarryOffline). The carry took the hash
// for an older period's ("absent": left for a hold to seed) and carried
// nothing, while the next hold keeps the hash as this period's: A's $0.50
// never reached Redis (as on main, where the next hold reseeded it from a
// view without it).
func TestProbeCarryOfflineOntoAnUntoldEditsHash(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	_, s, other := twoLiveReplicas(t, c, prefix)
	budget, dur := 1.0, "1d"
	next := time.Now().Add(time.Hour).Truncate(time.Second)
	book := ledger.NewBook(nil)
	keyA := book.Account(store.KindKey, "k", ledger.Spec{Budget: &budget, BudgetDuration: &dur, ResetAt: &next})
	if err := other.SetSpent(ctx, store.KindKey, "k", 0, time.Time{}); err != nil { // Redis lacks the account
		t.Fatal(err)
	}
	ledger.Spend([]*ledger.Account{keyA}, ledger.USD(0.5))
	failed := s.CarryOffline(ctx, book)
	keyB := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1))
	keyB.SetResetAt(next)
	h, err := other.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.01))
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if got, want := budField(c, prefix, "k", "spent"), usdString(ledger.USD(0.5)); got != want {
		t.Fatalf("Redis has spent %s after A's $0.50 and its stop (failed %d): A's spend never carried", got, failed)
	}
}
