package auth

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestDeletedKeyNotPutBackByARowReadBeforeIt: a key's row read (or
// written) before the key's deletion here and published after it (the miss
// path, an edit racing /key/delete) must not bring the key back, nor clear
// the deletion's mark so that a later stale copy (a resync's) could; the
// key made again with the same secret after the deletion is taken, and a
// stale row then leaves it as it is.
func TestDeletedKeyNotPutBackByARowReadBeforeIt(t *testing.T) {
	for _, raw := range []string{"sk-missdel-digest", "named-missdel"} {
		h := HashHex(raw)
		if raw == "named-missdel" {
			h = raw // a hash that is not a digest: the side map
		}
		t.Run(raw, func(t *testing.T) {
			s := NewSnapshot(nil)
			readAt := time.Now().UTC()
			row := &store.Key{TokenHash: h, KeyName: "sk-...", CreatedAt: readAt, UpdatedAt: readAt}
			for !time.Now().After(readAt) { // a clock coarser than the calls
			}
			s.DeleteKey(h)
			s.PutKey(row) // the miss path's row, read before the deletion
			if _, ok := s.Key(h); ok {
				t.Fatal("a row read before the key's deletion put the key back")
			}
			s.Apply(&store.Snapshot{Keys: []*store.Key{row}}, nil, time.Time{})
			if _, ok := s.Key(h); ok {
				t.Fatal("after a stale put was refused, a resync's copy of the same row put the key back")
			}

			again := time.Now().UTC()
			for !again.After(readAt) || !time.Now().After(again) {
				again = time.Now().UTC()
			}
			made := &store.Key{TokenHash: h, KeyName: "sk-...", KeyAlias: ptr("again"), CreatedAt: again, UpdatedAt: again}
			s.PutKey(made)
			k, ok := s.Key(h)
			if !ok || k.KeyAlias == nil || *k.KeyAlias != "again" {
				t.Fatalf("the key made again after its deletion: %v %+v", ok, k)
			}
			s.PutKey(row) // a stale row arriving after the key was made again
			if k, ok := s.Key(h); !ok || k.KeyAlias == nil || *k.KeyAlias != "again" {
				t.Fatalf("a row read before the deletion replaced the key made again: %v %+v", ok, k)
			}
		})
	}
}

// TestMissPutCountsAsOfItsRead: a key the miss path published outranks a
// resync that began reading before the miss path read its row, not one
// that began after (whose deletion, read from another replica, wins).
func TestMissPutCountsAsOfItsRead(t *testing.T) {
	h := HashHex("sk-missdel-read-mark")
	before := time.Now()
	for !time.Now().After(before) {
	}
	read := time.Now()
	row := &store.Key{TokenHash: h, KeyName: "sk-...", CreatedAt: read.Add(-time.Second), UpdatedAt: read.Add(-time.Second)}
	for !time.Now().After(read) {
	}
	after := time.Now()
	deleted := []store.Deletion{{Kind: store.KindKey, ID: h, At: read}}

	s := NewSnapshot(nil)
	s.PutKeyRead(row, read)
	s.Apply(nil, deleted, before) // read the store before the miss path did
	if _, ok := s.Key(h); !ok {
		t.Fatal("a resync that began before the miss path's read removed the key it published")
	}
	s.Apply(nil, deleted, after)
	if _, ok := s.Key(h); ok {
		t.Fatal("a deletion read by a resync that began after the miss path's read was skipped")
	}
}
