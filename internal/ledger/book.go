package ledger

import (
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// kinds are the kinds of entity an account can belong to, in the order of
// the Book's per-kind index (slot).
var kinds = [...]store.Kind{store.KindKey, store.KindUser, store.KindTeam, store.KindEndUser,
	store.KindGlobal, store.KindKeyModel, store.KindOrganization, store.KindTeamMember}

// slot is kind's index in kinds: a switch, so that finding an account
// hashes its ID alone. A custom-auth key is booked as a key; a kind no
// account has (a budget object) is a programming error.
func slot(kind store.Kind) int {
	switch kind {
	case store.KindKey:
		return 0
	case store.KindUser:
		return 1
	case store.KindTeam:
		return 2
	case store.KindEndUser:
		return 3
	case store.KindGlobal:
		return 4
	case store.KindKeyModel:
		return 5
	case store.KindOrganization:
		return 6
	case store.KindTeamMember:
		return 7
	}
	panic("ledger: no accounts of kind " + string(kind))
}

// Book holds the accounts of every budgeted entity, created on first use
// with the spend the store last recorded. Lookups take one shard's read
// lock (accountMap).
type Book struct {
	accounts [len(kinds)]accountMap // per kind (slot): id -> *Account
	onReset  func(kind store.Kind, id string, next time.Time)
	now      func() time.Time
}

// NewBook returns an empty book. onReset, when not nil, is told when an
// account's budget period rolled over (its spend is now zero and next is
// its new reset time), so that the store and Redis can follow.
func NewBook(onReset func(kind store.Kind, id string, next time.Time)) *Book {
	return &Book{onReset: onReset, now: time.Now}
}

// Spec is what an entity's current record says about its budget.
type Spec struct {
	Spent          float64    // the stored spend, used when the account is created
	Budget         *float64   // nil: unlimited
	Soft           *float64   // soft budget, reported once when crossed
	BudgetDuration *string    // e.g. "1mo": the period after which spend resets
	ResetAt        *time.Time // the next reset
	// Name is the entity's id where it is not the account's: a
	// regenerated key's token hash, whose account keeps the hash the key
	// had before (store.Key.Account). "": the account's id.
	Name string
}

// SpecOf is the Spec of an entity that has spent spent under limits l,
// with the soft budget soft (nil: none; teams and end users have none).
func SpecOf(spent float64, l store.Limits, soft *float64) Spec {
	return Spec{Spent: spent, Budget: l.MaxBudget, Soft: soft, BudgetDuration: l.BudgetDuration, ResetAt: l.BudgetResetAt}
}

// Account returns the account of (kind, id), creating it with the stored
// spend when it is new, and brings its budget, soft budget and reset time in
// line with the entity's record, so an operator's edit applies to the next
// request; spend stays the account's own once it exists. When the reset time
// has passed, the period rolls over here: spend drops to zero, the next reset
// is computed, and onReset is told (exactly once per rollover).
func (b *Book) Account(kind store.Kind, id string, s Spec) *Account {
	want := Unlimited
	if s.Budget != nil {
		want = USD(*s.Budget)
	}
	m := &b.accounts[slot(kind)]
	a, ok := m.load(id)
	if !ok {
		// The account outlives the request: its id must not be a slice of
		// something the request holds (a principal's hash is formatted
		// into the principal, and would keep all of it alive).
		id = strings.Clone(id)
		a = NewAccount(kind, id, USD(s.Spent), want)
		if s.ResetAt != nil {
			a.SetResetAt(*s.ResetAt)
		}
		a = m.loadOrStore(a)
	}
	if a.Budget() != want {
		a.SetBudget(want)
	}
	if s.Name != "" {
		a.setName(s.Name)
	}
	soft := Unlimited
	if s.Soft != nil {
		soft = USD(*s.Soft)
	}
	if Amount(a.soft.Load()) != soft {
		a.SetSoftBudget(soft)
	}
	if s.BudgetDuration == nil || *s.BudgetDuration == "" {
		if a.resetAt.Load() != 0 {
			a.SetResetAt(time.Time{})
		}
		a.noteStored(USD(s.Spent))
		return a
	}
	if s.ResetAt != nil {
		if at := a.resetAt.Load(); at < s.ResetAt.UnixNano() {
			// An operator moved the period, or another replica rolled it
			// over. In the second case the stored spend is the new period's:
			// take it, or this replica would keep refusing on last period's.
			if at != 0 && at <= b.now().UnixNano() {
				a.rollTo(at, s.ResetAt.UnixNano(), USD(s.Spent)) // together (seedAt)
			} else {
				a.SetResetAt(*s.ResetAt)
			}
		}
	}
	b.maybeReset(a, *s.BudgetDuration)
	if s.ResetAt != nil && s.ResetAt.UnixNano() == a.resetAt.Load() {
		a.noteStored(USD(s.Spent)) // the record's spend is this period's
	}
	return a
}

// noteStored records the spend the store reports for the account's current
// period (a reseed of Redis takes it when the local view has less).
func (a *Account) noteStored(s Amount) {
	if a.stored.Load() != int64(s) {
		a.stored.Store(int64(s))
	}
}

func (b *Book) maybeReset(a *Account, duration string) {
	at := a.resetAt.Load()
	now := b.now()
	if at == 0 || now.UnixNano() < at {
		return
	}
	per, err := ParsePeriod(duration)
	if err != nil {
		return
	}
	next := per.NextReset(now)
	// The new period and its spend in one move: a hold reading the new
	// period with last period's spend would seed Redis's new period with it.
	if !a.rollTo(at, next.UnixNano(), 0) {
		return // another request rolled it over
	}
	if b.onReset != nil {
		b.onReset(a.Kind, a.ID, next)
	}
}

// Seed creates the account of (kind, id) with spend already booked, unless
// it exists: for budgets whose record carries no spend (a custom-auth key),
// so that their first request after a start sees what the store has. The
// budget is set by Account on first use.
func (b *Book) Seed(kind store.Kind, id string, spent Amount) {
	b.accounts[slot(kind)].loadOrStore(NewAccount(kind, id, spent, Unlimited))
}

// Lookup returns an existing account.
func (b *Book) Lookup(kind store.Kind, id string) (*Account, bool) {
	return b.accounts[slot(kind)].load(id)
}

// Forget drops the accounts of kind and ids, the entities deleted: the next
// Account of such an id is a new one, from its Spec's spend. For a key (id
// its budget account, store.Key.Account) the accounts of its model budgets
// (id + "/" + model) go too, found in one pass however many keys go. A
// hold in flight keeps the account it was taken on, and settles there: on
// nothing any later account counts.
func (b *Book) Forget(kind store.Kind, ids ...string) {
	for _, id := range ids {
		b.accounts[slot(kind)].remove(id)
	}
	if kind != store.KindKey || len(ids) == 0 {
		return
	}
	gone := make(map[string]bool, len(ids))
	for _, id := range ids {
		gone[id] = true
	}
	var models []string
	b.Range(store.KindKeyModel, func(a *Account) bool {
		// hash + "/" + model: the key's part ends at the first slash, as
		// shownID and the log read it (a model's name may hold more)
		if acct, _, ok := strings.Cut(a.ID, "/"); ok && gone[acct] {
			models = append(models, a.ID)
		}
		return true
	})
	for _, m := range models {
		b.accounts[slot(store.KindKeyModel)].remove(m)
	}
}

// Range calls fn for every account of kind, until fn returns false.
func (b *Book) Range(kind store.Kind, fn func(*Account) bool) {
	b.accounts[slot(kind)].rangeAll(fn)
}
