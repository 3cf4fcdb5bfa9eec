package auth

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeDeletionReadAgainKeepsTheNewIncarnation: a resync reads a
// user's or team's deletion record again (the time cursor's 5 s overlap;
// on PostgreSQL every look while a transaction begun before it is still
// open) after the id was made again and applied. The record is of the
// incarnation before it: the one made after the deletion must stay, and
// its row, read again with the record, must not be taken for a dead copy.
func TestProbeDeletionReadAgainKeepsTheNewIncarnation(t *testing.T) {
	now := time.Now().UTC()
	deleted := now.Add(-time.Second)
	for _, kind := range []store.Kind{store.KindUser, store.KindTeam} {
		s := NewSnapshot(nil)
		born := now.Add(-time.Hour) // the incarnation deleted
		if kind == store.KindUser {
			s.PutUser(&store.User{UserID: "x", CreatedAt: born, UpdatedAt: born})
		} else {
			s.PutTeam(&store.Team{TeamID: "x", CreatedAt: born, UpdatedAt: born})
		}
		row := &store.Snapshot{}
		if kind == store.KindUser {
			row.Users = []*store.User{{UserID: "x", CreatedAt: now, UpdatedAt: now}}
		} else {
			row.Teams = []*store.Team{{TeamID: "x", CreatedAt: now, UpdatedAt: now}}
		}
		del := []store.Deletion{{Kind: kind, ID: "x", At: deleted}}
		for look := 1; look <= 3; look++ {
			s.Apply(row, del, time.Time{})
			var ok bool
			if kind == store.KindUser {
				_, ok = s.User("x")
			} else {
				_, ok = s.Team("x")
			}
			if !ok {
				t.Errorf("%s made again after its deletion: gone after look %d reading the deletion again", kind, look)
				break
			}
		}
	}
}
