package auth

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeDeletedEntityStaysDeadAndComesBackMadeAgain: users and teams
// follow one tombstone rule, by incarnation (created_at). Before it the
// team rule (the stamp the snapshot held at deletion) let an edit that
// wrote the store before the deletion but published after it (stamped
// later than the held copy) bring the team back; the user rule (the
// deletion's time) refused a user made again within the minute on a
// replica whose clock is behind; and a user deleted by a resync (another
// replica's deletion) left no tombstone at all.
func TestProbeDeletedEntityStaysDeadAndComesBackMadeAgain(t *testing.T) {
	now := time.Now().UTC()
	born := now.Add(-time.Hour)
	type kind struct {
		name string
		put  func(s *Snapshot, created, updated time.Time)
		del  func(s *Snapshot, created time.Time)
		has  func(s *Snapshot) (time.Time, bool) // created_at held
		feed func(created time.Time) *store.Snapshot
		k    store.Kind
	}
	kinds := []kind{
		{name: "user", k: store.KindUser,
			put: func(s *Snapshot, c, u time.Time) { s.PutUser(&store.User{UserID: "x", CreatedAt: c, UpdatedAt: u}) },
			del: func(s *Snapshot, c time.Time) { s.DeleteUser("x", c) },
			has: func(s *Snapshot) (time.Time, bool) {
				u, ok := s.User("x")
				if !ok {
					return time.Time{}, false
				}
				return u.CreatedAt, true
			},
			feed: func(c time.Time) *store.Snapshot {
				return &store.Snapshot{Users: []*store.User{{UserID: "x", CreatedAt: c, UpdatedAt: c}}}
			}},
		{name: "team", k: store.KindTeam,
			put: func(s *Snapshot, c, u time.Time) { s.PutTeam(&store.Team{TeamID: "x", CreatedAt: c, UpdatedAt: u}) },
			del: func(s *Snapshot, c time.Time) { s.DeleteTeam("x", c) },
			has: func(s *Snapshot) (time.Time, bool) {
				tm, ok := s.Team("x")
				if !ok {
					return time.Time{}, false
				}
				return tm.CreatedAt, true
			},
			feed: func(c time.Time) *store.Snapshot {
				return &store.Snapshot{Teams: []*store.Team{{TeamID: "x", CreatedAt: c, UpdatedAt: c}}}
			}},
	}
	for _, k := range kinds {
		// An edit written to the store before the deletion, published after
		// it: stamped later than the copy held at deletion.
		s := NewSnapshot(nil)
		k.put(s, born, now.Add(-time.Second))
		k.del(s, time.Time{})
		k.put(s, born, now.Add(-time.Second/2))
		if _, ok := k.has(s); ok {
			t.Errorf("%s: an edit written before the deletion and published after it brought it back", k.name)
		}
		// Made again within the minute on a replica whose clock is 10 s
		// behind: a new created_at, stamped before the deletion here.
		behind := time.Now().UTC().Add(-10 * time.Second)
		k.put(s, behind, behind)
		if c, ok := k.has(s); !ok || !c.Equal(behind) {
			t.Errorf("%s: made again on a replica whose clock is behind: refused (held %v %v)", k.name, c, ok)
		}
		// ... and then a late copy of the dead one does not replace it.
		k.put(s, born, now)
		if c, ok := k.has(s); !ok || !c.Equal(behind) {
			t.Errorf("%s: a late copy of the deleted incarnation replaced the one made again (held %v %v)", k.name, c, ok)
		}

		// Deleted by a resync (another replica), the snapshot holding her:
		// an edit here in flight publishes after.
		r := NewSnapshot(k.feed(born))
		r.Apply(nil, []store.Deletion{{Kind: k.k, ID: "x", At: now}}, time.Time{})
		k.put(r, born, now.Add(-time.Second))
		if _, ok := k.has(r); ok {
			t.Errorf("%s: deleted by a resync, brought back by an edit published after", k.name)
		}

		// Deleted here while the snapshot held no copy: the caller names
		// the incarnation it deleted.
		n := NewSnapshot(nil)
		k.del(n, born)
		k.put(n, born, now.Add(-time.Second))
		if _, ok := k.has(n); ok {
			t.Errorf("%s: deleted with no copy held, brought back by an edit published after", k.name)
		}
		k.put(n, behind, behind)
		if _, ok := k.has(n); !ok {
			t.Errorf("%s: deleted with no copy held, made again on a replica behind: refused", k.name)
		}
	}
}
