package ledger

import (
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

// TestSpendBooksWithoutAHold: unheld spend moves spent and used alike,
// refuses the next hold once past the budget, and counts as unsynced only
// where there is a budget to share.
func TestSpendBooksWithoutAHold(t *testing.T) {
	budgeted := NewAccount(store.KindKey, "k", 0, USD(1))
	free := NewAccount(store.KindGlobal, "global", 0, Unlimited)
	Spend([]*Account{free, budgeted}, USD(1.5))
	if budgeted.Spent() != USD(1.5) || free.Spent() != USD(1.5) || budgeted.Reserved() != 0 {
		t.Fatalf("spent %v %v reserved %v", budgeted.Spent(), free.Spent(), budgeted.Reserved())
	}
	if budgeted.remote().unsynced.Load() != int64(USD(1.5)) || free.remote().unsynced.Load() != 0 {
		t.Fatalf("unsynced %d %d", budgeted.remote().unsynced.Load(), free.remote().unsynced.Load())
	}
	if _, err := Reserve([]*Account{free, budgeted}, USD(0.01)); err == nil {
		t.Fatal("a hold on an account past its budget was admitted")
	}
}
