package auth

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestDeletedKeyStaysDeleted: a resync that read a key's row before the key
// was deleted on this replica (or before its tombstone) does not put it
// back; a key written again after the deletion does come back.
func TestDeletedKeyStaysDeleted(t *testing.T) {
	h := HashHex("sk-deleted-key")
	written := time.Now().Add(-time.Second)
	snap := NewSnapshot(&store.Snapshot{Keys: []*store.Key{{TokenHash: h, UpdatedAt: written}}})
	stale := &store.Snapshot{Keys: []*store.Key{{TokenHash: h, UpdatedAt: written}}}
	tomb := []store.Deletion{{Kind: store.KindKey, ID: h, At: written.Add(time.Millisecond)}}
	again := &store.Snapshot{Keys: []*store.Key{{TokenHash: h, UpdatedAt: time.Now().Add(time.Second)}}}
	// The cases run in order on one snapshot.
	tests := []struct {
		name      string
		deleteNow bool // the management API deleted the key on this replica
		changed   *store.Snapshot
		deleted   []store.Deletion
		present   bool
	}{
		{"deleted here, stale row read", true, stale, nil, false},
		{"tombstone and stale row in one resync", false, stale, tomb, false},
		{"written again after the deletion", false, again, tomb, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.deleteNow {
				snap.DeleteKey(h)
			}
			snap.Apply(tt.changed, tt.deleted)
			sum := Hash("sk-deleted-key")
			_, byHash := snap.Key(h)
			_, bySum := snap.KeyBySum(&sum)
			if byHash != tt.present || bySum != tt.present {
				t.Fatalf("key present: %v/%v, want %v", byHash, bySum, tt.present)
			}
		})
	}
}
