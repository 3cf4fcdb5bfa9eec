package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

// changedAlways is a store whose UpdateTeam always finds the team changed
// since it was read (edits of it keep racing this one).
type changedAlways struct {
	store.Store
	attempts atomic.Int32
}

func (c *changedAlways) UpdateTeam(_ context.Context, t *store.Team) error {
	c.attempts.Add(1)
	return fmt.Errorf("%w: team %s", store.ErrChanged, t.TeamID)
}

// TestProbeTeamEditConflictChangesNothing: a /team/update that loses every
// one of its attempts answers 409 in the OpenAI error shape and changes
// nothing. Its change set the team's spend (SetSpend, the ledger) on each
// attempt, before the conditional write: the 409 said "the team was not
// changed" while its spend had been overwritten.
func TestProbeTeamEditConflictChangesNothing(t *testing.T) {
	bothEngines(t, func(t *testing.T, st store.Store) {
		c := &changedAlways{Store: st}
		e := start(t, seedConfig, c)
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "busy", "team_alias": "Busy"}`); s != 200 {
			t.Fatalf("team/new: %d %v", s, out)
		}
		s, out := e.do("POST", "/team/update", "sk-1234", `{"team_id": "busy", "team_alias": "renamed", "spend": 42}`)
		er, _ := out["error"].(map[string]any)
		if s != 409 || er == nil || er["type"] != "invalid_request_error" || er["code"] != "409" ||
			!strings.Contains(fmt.Sprint(er["message"]), "busy") || len(out) != 1 {
			t.Fatalf("team/update that lost every attempt: %d %v, want 409 in the OpenAI error shape", s, out)
		}
		if _, ok := er["param"]; !ok {
			t.Errorf("409 body has no param: %v", out)
		}
		if n := c.attempts.Load(); n != 5 {
			t.Errorf("attempts: %d, want 5", n)
		}
		tm, err := st.GetTeam(context.Background(), "busy")
		if err != nil || tm.TeamAlias != "Busy" || tm.Spend != 0 {
			t.Fatalf("team after a 409: alias %q spend %v %v, want Busy and 0", tm.TeamAlias, tm.Spend, err)
		}
		_, info := e.do("GET", "/team/info?team_id=busy", "sk-1234", "")
		if ti, _ := info["team_info"].(map[string]any); ti["spend"] != 0.0 || ti["team_alias"] != "Busy" {
			t.Fatalf("team/info after a 409: %v", ti)
		}
	})
}

// TestConcurrentTeamEditsRealGoroutines: pairs of /team/member_add sent at
// once from two goroutines (no hook holding either): both land, on SQLite
// and PostgreSQL (whose UPDATE ... WHERE updated_at = <read> re-checks the
// row a concurrent writer committed).
func TestConcurrentTeamEditsRealGoroutines(t *testing.T) {
	bothEngines(t, func(t *testing.T, st store.Store) {
		e := start(t, seedConfig, st)
		for i := range 10 {
			team := fmt.Sprintf("pair-%d", i)
			if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "`+team+`"}`); s != 200 {
				t.Fatalf("team/new: %d %v", s, out)
			}
			go1 := make(chan struct{})
			var wg sync.WaitGroup
			answers := make([]string, 2)
			for j, who := range []string{"ann", "bob"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-go1
					req, _ := http.NewRequest("POST", e.url+"/team/member_add",
						strings.NewReader(`{"team_id": "`+team+`", "member": {"user_id": "`+who+`", "role": "user"}}`))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Authorization", "Bearer sk-1234")
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						answers[j] = err.Error()
						return
					}
					defer resp.Body.Close()
					b, _ := io.ReadAll(resp.Body)
					answers[j] = fmt.Sprint(resp.StatusCode, " ", string(b))
				}()
			}
			close(go1)
			wg.Wait()
			for _, a := range answers {
				if !strings.HasPrefix(a, "200 ") {
					t.Fatalf("%s: concurrent member_add: %s", team, a)
				}
			}
			tm, err := st.GetTeam(context.Background(), team)
			if err != nil || !slices.Equal(memberIDs(tm), []string{"ann", "bob"}) {
				t.Fatalf("%s after two concurrent additions: %v %v", team, memberIDs(tm), err)
			}
		}
		// Each user record lists every team she was added to.
		for _, who := range []string{"ann", "bob"} {
			u, err := st.GetUser(context.Background(), who)
			if err != nil || len(u.Teams) != 10 {
				b, _ := json.Marshal(u)
				t.Errorf("user %s after ten additions: %s %v", who, b, err)
			}
		}
	})
}
