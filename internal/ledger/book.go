package ledger

import "sync"

// Book holds the accounts of every budgeted entity, created on first use
// with the spend the store last recorded. Lookups are lock-free (sync.Map).
type Book struct {
	accounts [KindKeyModel + 1]sync.Map // per Kind: id -> *Account
}

// NewBook returns an empty book.
func NewBook() *Book { return &Book{} }

// Account returns the account of (kind, id), creating it with spent when it
// is new, and sets its budget to budget (nil: unlimited). The budget comes
// from the entity's current record, so an operator's edit applies to the
// next request; spend stays the account's own once it exists.
func (b *Book) Account(kind Kind, id string, spent float64, budget *float64) *Account {
	want := Unlimited
	if budget != nil {
		want = USD(*budget)
	}
	m := &b.accounts[kind]
	v, ok := m.Load(id)
	if !ok {
		v, _ = m.LoadOrStore(id, NewAccount(kind, id, USD(spent), want))
	}
	a := v.(*Account)
	if a.Budget() != want {
		a.SetBudget(want)
	}
	return a
}

// Lookup returns an existing account.
func (b *Book) Lookup(kind Kind, id string) (*Account, bool) {
	v, ok := b.accounts[kind].Load(id)
	if !ok {
		return nil, false
	}
	return v.(*Account), true
}
