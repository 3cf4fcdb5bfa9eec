package ledger

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

func TestBookResetsOncePerPeriod(t *testing.T) {
	now := time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)
	var resets atomic.Int64
	var next time.Time
	b := NewBook(func(k store.Kind, id string, n time.Time) { resets.Add(1); next = n })
	b.now = func() time.Time { return now }
	budget, dur := 1.0, "1mo"
	resetAt := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	spec := Spec{Spent: 0.9, Budget: &budget, BudgetDuration: &dur, ResetAt: &resetAt}

	a := b.Account(store.KindKey, "k", spec)
	if _, err := Reserve([]*Account{a}, USD(0.2)); err == nil {
		t.Fatal("over budget before the reset")
	}
	now = resetAt.Add(time.Second) // the month rolls over
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() { defer wg.Done(); b.Account(store.KindKey, "k", spec) }()
	}
	wg.Wait()
	if resets.Load() != 1 || a.Spent() != 0 || !next.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) || !a.ResetAt().Equal(next) {
		t.Fatalf("resets %d spent %v next %v resetAt %v", resets.Load(), a.Spent(), next, a.ResetAt())
	}
	if _, err := Reserve([]*Account{a}, USD(0.2)); err != nil {
		t.Fatalf("after the reset: %v", err)
	}
}

func TestBookFollowsRecordEdits(t *testing.T) {
	b := NewBook(nil)
	one, two, soft := 1.0, 2.0, 0.5
	a := b.Account(store.KindTeam, "t", Spec{Spent: 0.9, Budget: &one})
	if a.Budget() != USD(1) || a.Spent() != USD(0.9) {
		t.Fatal("account not created from the record")
	}
	b.Account(store.KindTeam, "t", Spec{Spent: 0, Budget: &two, Soft: &soft})
	if a.Budget() != USD(2) || a.Spent() != USD(0.9) {
		t.Fatalf("budget edit not applied or spend overwritten: %v %v", a.Budget(), a.Spent())
	}
	b.Account(store.KindTeam, "t", Spec{})
	if a.Budget() != Unlimited {
		t.Fatal("removing the budget did not make the account unlimited")
	}
}

// TestBookTakesAnotherReplicasReset: when another replica rolled the period
// over (the record's reset time moved past ours, which has passed), this
// replica takes the record's new-period spend instead of refusing on the old.
func TestBookTakesAnotherReplicasReset(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 5, 0, time.UTC)
	b := NewBook(func(store.Kind, string, time.Time) { t.Error("this replica reset the period again") })
	b.now = func() time.Time { return now.Add(-time.Minute) }
	budget, dur := 1.0, "1mo"
	oldReset := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	a := b.Account(store.KindKey, "k", Spec{Spent: 1.0, Budget: &budget, BudgetDuration: &dur, ResetAt: &oldReset})
	b.now = func() time.Time { return now }
	newReset := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	b.Account(store.KindKey, "k", Spec{Spent: 0.1, Budget: &budget, BudgetDuration: &dur, ResetAt: &newReset})
	if a.Spent() != USD(0.1) || !a.ResetAt().Equal(newReset) {
		t.Fatalf("spent %v reset %v; want the record's 0.1 and %v", a.Spent().Dollars(), a.ResetAt(), newReset)
	}
}

// BenchmarkBookAccount is the request path's lookup of its accounts: one
// of each kind a request can be charged to, every one already known.
func BenchmarkBookAccount(b *testing.B) {
	book := NewBook(nil)
	budget := 10.0
	spec := Spec{Spent: 1, Budget: &budget}
	kinds := []store.Kind{store.KindGlobal, store.KindOrganization, store.KindTeam, store.KindUser, store.KindTeamMember, store.KindEndUser, store.KindKey, store.KindKeyModel}
	for _, k := range kinds {
		book.Account(k, "id", spec)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, k := range kinds {
			book.Account(k, "id", spec)
		}
	}
}
