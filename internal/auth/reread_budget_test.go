package auth

import (
	"runtime"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/memtest"
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
	build := func(resyncFirst bool) (*Snapshot, uint64) {
		before := memtest.LiveHeap()
		s := NewSnapshot(budgets)
		s.StartLoading()
		if resyncFirst {
			s.Apply(&store.Snapshot{Keys: keys()[n/2:]}, nil, time.Now())
		}
		put := s.KeyLoader()
		ks := keys()
		for i := 0; i < n; i += 1000 {
			put(ks[i : i+1000])
		}
		put, ks = nil, nil
		s.DoneLoading()
		return s, memtest.LiveHeap() - before
	}
	alone, aloneBytes := build(false)
	runtime.KeepAlive(alone)
	alone = nil
	raced, racedBytes := build(true)
	runtime.KeepAlive(raced)
	extra := (float64(racedBytes) - float64(aloneBytes)) / (n / 2)
	t.Logf("loaded alone %d B, with a resync's copies of half the keys first %d B: %.1f B more a copied key", aloneBytes, racedBytes, extra)
	if extra > 16 {
		t.Errorf("the keys a resync read before the load held %.1f B more each than loaded alone, want ≈ 0", extra)
	}
}
