package admin_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// userHold holds the next request that reads (afterWrite false) or writes
// (afterWrite true) one user's record, just after that store call, until
// released: a user edit's read-modify-write is held open while other
// requests run.
type userHold struct {
	user       string
	afterWrite bool
	paused     chan struct{}
	release    chan struct{}
	once       sync.Once
}

func (h *userHold) resume() { h.once.Do(func() { close(h.release) }) }

// pausedUsers is a store that applies the armed userHold, once.
type pausedUsers struct {
	store.Store
	next atomic.Pointer[userHold]
}

func (p *pausedUsers) pause(h *userHold, id string, write bool) {
	if h != nil && h.user == id && h.afterWrite == write && p.next.CompareAndSwap(h, nil) {
		close(h.paused)
		<-h.release
	}
}

func (p *pausedUsers) GetUser(ctx context.Context, id string) (*store.User, error) {
	u, err := p.Store.GetUser(ctx, id)
	p.pause(p.next.Load(), id, false)
	return u, err
}

func (p *pausedUsers) UpdateUser(ctx context.Context, u *store.User) error {
	err := p.Store.UpdateUser(ctx, u)
	p.pause(p.next.Load(), u.UserID, true)
	return err
}

// holdUser sends body to path with the master key, held just after its
// first read (or write) of user's record; it returns once the request got
// there, and its answer comes from finishUser.
func holdUser(t *testing.T, e *env, p *pausedUsers, user string, afterWrite bool, path, body string) (*userHold, <-chan answer) {
	t.Helper()
	h := &userHold{user: user, afterWrite: afterWrite, paused: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(h.resume) // a failed test never leaves a request hanging
	p.next.Store(h)
	out := sendAsync(e, path, body)
	select {
	case <-h.paused:
	case a := <-out:
		t.Fatalf("%s answered without reaching user %s's record: %+v", path, user, a)
	case <-time.After(time.Minute):
		t.Fatalf("%s did not reach user %s's record within a minute", path, user)
	}
	return h, out
}

func finishUser(t *testing.T, h *userHold, out <-chan answer) answer {
	t.Helper()
	h.resume()
	select {
	case a := <-out:
		if a.err != nil {
			t.Fatal(a.err)
		}
		return a
	case <-time.After(time.Minute):
		t.Fatal("the held request did not answer within a minute of its release")
	}
	return answer{}
}

func userTeams(t *testing.T, st store.Store, id string) []string {
	t.Helper()
	u, err := st.GetUser(context.Background(), id)
	if err != nil {
		t.Fatalf("user %s: %v", id, err)
	}
	ts := slices.Clone(u.Teams)
	slices.Sort(ts)
	return ts
}

// racingUser starts a gateway on st, held by a pausedUsers, with user ann
// and teams t1 and t2 (neither lists her).
func racingUser(t *testing.T, st store.Store) (*env, *pausedUsers) {
	p := &pausedUsers{Store: st}
	e := start(t, seedConfig, p)
	e.newUser("ann", "internal_user", `, "user_email": "ann@example.com"`)
	for _, id := range []string{"t1", "t2"} {
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "`+id+`"}`); s != 200 {
			t.Fatalf("team/new %s: %d %v", id, s, out)
		}
	}
	return e, p
}

// TestConcurrentMemberAddsKeepUserTeams: two /team/member_add requests
// adding one user to two teams, the first held between its read of her
// user record and its write (it keeps her `teams` in step) while the second
// runs whole. Each wrote her whole record as it read it: the first wrote
// [t1] over the second's [t2], and her record lost a team that lists her.
func TestConcurrentMemberAddsKeepUserTeams(t *testing.T) {
	bothEngines(t, func(t *testing.T, st store.Store) {
		e, p := racingUser(t, st)
		h, first := holdUser(t, e, p, "ann", false, "/team/member_add", `{"team_id": "t1", "member": {"user_id": "ann", "role": "user"}}`)
		if s, out := e.do("POST", "/team/member_add", "sk-1234", `{"team_id": "t2", "member": {"user_id": "ann", "role": "user"}}`); s != 200 {
			t.Fatalf("member_add t2: %d %v", s, out)
		}
		if a := finishUser(t, h, first); a.status != 200 {
			t.Fatalf("member_add t1: %d %s", a.status, a.body)
		}
		if got := userTeams(t, st, "ann"); !slices.Equal(got, []string{"t1", "t2"}) {
			t.Fatalf("ann's teams after two concurrent member_add: %v, want t1 and t2", got)
		}
		_, out := e.do("GET", "/user/info?user_id=ann", "sk-1234", "")
		info, _ := out["user_info"].(map[string]any)
		if got := toJSON(info["teams"]); got != `["t2","t1"]` {
			t.Fatalf("user/info teams after two concurrent member_add: %s", got)
		}
	})
}

// TestUserUpdateRacingMembership: /user/update and a /team/member_add of
// the same user, each held between its read of her record and its write
// while the other runs whole. The held one wrote her record as it read it:
// the update took the team out of her `teams`, or the membership change
// undid the update's email.
func TestUserUpdateRacingMembership(t *testing.T) {
	bothEngines(t, func(t *testing.T, st store.Store) {
		e, p := racingUser(t, st)
		// The update held, the membership change whole.
		h, update := holdUser(t, e, p, "ann", false, "/user/update", `{"user_id": "ann", "user_email": "ann@one.example"}`)
		if s, out := e.do("POST", "/team/member_add", "sk-1234", `{"team_id": "t1", "member": {"user_id": "ann", "role": "user"}}`); s != 200 {
			t.Fatalf("member_add t1: %d %v", s, out)
		}
		a := finishUser(t, h, update)
		if a.status != 200 || !strings.Contains(a.body, `"user_email":"ann@one.example"`) || !strings.Contains(a.body, `"teams":["t1"]`) {
			t.Fatalf("user/update racing member_add: %d %s", a.status, a.body)
		}
		u, err := st.GetUser(context.Background(), "ann")
		if err != nil || u.UserEmail != "ann@one.example" || !slices.Equal(u.Teams, []string{"t1"}) {
			t.Fatalf("ann after user/update raced member_add t1: %+v %v, want ann@one.example in t1", u, err)
		}
		// The membership change held, the update whole.
		h, add := holdUser(t, e, p, "ann", false, "/team/member_add", `{"team_id": "t2", "member": {"user_id": "ann", "role": "user"}}`)
		if s, out := e.do("POST", "/user/update", "sk-1234", `{"user_id": "ann", "user_email": "ann@two.example", "max_budget": 7}`); s != 200 {
			t.Fatalf("user/update: %d %v", s, out)
		}
		if a := finishUser(t, h, add); a.status != 200 {
			t.Fatalf("member_add t2 racing user/update: %d %s", a.status, a.body)
		}
		u, err = st.GetUser(context.Background(), "ann")
		if err != nil || u.UserEmail != "ann@two.example" || u.MaxBudget == nil || *u.MaxBudget != 7 || !slices.Equal(userTeams(t, st, "ann"), []string{"t1", "t2"}) {
			t.Fatalf("ann after member_add t2 raced user/update: %+v %v, want ann@two.example, max_budget 7, in t1 and t2", u, err)
		}
		_, out := e.do("GET", "/user/info?user_id=ann", "sk-1234", "")
		info, _ := out["user_info"].(map[string]any)
		if info["user_email"] != "ann@two.example" || toJSON(info["teams"]) != `["t1","t2"]` || info["max_budget"] != 7.0 {
			t.Fatalf("user/info after the races: %v", info)
		}
	})
}

// TestUserEditRacingUserDelete: edits of a user held across her deletion
// by /user/delete. None brings her back: not in the store, and not in the
// gateway's snapshot, where a /user/update that wrote her before the
// deletion but published her after it left her for good (a later
// /team/member_add of her id then took her for an existing user and made
// no record); a membership change whose write of her `teams` found her
// gone answers for its team edit, which stands, not 404.
func TestUserEditRacingUserDelete(t *testing.T) {
	bothEngines(t, func(t *testing.T, st store.Store) {
		e, p := racingUser(t, st)
		gone := func(what string) {
			t.Helper()
			if _, err := st.GetUser(context.Background(), "ann"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("ann after %s: %v, want not found", what, err)
			}
			if s, out := e.do("GET", "/user/info?user_id=ann", "sk-1234", ""); s != 404 {
				t.Fatalf("user/info of ann after %s: %d %v", what, s, out)
			}
		}
		del := func() {
			t.Helper()
			if s, out := e.do("POST", "/user/delete", "sk-1234", `{"user_ids": ["ann"]}`); s != 200 {
				t.Fatalf("user/delete: %d %v", s, out)
			}
		}

		// /user/update read her, then she was deleted: its write finds her gone.
		h, update := holdUser(t, e, p, "ann", false, "/user/update", `{"user_id": "ann", "user_email": "late@example.com"}`)
		del()
		if a := finishUser(t, h, update); a.status != 404 || !strings.Contains(a.body, `"error"`) {
			t.Fatalf("user/update of a user deleted after its read: %d %s", a.status, a.body)
		}
		gone("an update raced her deletion")

		// A membership change read her record, then she was deleted.
		e.newUser("ann", "internal_user")
		h, add := holdUser(t, e, p, "ann", false, "/team/member_add", `{"team_id": "t1", "member": {"user_id": "ann", "role": "user"}}`)
		del()
		if a := finishUser(t, h, add); a.status != 200 {
			t.Fatalf("member_add of a user deleted while it kept her teams in step: %d %s", a.status, a.body)
		}
		gone("member_add raced her deletion")
		tm, err := st.GetTeam(context.Background(), "t1")
		if err != nil || len(tm.Members) != 0 {
			t.Fatalf("team t1 after member_add raced the deletion of its new member: %+v %v, want no members", tm, err)
		}

		// /user/update wrote her, then she was deleted before it published her.
		e.newUser("ann", "internal_user")
		h, update = holdUser(t, e, p, "ann", true, "/user/update", `{"user_id": "ann", "user_email": "late@example.com"}`)
		del()
		if a := finishUser(t, h, update); a.status != 200 {
			t.Fatalf("user/update that wrote before the deletion: %d %s", a.status, a.body)
		}
		gone("an update written before her deletion")
		// An id nobody has: member_add makes her user record.
		if s, out := e.do("POST", "/team/member_add", "sk-1234", `{"team_id": "t2", "member": {"user_id": "ann", "role": "user"}}`); s != 200 {
			t.Fatalf("member_add of ann after her deletion: %d %v", s, out)
		}
		if got := userTeams(t, st, "ann"); !slices.Equal(got, []string{"t2"}) {
			t.Fatalf("ann re-created by member_add: teams %v, want t2", got)
		}
	})
}
