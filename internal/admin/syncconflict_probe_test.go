package admin_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

// busyUser is a store where, while armed, another writer edits user id
// just before each write of her record: every write read before it loses
// (store.ErrChanged), as under a storm of concurrent edits of her.
type busyUser struct {
	store.Store
	id    string
	armed atomic.Bool
	n     atomic.Int64
}

func (b *busyUser) UpdateUser(ctx context.Context, u *store.User) error {
	if b.armed.Load() && u.UserID == b.id {
		other, err := b.Store.GetUser(ctx, u.UserID)
		if err != nil {
			return err
		}
		other.UserEmail = fmt.Sprintf("other-%d@example.com", b.n.Add(1))
		if err := b.Store.UpdateUser(ctx, other); err != nil {
			return err
		}
	}
	return b.Store.UpdateUser(ctx, u)
}

// TestProbeTeamRouteConflictSaysTheTeamWasWritten: /team/member_add wrote
// the team, then lost every attempt to add the team to the user's record;
// its 409 said "the user was not changed: send it again" and nothing of
// the team, which was changed. The answer names what was written and what
// was not.
func TestProbeTeamRouteConflictSaysTheTeamWasWritten(t *testing.T) {
	bothEngines(t, func(t *testing.T, st store.Store) {
		b := &busyUser{Store: st, id: "ann"}
		e := start(t, seedConfig, b)
		e.newUser("ann", "internal_user", "")
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "t1"}`); s != 200 {
			t.Fatalf("team/new: %d %v", s, out)
		}
		b.armed.Store(true)
		s, out := e.do("POST", "/team/member_add", "sk-1234", `{"team_id": "t1", "member": {"user_id": "ann", "role": "user"}}`)
		b.armed.Store(false)
		msg := toJSON(out)
		if s != 409 || !strings.Contains(msg, "team t1 was updated") || !strings.Contains(msg, "ann's teams were not") {
			t.Fatalf("member_add losing every write of the user: %d %s, want a 409 saying the team was updated and her teams were not", s, msg)
		}
		tm, err := st.GetTeam(context.Background(), "t1")
		if err != nil || !slices.ContainsFunc(tm.Members, func(m store.TeamMember) bool { return m.UserID == "ann" }) {
			t.Fatalf("team t1 after the 409: %+v %v, want ann a member (as the answer says)", tm, err)
		}
		if got := userTeams(t, st, "ann"); slices.Contains(got, "t1") {
			t.Fatalf("ann's teams after the 409: %v, want without t1 (as the answer says)", got)
		}
	})
}
