package admin_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// pausedTeamRead is a store whose next GetTeam of team, once armed, pauses
// after the read until released: a team edit's read-modify-write is held
// open between its read and its write while other requests run.
type pausedTeamRead struct {
	store.Store
	team    string
	armed   atomic.Bool
	paused  chan struct{}
	release chan struct{}
	once    sync.Once
}

func pauseTeamReads(t *testing.T, st store.Store, team string) *pausedTeamRead {
	p := &pausedTeamRead{Store: st, team: team, paused: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(p.resume) // a failed test never leaves a request hanging
	return p
}

func (p *pausedTeamRead) GetTeam(ctx context.Context, id string) (*store.Team, error) {
	tm, err := p.Store.GetTeam(ctx, id)
	if id == p.team && p.armed.CompareAndSwap(true, false) {
		close(p.paused)
		<-p.release
	}
	return tm, err
}

func (p *pausedTeamRead) resume() { p.once.Do(func() { close(p.release) }) }

type answer struct {
	status int
	body   string
	err    error
}

// sendAsync posts body to path with the master key from a goroutine of
// its own; the answer comes on the channel returned.
func sendAsync(e *env, path, body string) <-chan answer {
	out := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest("POST", e.url+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer sk-1234")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		out <- answer{status: resp.StatusCode, body: string(b)}
	}()
	return out
}

// held sends body to path with the master key while the store holds the
// request after its read of the team; it returns once the read happened,
// and the request's answer comes on the channel after resume.
func held(t *testing.T, e *env, p *pausedTeamRead, path, body string) <-chan answer {
	t.Helper()
	p.armed.Store(true)
	out := sendAsync(e, path, body)
	select {
	case <-p.paused:
	case a := <-out:
		t.Fatalf("%s answered without reading team %s: %+v", path, p.team, a)
	case <-time.After(time.Minute):
		t.Fatalf("%s did not read team %s within a minute", path, p.team)
	}
	return out
}

func finish(t *testing.T, p *pausedTeamRead, out <-chan answer) answer {
	t.Helper()
	p.resume()
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

func memberIDs(tm *store.Team) []string {
	var ids []string
	for _, m := range tm.Members {
		ids = append(ids, m.UserID)
	}
	slices.Sort(ids)
	return ids
}

// bothEngines runs fn on SQLite and, when TOLLGATE_TEST_POSTGRES_URL is
// set, on PostgreSQL, with the store itself (not the gateway) in hand.
func bothEngines(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		fn(t, storetest.OpenSQLite(t, filepath.Join(t.TempDir(), "tollgate.db")))
	})
	t.Run("postgres", func(t *testing.T) {
		pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
		if pg == "" {
			t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run")
		}
		fn(t, storetest.OpenPostgres(t, pg))
	})
}

// TestConcurrentTeamEditsBothLand: two /team/member_add requests on one
// team, the first held between its read of the team and its write while
// the second runs whole. Each wrote the whole team as it read it, so the
// first wrote its member over the second's: one addition was lost (and the
// lost member's user record still listed the team).
func TestConcurrentTeamEditsBothLand(t *testing.T) {
	bothEngines(t, func(t *testing.T, st store.Store) {
		p := pauseTeamReads(t, st, "shared")
		e := start(t, seedConfig, p)
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "shared", "team_alias": "Shared"}`); s != 200 {
			t.Fatalf("team/new: %d %v", s, out)
		}
		first := held(t, e, p, "/team/member_add", `{"team_id": "shared", "member": {"user_id": "ann", "role": "user"}}`)
		if s, out := e.do("POST", "/team/member_add", "sk-1234", `{"team_id": "shared", "member": {"user_id": "bob", "role": "user"}}`); s != 200 {
			t.Fatalf("member_add bob: %d %v", s, out)
		}
		if a := finish(t, p, first); a.status != 200 {
			t.Fatalf("member_add ann: %d %s", a.status, a.body)
		}
		tm, err := st.GetTeam(context.Background(), "shared")
		if err != nil || !slices.Equal(memberIDs(tm), []string{"ann", "bob"}) || tm.TeamAlias != "Shared" {
			t.Fatalf("stored team after two concurrent additions: members %v (%+v) %v, want ann and bob", memberIDs(tm), tm, err)
		}
		_, out := e.do("GET", "/team/info?team_id=shared", "sk-1234", "")
		info, _ := out["team_info"].(map[string]any)
		if got := toJSON(info["members_with_roles"]); got != `[{"role":"user","user_id":"bob"},{"role":"user","user_id":"ann"}]` {
			t.Fatalf("team/info after two concurrent additions: %s", got)
		}
	})
}

// TestTeamEditRacingUserDelete: a /team/update held between its read of a
// team and its write while /user/delete deletes one of its members (the
// store takes her out of the team in the deletion's transaction). The
// update wrote back the members it had read: the deleted user was a member
// again, and a user created later under her id inherited the membership.
func TestTeamEditRacingUserDelete(t *testing.T) {
	bothEngines(t, func(t *testing.T, st store.Store) {
		p := pauseTeamReads(t, st, "stays")
		e := start(t, seedConfig, p)
		e.newUser("leaver", "internal_user")
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "stays", "members_with_roles": [{"user_id": "leaver", "role": "user"}, {"user_id": "other", "role": "user"}]}`); s != 200 {
			t.Fatalf("team/new: %d %v", s, out)
		}
		update := held(t, e, p, "/team/update", `{"team_id": "stays", "team_alias": "renamed"}`)
		if s, out := e.do("POST", "/user/delete", "sk-1234", `{"user_ids": ["leaver"]}`); s != 200 {
			t.Fatalf("user/delete: %d %v", s, out)
		}
		if a := finish(t, p, update); a.status != 200 {
			t.Fatalf("team/update: %d %s", a.status, a.body)
		}
		tm, err := st.GetTeam(context.Background(), "stays")
		if err != nil || !slices.Equal(memberIDs(tm), []string{"other"}) || tm.TeamAlias != "renamed" {
			t.Fatalf("stored team after an update raced the deletion of a member: members %v (%+v) %v, want other alone, renamed", memberIDs(tm), tm, err)
		}
		_, out := e.do("GET", "/team/info?team_id=stays", "sk-1234", "")
		info, _ := out["team_info"].(map[string]any)
		if got := toJSON(info["members_with_roles"]); got != `[{"role":"user","user_id":"other"}]` {
			t.Fatalf("team/info after the race: %s", got)
		}
	})
}
