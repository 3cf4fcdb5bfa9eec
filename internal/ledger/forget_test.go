package ledger_test

import (
	"testing"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestForgetDropsAKeysAccounts: a deleted key's account, and its model
// budgets', leave the book: the next Account of that id starts from its
// Spec's spend, not the deleted key's. A hold taken before settles on the
// dropped account and moves nothing the new one counts; other keys' model
// budgets stay.
func TestForgetDropsAKeysAccounts(t *testing.T) {
	b := ledger.NewBook(nil)
	budget := 1.0
	old := b.Account(store.KindKey, "h", ledger.Spec{Spent: 0.9, Budget: &budget})
	b.Account(store.KindKeyModel, "h/gpt-4", ledger.Spec{Spent: 0.5, Budget: &budget})
	other := b.Account(store.KindKeyModel, "hh/gpt-4", ledger.Spec{Spent: 0.5, Budget: &budget})
	held, err := ledger.Reserve([]*ledger.Account{old}, ledger.USD(0.05))
	if err != nil {
		t.Fatal(err)
	}
	b.Forget(store.KindKey, "h")
	if _, ok := b.Lookup(store.KindKey, "h"); ok {
		t.Fatal("the key's account is still in the book")
	}
	if _, ok := b.Lookup(store.KindKeyModel, "h/gpt-4"); ok {
		t.Fatal("the key's model budget is still in the book")
	}
	if a, ok := b.Lookup(store.KindKeyModel, "hh/gpt-4"); !ok || a != other {
		t.Fatal("another key's model budget went too")
	}
	fresh := b.Account(store.KindKey, "h", ledger.Spec{Budget: &budget})
	if fresh == old || fresh.Spent() != 0 || fresh.Reserved() != 0 {
		t.Fatalf("the account made again has spent %v, reserved %v (the old one's: %v)", fresh.Spent(), fresh.Reserved(), fresh == old)
	}
	held.Settle(ledger.USD(0.05))
	if fresh.Spent() != 0 || fresh.Reserved() != 0 {
		t.Fatalf("the old hold's settle moved the new account: spent %v, reserved %v", fresh.Spent(), fresh.Reserved())
	}
}
