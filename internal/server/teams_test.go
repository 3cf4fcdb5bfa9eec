package server

import (
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// getJSON fetches path with key and decodes the JSON answer.
func (e *spendEnv) getJSON(t *testing.T, path, key string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func errorOf(out map[string]any) (typ, msg string) {
	e, _ := out["error"].(map[string]any)
	typ, _ = e["type"].(string)
	msg, _ = e["message"].(string)
	return typ, msg
}

// TestMemberBudgetIsEnforced: /team/member_update's max_budget_in_team
// refuses the member's keys in that team once spent, in LiteLLM's words,
// while another member and the member's keys elsewhere go on; its spend is
// shown in team_memberships and survives a restart.
func TestMemberBudgetIsEnforced(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		e := startSpend(t, st, mockupstream.Options{}, "")
		for _, call := range [][2]string{
			{"/user/new", `{"user_id": "alice", "auto_create_key": false}`},
			{"/user/new", `{"user_id": "bob", "auto_create_key": false}`},
			{"/team/new", `{"team_id": "eng", "max_budget": 10, "members_with_roles": [{"user_id": "alice", "role": "user"}, {"user_id": "bob", "role": "user"}]}`},
			{"/team/member_update", `{"team_id": "eng", "user_id": "alice", "max_budget_in_team": 0.0003}`},
		} {
			if resp, out := e.post(t, call[0], "sk-1234", call[1]); resp.StatusCode != 200 {
				t.Fatalf("%s: %d %v", call[0], resp.StatusCode, out)
			}
		}
		key := func(body string) string {
			_, out := e.post(t, "/key/generate", "sk-1234", body)
			return out["key"].(string)
		}
		alice, bob := key(`{"user_id": "alice", "team_id": "eng"}`), key(`{"user_id": "bob", "team_id": "eng"}`)
		aliceAlone := key(`{"user_id": "alice"}`)
		if resp, out := e.post(t, "/v1/chat/completions", alice, chat3); resp.StatusCode != 200 {
			t.Fatalf("first request: %d %v", resp.StatusCode, out)
		}
		refused := func(e *spendEnv, when string) {
			t.Helper()
			resp, out := e.post(t, "/v1/chat/completions", alice, chat3)
			typ, msg := errorOf(out)
			if resp.StatusCode != 400 || typ != "budget_exceeded" ||
				!strings.HasPrefix(msg, "Budget has been exceeded! User=alice in Team=eng Current cost: 0.0003, Max budget: 0.0003; ") {
				t.Fatalf("%s: %d %v", when, resp.StatusCode, out)
			}
		}
		refused(e, "over her budget in the team")
		for _, k := range []string{bob, bob, aliceAlone} {
			if resp, out := e.post(t, "/v1/chat/completions", k, chat3); resp.StatusCode != 200 {
				t.Fatalf("another member, or her key outside the team: %d %v", resp.StatusCode, out)
			}
		}
		_, out := e.getJSON(t, "/team/info?team_id=eng", "sk-1234")
		tms, _ := out["team_memberships"].([]any)
		if len(tms) != 1 || tms[0].(map[string]any)["spend"] != 0.0003 {
			t.Fatalf("team_memberships: %v", out["team_memberships"])
		}
		if err := e.stop(); err != nil {
			t.Fatal(err)
		}
		e = startSpend(t, st, mockupstream.Options{}, "")
		refused(e, "after a restart")
		// Raised, she is served again.
		if resp, out := e.post(t, "/team/member_update", "sk-1234", `{"team_id": "eng", "user_id": "alice", "max_budget_in_team": 0.001}`); resp.StatusCode != 200 {
			t.Fatalf("member_update: %d %v", resp.StatusCode, out)
		}
		if resp, out := e.post(t, "/v1/chat/completions", alice, chat3); resp.StatusCode != 200 {
			t.Fatalf("after raising her budget: %d %v", resp.StatusCode, out)
		}
	})
}

