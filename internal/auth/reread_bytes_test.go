package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/memtest"
	"github.com/tollgate/tollgate/internal/store"
)

// rereadKeys are n keys as the store reads them (each call a fresh copy,
// maps and slices of its own): a user of 100, a model list, metadata, a
// budget, half with an alias.
func rereadKeys(n int, at time.Time) []*store.Key {
	ks := make([]*store.Key, n)
	for i := range ks {
		sum := sha256.Sum256([]byte(fmt.Sprintf("sk-reread-%08d", i)))
		budget := 1e6
		k := &store.Key{TokenHash: hex.EncodeToString(sum[:]), KeyName: fmt.Sprintf("sk-...%04d", i%10000),
			UserID: fmt.Sprintf("user-%d", i%100), Models: []string{"gpt-4"},
			Metadata: map[string]any{"app": fmt.Sprintf("app-%d", i%10)},
			Spend:    float64(i%7) / 10, CreatedAt: at, UpdatedAt: at}
		k.MaxBudget = &budget
		if i%2 == 0 {
			alias := fmt.Sprintf("key-%d", i)
			k.KeyAlias = &alias
		}
		ks[i] = k
	}
	return ks
}

// TestRereadKeysKeepTheirRecords: a resync reads again rows it (or the load
// at start) already has: the 5 s overlap of the time cursor, keys written
// just before a start. A key read again unchanged keeps its record, so the
// snapshot's memory does not grow with the rows re-read (before, each such
// key was packed anew outside the load's compaction: ≈ 100-350 B a key,
// 25,000 keys re-read after a bulk import followed by a start).
func TestRereadKeysKeepTheirRecords(t *testing.T) {
	const n = 20000
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Microsecond)
	s := NewSnapshot(nil)
	s.StartLoading()
	put := s.KeyLoader()
	ks := rereadKeys(n, at)
	for i := 0; i < n; i += 1000 {
		put(ks[i : i+1000])
	}
	put = nil
	s.DoneLoading()
	ks = nil
	// Every fourth key read again, three times (the others keep the load's
	// slabs alive: a record replaced there is not freed).
	before := memtest.LiveHeap()
	for look := 0; look < 3; look++ {
		var again []*store.Key
		for i, k := range rereadKeys(n, at) {
			if i%4 == 0 {
				again = append(again, k)
			}
		}
		s.Apply(&store.Snapshot{Keys: again}, nil, time.Now())
	}
	after := memtest.LiveHeap()
	perKey := (float64(after) - float64(before)) / (n / 4)
	t.Logf("live heap per key read again unchanged (3 looks): %.1f B", perKey)
	if perKey > 8 {
		t.Errorf("the snapshot grew by %.1f B for each key read again unchanged, want ≈ 0", perKey)
	}
	// A key read again changed still takes the new row.
	changed := rereadKeys(1, at.Add(time.Second))
	changed[0].Spend = 42
	changed[0].Models = []string{"gpt-4o"}
	s.Apply(&store.Snapshot{Keys: changed}, nil, time.Now())
	k, ok := s.Key(changed[0].TokenHash)
	if !ok || k.Spend != 42 || len(k.Models) != 1 || k.Models[0] != "gpt-4o" || !k.UpdatedAt.Equal(at.Add(time.Second)) {
		t.Errorf("a key read again changed: got %+v, want spend 42, models [gpt-4o]", k)
	}
	// And a key whose only change is its spend takes it.
	sp := rereadKeys(2, at)[1]
	sp.Spend = 7.5
	s.Apply(&store.Snapshot{Keys: []*store.Key{sp}}, nil, time.Now())
	if k, _ := s.Key(sp.TokenHash); k == nil || k.Spend != 7.5 {
		t.Errorf("a key read again with a new spend: got %+v, want spend 7.5", k)
	}
}

// TestLoadTakesOverResyncCopies: the resync runs while the keys are loaded
// at start, so a key written in the 5 s before the start can be read by a
// resync before the load reaches it. The load's copy of the same row then
// replaces the resync's, whose maps and shared part were its own: 25,000
// such keys (a bulk import, then a start) held ≈ 17 MB more, for the
// process's life, than the same keys loaded alone.
func TestLoadTakesOverResyncCopies(t *testing.T) {
	const n = 20000
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Microsecond)
	raced := loadAfterResyncCopies(t, nil, n, func() []*store.Key { return rereadKeys(n, at) })
	for _, i := range []int{0, n/2 + 1, n - 1} {
		want := rereadKeys(n, at)[i]
		k, ok := raced.Key(want.TokenHash)
		if !ok || k.UserID != want.UserID || k.Spend != want.Spend || !k.UpdatedAt.Equal(at) || k.Metadata["app"] != want.Metadata["app"] {
			t.Errorf("key %d after the load: %+v, want %+v", i, k, want)
		}
	}
	// A resync's copy newer than the load's row (its spend moved on) stays.
	s := NewSnapshot(nil)
	s.StartLoading()
	newer := rereadKeys(1, at)[0]
	newer.Spend = 9
	s.Apply(&store.Snapshot{Keys: []*store.Key{newer}}, nil, time.Now())
	s.KeyLoader()(rereadKeys(1, at))
	s.DoneLoading()
	if k, _ := s.Key(newer.TokenHash); k == nil || k.Spend != 9 {
		t.Errorf("a resync's copy with another spend was replaced by the load's: %+v", k)
	}
}

// loadAfterResyncCopies builds two snapshots over base of the n keys
// keys() reads: one loaded alone, one where a resync's copies of the second
// half came first; it fails t when a copied key holds more than 16 B more
// than loaded alone, and returns the second.
func loadAfterResyncCopies(t *testing.T, base *store.Snapshot, n int, keys func() []*store.Key) *Snapshot {
	t.Helper()
	build := func(resyncFirst bool) (*Snapshot, uint64) {
		before := memtest.LiveHeap()
		s := NewSnapshot(base)
		s.StartLoading()
		if resyncFirst {
			s.Apply(&store.Snapshot{Keys: keys()[n/2:]}, nil, time.Now())
		}
		put := s.KeyLoader()
		ks := keys()
		for i := 0; i < n; i += 1000 {
			put(ks[i:min(i+1000, n)])
		}
		put, ks = nil, nil
		s.DoneLoading()
		return s, memtest.LiveHeap() - before
	}
	alone, aloneBytes := build(false)
	runtime.KeepAlive(alone)
	alone = nil
	raced, racedBytes := build(true)
	extra := (float64(racedBytes) - float64(aloneBytes)) / float64(n/2)
	t.Logf("loaded alone %d B, with a resync's copies of half the keys first %d B: %.1f B more a copied key", aloneBytes, racedBytes, extra)
	if extra > 16 {
		t.Errorf("the keys a resync read before the load held %.1f B more each than loaded alone, want ≈ 0", extra)
	}
	return raced
}
