package auth

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestLoadTakesOverResyncCopiesWithBudget: as
// TestLoadTakesOverResyncCopies, for keys that name a budget object: the
// row as stored (rawKeys) is the load's too, not the resync's copy with
// maps of its own (≈ 420 B a key more, before).
func TestLoadTakesOverResyncCopiesWithBudget(t *testing.T) {
	const n = 20000
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Microsecond)
	f := 10.0
	budgets := &store.Snapshot{Budgets: []*store.Budget{{BudgetID: "b", Limits: store.Limits{MaxBudget: &f}}}}
	keys := func() []*store.Key {
		ks := rereadKeys(n, at)
		for _, k := range ks {
			k.BudgetID = "b"
		}
		return ks
	}
	loadAfterResyncCopies(t, budgets, n, keys)
}