// TestTeamModelAliases: a team's model_aliases route its keys' requests for
// the alias to the model it names; keys of other teams do not have it.
func TestTeamModelAliases(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, "")
	if resp, out := e.post(t, "/team/new", "sk-1234", `{"team_id": "eng", "model_aliases": {"house-model": "gpt-4"}}`); resp.StatusCode != 200 {
		t.Fatalf("team/new: %d %v", resp.StatusCode, out)
	}
	_, out := e.post(t, "/key/generate", "sk-1234", `{"team_id": "eng"}`)
	inTeam := out["key"].(string)
	_, out = e.post(t, "/key/generate", "sk-1234", `{}`)
	outside := out["key"].(string)
	aliased := strings.Replace(chat3, `"gpt-4"`, `"house-model"`, 1)
	resp, out := e.post(t, "/v1/chat/completions", inTeam, aliased)
	if resp.StatusCode != 200 || !strings.Contains(string(e.mock.LastRequest().Body), `"model":"gpt-4o-mini"`) {
		t.Fatalf("aliased request: %d %v", resp.StatusCode, out)
	}
	if resp, out := e.post(t, "/v1/chat/completions", outside, aliased); resp.StatusCode != 404 {
		t.Fatalf("a key outside the team asking for the alias: %d %v", resp.StatusCode, out)
	}
	// Changed by /team/update, at once.
	e.post(t, "/team/update", "sk-1234", `{"team_id": "eng", "model_aliases": {}}`)
	if resp, out := e.post(t, "/v1/chat/completions", inTeam, aliased); resp.StatusCode != 404 {
		t.Fatalf("alias removed: %d %v", resp.StatusCode, out)
	}
}

// TestProxyBudgetUser: litellm_settings.max_budget is the user
// litellm-proxy-budget: /user/info shows the gateway's spend and budget,
// /user/update lowers the budget (refusing in LiteLLM's words) and resets
// the spend, and the reset survives a restart.
func TestProxyBudgetUser(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		const extra = "litellm_settings:\n  max_budget: 0.001\n"
		e := startSpend(t, st, mockupstream.Options{}, extra)
		info := func(e *spendEnv) (spend, budget float64) {
			t.Helper()
			s, out := e.getJSON(t, "/user/info?user_id=litellm-proxy-budget", "sk-1234")
			u, _ := out["user_info"].(map[string]any)
			spend, _ = u["spend"].(float64)
			budget, _ = u["max_budget"].(float64)
			if s != 200 || u == nil {
				t.Fatalf("user/info: %d %v", s, out)
			}
			return spend, budget
		}
		if spend, budget := info(e); spend != 0 || budget != 0.001 {
			t.Fatalf("at start: spend %v budget %v", spend, budget)
		}
		_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
		key := out["key"].(string)
		if resp, out := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
			t.Fatalf("first request: %d %v", resp.StatusCode, out)
		}
		if spend, _ := info(e); math.Abs(spend-0.0003) > 1e-12 {
			t.Fatalf("gateway spend after one request: %v", spend)
		}
		if resp, out := e.post(t, "/user/update", "sk-1234", `{"user_id": "litellm-proxy-budget", "max_budget": 0.0003}`); resp.StatusCode != 200 || out["max_budget"] != 0.0003 {
			t.Fatalf("lowering the gateway budget: %d %v", resp.StatusCode, out)
		}
		resp, out := e.post(t, "/v1/chat/completions", key, chat3)
		if typ, msg := errorOf(out); resp.StatusCode != 400 || typ != "budget_exceeded" || !strings.HasPrefix(msg, "Budget has been exceeded! Current cost: 0.0003, Max budget: 0.0003; ") {
			t.Fatalf("over the lowered gateway budget: %d %v", resp.StatusCode, out)
		}
		if _, out := e.getJSON(t, "/global/spend", "sk-1234"); out["max_budget"] != 0.0003 || math.Abs(out["spend"].(float64)-0.0003) > 1e-12 {
			t.Fatalf("/global/spend: %v", out)
		}
		if resp, out := e.post(t, "/user/update", "sk-1234", `{"user_id": "litellm-proxy-budget", "budget_duration": "1d"}`); resp.StatusCode != 400 {
			t.Fatalf("a period on the gateway budget: %d %v", resp.StatusCode, out)
		}
		if resp, out := e.post(t, "/key/generate", "sk-1234", `{"user_id": "litellm-proxy-budget"}`); resp.StatusCode != 400 {
			t.Fatalf("a key for the gateway budget user: %d %v", resp.StatusCode, out)
		}
		if resp, out := e.post(t, "/user/update", "sk-1234", `{"user_id": "litellm-proxy-budget", "spend": 0}`); resp.StatusCode != 200 || out["spend"] != 0.0 {
			t.Fatalf("resetting the gateway spend: %d %v", resp.StatusCode, out)
		}
		if resp, out := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
			t.Fatalf("after the reset: %d %v", resp.StatusCode, out)
		}
		if err := e.stop(); err != nil {
			t.Fatal(err)
		}
		// After a restart: the reset stands (one request since), and the
		// configuration's budget is the budget again, as in LiteLLM.
		e = startSpend(t, st, mockupstream.Options{}, extra)
		if spend, budget := info(e); math.Abs(spend-0.0003) > 1e-12 || budget != 0.001 {
			t.Fatalf("after a restart: spend %v budget %v", spend, budget)
		}
	})
}
