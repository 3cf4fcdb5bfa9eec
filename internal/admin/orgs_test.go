package admin_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// orgConfig prices its models, so that requests spend.
const orgConfig = `
model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4-upstream, api_base: "{{UP}}", input_cost_per_token: 0.001, output_cost_per_token: 0.002}
  - model_name: gpt-3.5-turbo
    litellm_params: {model: openai/gpt-35-upstream, api_base: "{{UP}}", input_cost_per_token: 0.001, output_cost_per_token: 0.002}
  - model_name: my-free-tier
    litellm_params: {model: openai/free, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0}
general_settings:
  master_key: sk-1234
`

// chatAs sends a chat request for end user user.
func (e *env) chatAs(key, model, user string) (int, map[string]any) {
	return e.do("POST", "/v1/chat/completions", key, `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}],"user":"`+user+`"}`)
}

func errMessage(out map[string]any) string {
	if e, ok := out["error"].(map[string]any); ok {
		m, _ := e["message"].(string)
		return m
	}
	return ""
}

// TestBudgetObjects: /budget/* round trip, and bad input changes nothing.
func TestBudgetObjects(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		s, out := e.do("POST", "/budget/new", "sk-1234", `{"budget_id": "tier-1", "max_budget": 10, "soft_budget": 8, "rpm_limit": 5, "tpm_limit": 500, "max_parallel_requests": 2, "budget_duration": "30d", "model_max_budget": {"gpt-4": {"max_budget": 1}}}`)
		if s != 200 || out["budget_id"] != "tier-1" || out["max_budget"] != 10.0 || out["rpm_limit"] != 5.0 || out["budget_reset_at"] == nil || out["created_at"] == nil {
			t.Fatalf("budget/new: %d %v", s, out)
		}
		s, out = e.do("POST", "/budget/new", "sk-1234", `{"max_budget": 1}`)
		if s != 200 || out["budget_id"] == "" || out["budget_id"] == nil {
			t.Fatalf("budget/new without an id: %d %v", s, out)
		}
		spare := out["budget_id"].(string)

		bad := []struct{ name, path, body, param string }{
			{"duplicate id", "/budget/new", `{"budget_id": "tier-1"}`, "budget_id"},
			{"negative max_budget", "/budget/new", `{"budget_id": "neg", "max_budget": -1}`, "max_budget"},
			{"bad duration", "/budget/new", `{"budget_id": "dur", "budget_duration": "often"}`, "budget_duration"},
			{"model_max_budget not an object", "/budget/new", `{"budget_id": "mmb", "model_max_budget": {"gpt-4": 3}}`, "model_max_budget"},
			{"unknown field", "/budget/new", `{"budget_id": "unk", "max_budgt": 3}`, "max_budgt"},
			{"update without id", "/budget/update", `{"max_budget": 3}`, "budget_id"},
			{"update of a missing budget", "/budget/update", `{"budget_id": "nope", "max_budget": 3}`, "budget_id"},
			{"update to a negative rpm", "/budget/update", `{"budget_id": "tier-1", "rpm_limit": -2}`, "rpm_limit"},
			{"info without ids", "/budget/info", `{}`, "budgets"},
			{"delete without id", "/budget/delete", `{}`, "id"},
		}
		for _, tt := range bad {
			t.Run(tt.name, func(t *testing.T) {
				before, _, _ := e.store.ListBudgets(context.Background(), store.Page{})
				s, out := e.do("POST", tt.path, "sk-1234", tt.body)
				if s != 400 && s != 404 || errParam(out) != tt.param || errMessage(out) == "" {
					t.Fatalf("%d %v, want a 400/404 naming %s", s, out, tt.param)
				}
				after, _, _ := e.store.ListBudgets(context.Background(), store.Page{})
				if toJSON(before) != toJSON(after) {
					t.Fatalf("refused call changed budgets:\n%s\n%s", toJSON(before), toJSON(after))
				}
			})
		}

		s, out = e.do("POST", "/budget/update", "sk-1234", `{"budget_id": "tier-1", "rpm_limit": 7}`)
		if s != 200 || out["rpm_limit"] != 7.0 || out["max_budget"] != 10.0 {
			t.Fatalf("budget/update: %d %v", s, out)
		}
		s, out = e.do("POST", "/budget/info", "sk-1234", `{"budgets": ["tier-1"]}`)
		if raw, _ := out["_raw"].(string); s != 200 || !strings.Contains(raw, `"rpm_limit":7`) || !strings.HasPrefix(raw, "[") {
			t.Fatalf("budget/info: %d %v", s, out)
		}
		if s, out := e.do("GET", "/budget/list", "sk-1234", ""); s != 200 || !strings.Contains(out["_raw"].(string), `"budget_id":"tier-1"`) || !strings.Contains(out["_raw"].(string), spare) {
			t.Fatalf("budget/list: %d %v", s, out)
		}

		// A budget something names may not be deleted; an unused one may.
		if s, out := e.do("POST", "/customer/new", "sk-1234", `{"user_id": "c1", "budget_id": "tier-1"}`); s != 200 {
			t.Fatalf("customer with budget: %d %v", s, out)
		}
		if s, out := e.do("POST", "/budget/delete", "sk-1234", `{"id": "tier-1"}`); s != 400 || !strings.Contains(errMessage(out), "end user c1") {
			t.Fatalf("deleting a budget in use: %d %v", s, out)
		}
		if _, err := e.store.GetBudget(context.Background(), "tier-1"); err != nil {
			t.Fatalf("refused delete removed the budget: %v", err)
		}
		if s, out := e.do("POST", "/budget/delete", "sk-1234", `{"id": "`+spare+`"}`); s != 200 {
			t.Fatalf("budget/delete: %d %v", s, out)
		}
		if _, err := e.store.GetBudget(context.Background(), spare); err == nil {
			t.Fatal("deleted budget still stored")
		}

		// budget_id must name a budget, and not come with max_budget.
		for _, tt := range []struct{ name, path, body string }{
			{"customer with a missing budget", "/customer/new", `{"user_id": "c2", "budget_id": "nope"}`},
			{"customer with budget and max_budget", "/customer/new", `{"user_id": "c2", "budget_id": "tier-1", "max_budget": 3}`},
			{"key with a missing budget", "/key/generate", `{"budget_id": "nope"}`},
			{"team member with a missing budget", "/team/new", `{"team_id": "tb", "members_with_roles": [{"user_id": "u", "role": "user", "budget_id": "nope"}]}`},
			{"user with a budget", "/user/new", `{"user_id": "ub", "budget_id": "tier-1"}`},
		} {
			if s, out := e.do("POST", tt.path, "sk-1234", tt.body); (s != 400 && s != 404) || errParam(out) != "budget_id" {
				t.Errorf("%s: %d %v, want a 400/404 naming budget_id", tt.name, s, out)
			}
		}
		if _, err := e.store.GetEndUser(context.Background(), "c2"); err == nil {
			t.Error("refused customer/new created c2")
		}
		if _, err := e.store.GetTeam(context.Background(), "tb"); err == nil {
			t.Error("refused team/new created tb")
		}
		e.do("POST", "/customer/new", "sk-1234", `{"user_id": "own", "max_budget": 4}`)
		s, out = e.do("GET", "/customer/info?end_user_id=own", "sk-1234", "")
		if tbl, _ := out["litellm_budget_table"].(map[string]any); s != 200 || tbl["max_budget"] != 4.0 || tbl["budget_id"] != nil {
			t.Fatalf("customer/info of an end user with her own max_budget: %d %v", s, out)
		}
		s, out = e.do("GET", "/customer/info?end_user_id=c1", "sk-1234", "")
		if tbl, _ := out["litellm_budget_table"].(map[string]any); s != 200 || out["budget_id"] != "tier-1" || tbl["rpm_limit"] != 7.0 {
			t.Fatalf("customer/info: %d %v", s, out)
		}
	})
}

// TestBudgetObjectsAreEnforced: an end user and a key that name a budget
// are held to its limits, and to its new limits as soon as it changes.
func TestBudgetObjectsAreEnforced(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		e.do("POST", "/budget/new", "sk-1234", `{"budget_id": "one-rpm", "rpm_limit": 1}`)
		if s, out := e.do("POST", "/end_user/new", "sk-1234", `{"user_id": "cust", "budget_id": "one-rpm"}`); s != 200 {
			t.Fatalf("end_user/new: %d %v", s, out)
		}
		key := e.generate(`{}`)
		if s, out := e.chatAs(key, "gpt-4", "cust"); s != 200 {
			t.Fatalf("first request: %d %v", s, out)
		}
		s, out := e.chatAs(key, "gpt-4", "cust")
		if s != 429 || !strings.Contains(errMessage(out), "cust") {
			t.Fatalf("second request within the budget's rpm_limit 1: %d %v, want 429", s, out)
		}
		if s, out := e.chatAs(key, "gpt-4", "someone-else"); s != 200 {
			t.Fatalf("another end user: %d %v", s, out)
		}
		// The budget changes: its max_budget of 0 now refuses the end user.
		if s, out := e.do("POST", "/budget/update", "sk-1234", `{"budget_id": "one-rpm", "rpm_limit": 100, "max_budget": 0}`); s != 200 {
			t.Fatalf("budget/update: %d %v", s, out)
		}
		s, out = e.chatAs(key, "gpt-4", "cust")
		if s != 400 || !strings.Contains(toJSON(out), "budget_exceeded") {
			t.Fatalf("end user over the budget's max_budget: %d %v, want 400 budget_exceeded", s, out)
		}
		// Her own max_budget outranks the budget's; both in one request do not go.
		if s, out := e.do("POST", "/customer/update", "sk-1234", `{"user_id": "cust", "budget_id": "one-rpm", "max_budget": 100}`); s != 400 {
			t.Fatalf("customer/update with budget_id and max_budget: %d %v", s, out)
		}
		if s, out := e.do("POST", "/customer/update", "sk-1234", `{"user_id": "cust", "max_budget": 100}`); s != 200 {
			t.Fatalf("customer/update max_budget: %d %v", s, out)
		}
		if s, out := e.chatAs(key, "gpt-4", "cust"); s != 200 {
			t.Fatalf("end user whose own max_budget outranks her budget's 0: %d %v", s, out)
		}

		// A key's budget: tpm and rpm.
		e.do("POST", "/budget/new", "sk-1234", `{"budget_id": "key-tier", "rpm_limit": 1}`)
		s, out = e.do("POST", "/key/generate", "sk-1234", `{"budget_id": "key-tier"}`)
		if tbl, _ := out["litellm_budget_table"].(map[string]any); s != 200 || out["budget_id"] != "key-tier" || tbl["rpm_limit"] != 1.0 {
			t.Fatalf("key/generate with budget_id: %d %v", s, out)
		}
		k2 := out["key"].(string)
		if s, out := e.chat(k2, "gpt-4"); s != 200 {
			t.Fatalf("key with a budget, first request: %d %v", s, out)
		}
		if s, out := e.chat(k2, "gpt-4"); s != 429 {
			t.Fatalf("key with a budget of rpm 1, second request: %d %v, want 429", s, out)
		}
		// A key's own limit outranks its budget's.
		k3 := e.generate(`{"budget_id": "key-tier", "rpm_limit": 5}`)
		for i := range 2 {
			if s, out := e.chat(k3, "gpt-4"); s != 200 {
				t.Fatalf("key with rpm 5 and a budget of rpm 1, request %d: %d %v", i, s, out)
			}
		}
		// Taking the budget off the key lifts its limit.
		if s, out := e.do("POST", "/key/update", "sk-1234", `{"key": "`+k2+`", "budget_id": null}`); s != 200 {
			t.Fatalf("key/update budget_id null: %d %v", s, out)
		}
		if s, out := e.chat(k2, "gpt-4"); s != 200 {
			t.Fatalf("key without its budget: %d %v", s, out)
		}

		// A budget's model_max_budget binds its keys per model.
		e.do("POST", "/budget/new", "sk-1234", `{"budget_id": "no-gpt-4", "model_max_budget": {"gpt-4": {"max_budget": 0}}}`)
		k4 := e.generate(`{"budget_id": "no-gpt-4"}`)
		if s, out := e.chat(k4, "gpt-4"); s != 400 || !strings.Contains(toJSON(out), "budget_exceeded") {
			t.Fatalf("key whose budget gives gpt-4 nothing: %d %v, want 400 budget_exceeded", s, out)
		}
		if s, out := e.chat(k4, "gpt-3.5-turbo"); s != 200 {
			t.Fatalf("key whose budget leaves gpt-3.5-turbo alone: %d %v", s, out)
		}

		// A team membership's budget binds the member's keys in that team.
		e.do("POST", "/budget/new", "sk-1234", `{"budget_id": "member-tier", "rpm_limit": 1}`)
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "squad", "members_with_roles": [{"user_id": "ann", "role": "user", "budget_id": "member-tier"}, {"user_id": "bob", "role": "user"}]}`); s != 200 {
			t.Fatalf("team with a member budget: %d %v", s, out)
		}
		e.newUser("ann", "internal_user")
		e.newUser("bob", "internal_user")
		ann := e.generate(`{"user_id": "ann", "team_id": "squad"}`)
		bob := e.generate(`{"user_id": "bob", "team_id": "squad"}`)
		if s, out := e.chat(ann, "gpt-4"); s != 200 {
			t.Fatalf("member with a budget, first request: %d %v", s, out)
		}
		if s, out := e.chat(ann, "gpt-4"); s != 429 || !strings.Contains(errMessage(out), "ann") {
			t.Fatalf("member with a budget of rpm 1, second request: %d %v, want 429", s, out)
		}
		for range 2 {
			if s, out := e.chat(bob, "gpt-4"); s != 200 {
				t.Fatalf("member without a budget: %d %v", s, out)
			}
		}
		e.do("POST", "/budget/update", "sk-1234", `{"budget_id": "member-tier", "rpm_limit": 100, "max_budget": 0}`)
		if s, out := e.chat(ann, "gpt-4"); s != 400 || !strings.Contains(errMessage(out), "team_member") {
			t.Fatalf("member over her membership's max_budget: %d %v, want 400 naming team_member", s, out)
		}
		if s, out := e.do("POST", "/budget/delete", "sk-1234", `{"id": "member-tier"}`); s != 400 || !strings.Contains(errMessage(out), "team squad") {
			t.Fatalf("deleting a membership's budget: %d %v", s, out)
		}
	})
}

// TestOrganizations: teams under an organization keep within its models
// and limits; its budget bounds all its teams' spend together; deleting it
// deletes its teams.
func TestOrganizations(t *testing.T) {
	engines(t, orgConfig, func(t *testing.T, e *env) {
		s, out := e.do("POST", "/organization/new", "sk-1234", `{"organization_id": "acme", "organization_alias": "Acme", "models": ["gpt-4", "gpt-3.5-turbo"], "max_budget": 5, "tpm_limit": 1000}`)
		tbl, _ := out["litellm_budget_table"].(map[string]any)
		if s != 200 || out["organization_alias"] != "Acme" || out["budget_id"] == nil || tbl["max_budget"] != 5.0 {
			t.Fatalf("organization/new: %d %v", s, out)
		}
		for _, tt := range []struct{ name, path, body, param string }{
			{"no alias", "/organization/new", `{"organization_id": "x"}`, "organization_alias"},
			{"budget and limits", "/organization/new", `{"organization_alias": "X", "budget_id": "` + out["budget_id"].(string) + `", "max_budget": 3}`, "budget_id"},
			{"missing budget", "/organization/new", `{"organization_alias": "X", "budget_id": "nope"}`, "budget_id"},
			{"taken id", "/organization/new", `{"organization_id": "acme", "organization_alias": "X"}`, "organization_id"},
			{"team model outside the org's", "/team/new", `{"team_id": "t-bad", "organization_id": "acme", "models": ["my-free-tier"]}`, "models"},
			{"team budget above the org's", "/team/new", `{"team_id": "t-bad", "organization_id": "acme", "max_budget": 50}`, "max_budget"},
			{"team tpm above the org's", "/team/new", `{"team_id": "t-bad", "organization_id": "acme", "tpm_limit": 5000}`, "tpm_limit"},
			{"team in a missing org", "/team/new", `{"team_id": "t-bad", "organization_id": "nope"}`, "organization_id"},
			{"bad member role", "/organization/member_add", `{"organization_id": "acme", "member": {"user_id": "x", "role": "admin"}}`, "role"},
			{"member without id", "/organization/member_add", `{"organization_id": "acme", "member": {"role": "internal_user"}}`, "member"},
		} {
			before, _, _ := e.store.ListOrganizations(context.Background(), store.Page{})
			s, out := e.do("POST", tt.path, "sk-1234", tt.body)
			if (s != 400 && s != 404) || errParam(out) != tt.param {
				t.Errorf("%s: %d %v, want a 400/404 naming %s", tt.name, s, out, tt.param)
			}
			after, _, _ := e.store.ListOrganizations(context.Background(), store.Page{})
			if toJSON(before) != toJSON(after) {
				t.Errorf("%s: refused call changed organizations", tt.name)
			}
			if _, err := e.store.GetTeam(context.Background(), "t-bad"); err == nil {
				t.Fatalf("%s: refused call created the team", tt.name)
			}
		}
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "eng", "organization_id": "acme", "models": ["gpt-4"], "max_budget": 4}`); s != 200 || out["organization_id"] != "acme" {
			t.Fatalf("team in acme: %d %v", s, out)
		}
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "ops", "organization_id": "acme"}`); s != 200 {
			t.Fatalf("team in acme without models: %d %v", s, out)
		}
		// The organization's models bound a team that names none.
		ops := e.generate(`{"team_id": "ops"}`)
		if s, out := e.chat(ops, "my-free-tier"); s != 403 && s != 401 {
			t.Fatalf("model outside the organization's: %d %v, want 403", s, out)
		}
		if s, out := e.chat(ops, "gpt-3.5-turbo"); s != 200 {
			t.Fatalf("model in the organization's: %d %v", s, out)
		}
		// The organization's rpm_limit binds its teams together.
		if s, out := e.do("POST", "/organization/new", "sk-1234", `{"organization_id": "slow", "organization_alias": "Slow", "rpm_limit": 1}`); s != 200 {
			t.Fatalf("organization with rpm 1: %d %v", s, out)
		}
		e.do("POST", "/team/new", "sk-1234", `{"team_id": "slow-a", "organization_id": "slow"}`)
		e.do("POST", "/team/new", "sk-1234", `{"team_id": "slow-b", "organization_id": "slow"}`)
		if s, out := e.chat(e.generate(`{"team_id": "slow-a"}`), "gpt-4"); s != 200 {
			t.Fatalf("first request of organization slow: %d %v", s, out)
		}
		if s, out := e.chat(e.generate(`{"team_id": "slow-b"}`), "gpt-4"); s != 429 || !strings.Contains(errMessage(out), "organization slow") {
			t.Fatalf("second request of organization slow, from another team: %d %v, want 429", s, out)
		}
		// Narrowing the organization's models below a team's is refused.
		if s, out := e.do("PATCH", "/organization/update", "sk-1234", `{"organization_id": "acme", "models": ["gpt-3.5-turbo"]}`); s != 400 || errParam(out) != "models" {
			t.Fatalf("narrowing below team eng's models: %d %v", s, out)
		}
		// Spend reaches the organization; its budget refuses once spent.
		deadline := time.Now().Add(20 * time.Second)
		for {
			o, err := e.store.GetOrganization(context.Background(), "acme")
			if err != nil {
				t.Fatal(err)
			}
			if o.Spend > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("organization spend never reached the store: %v", o.Spend)
			}
			time.Sleep(20 * time.Millisecond)
		}
		s, out = e.do("GET", "/organization/info?organization_id=acme", "sk-1234", "")
		if s != 200 || out["spend"].(float64) <= 0 || len(out["teams"].([]any)) != 2 {
			t.Fatalf("organization/info: %d %v", s, out)
		}
		budgetID := out["budget_id"].(string)
		if s, out := e.do("POST", "/budget/update", "sk-1234", `{"budget_id": "`+budgetID+`", "max_budget": 0}`); s != 200 {
			t.Fatalf("budget/update: %d %v", s, out)
		}
		s, out = e.chat(ops, "gpt-3.5-turbo")
		if s != 400 || !strings.Contains(errMessage(out), "organization") {
			t.Fatalf("request of a team whose organization is out of budget: %d %v, want 400 naming the organization", s, out)
		}
		// An operator's spend edit on the organization reaches its account.
		o, _ := e.store.GetOrganization(context.Background(), "acme")
		e.do("POST", "/budget/update", "sk-1234", fmt.Sprintf(`{"budget_id": "%s", "max_budget": %v}`, budgetID, o.Spend))
		if s, out := e.chat(ops, "gpt-3.5-turbo"); s != 400 {
			t.Fatalf("organization at its budget: %d %v", s, out)
		}
		if s, out := e.do("PATCH", "/organization/update", "sk-1234", `{"organization_id": "acme", "spend": 0}`); s != 200 || out["spend"] != 0.0 {
			t.Fatalf("spend reset: %d %v", s, out)
		}
		if s, out := e.chat(ops, "gpt-3.5-turbo"); s != 200 {
			t.Fatalf("organization after its spend was reset: %d %v", s, out)
		}
		// Blocking the organization blocks its teams' keys.
		e.do("POST", "/budget/update", "sk-1234", `{"budget_id": "`+budgetID+`", "max_budget": 100}`)
		if s, out := e.do("PATCH", "/organization/update", "sk-1234", `{"organization_id": "acme", "blocked": true}`); s != 200 {
			t.Fatalf("block: %d %v", s, out)
		}
		if s, out := e.chat(ops, "gpt-3.5-turbo"); s != 401 && s != 403 {
			t.Fatalf("key of a blocked organization: %d %v", s, out)
		}
		// Deleting the organization deletes its teams and their keys.
		if s, out := e.do("DELETE", "/organization/delete", "sk-1234", `{"organization_ids": ["acme"]}`); s != 200 {
			t.Fatalf("organization/delete: %d %v", s, out)
		}
		if _, err := e.store.GetTeam(context.Background(), "eng"); err == nil {
			t.Fatal("team eng outlived its organization")
		}
		if s, _ := e.chat(ops, "gpt-3.5-turbo"); s != 401 {
			t.Fatalf("key of a deleted organization's team: %d", s)
		}
	})
}

// TestOrgRoutesByRole tries every budget and organization route, and the
// team routes an org_admin gains, as each role: proxy_admin, the two
// viewers, an internal_user member, an org_admin of the organization and an
// org_admin of another one.
func TestOrgRoutesByRole(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		type want struct{ member, viewer, adminViewer, orgAdmin, otherOrgAdmin, admin int }
		tests := []struct {
			name, method, path, body string // {u}: the caller's name; {o}: the organization of this run
			want                     want
		}{
			{"budget/new", "POST", "/budget/new", `{"budget_id": "b-{u}", "max_budget": 1}`, want{403, 403, 403, 403, 403, 200}},
			{"budget/update", "POST", "/budget/update", `{"budget_id": "{o}-b", "max_budget": 2}`, want{403, 403, 403, 403, 403, 200}},
			{"budget/info", "POST", "/budget/info", `{"budgets": ["{o}-b"]}`, want{403, 403, 200, 403, 403, 200}},
			{"budget/list", "GET", "/budget/list", ``, want{403, 403, 200, 403, 403, 200}},
			{"budget/delete", "POST", "/budget/delete", `{"id": "{o}-spare"}`, want{403, 403, 403, 403, 403, 200}},
			{"organization/new", "POST", "/organization/new", `{"organization_alias": "x-{u}"}`, want{403, 403, 403, 403, 403, 200}},
			{"organization/update", "PATCH", "/organization/update", `{"organization_id": "{o}", "metadata": {"a": 1}}`, want{403, 403, 403, 403, 403, 200}},
			{"organization/info", "GET", "/organization/info?organization_id={o}", ``, want{403, 403, 200, 200, 403, 200}},
			{"organization/list", "GET", "/organization/list", ``, want{200, 200, 200, 200, 200, 200}},
			{"organization/info (POST)", "POST", "/organization/info", `{"organizations": ["{o}"]}`, want{403, 403, 200, 200, 403, 200}},
			{"member_add user", "POST", "/organization/member_add", `{"organization_id": "{o}", "member": {"user_id": "new-{u}", "role": "internal_user"}}`, want{403, 403, 403, 200, 403, 200}},
			{"member_add org_admin", "POST", "/organization/member_add", `{"organization_id": "{o}", "member": {"user_id": "boss-{u}", "role": "org_admin"}}`, want{403, 403, 403, 403, 403, 200}},
			{"member_update user", "PATCH", "/organization/member_update", `{"organization_id": "{o}", "user_id": "{o}-plain", "role": "internal_user_viewer"}`, want{403, 403, 403, 200, 403, 200}},
			{"member_update to org_admin", "PATCH", "/organization/member_update", `{"organization_id": "{o}", "user_id": "{o}-plain2", "role": "org_admin"}`, want{403, 403, 403, 403, 403, 200}},
			{"member_delete user", "DELETE", "/organization/member_delete", `{"organization_id": "{o}", "user_id": "{o}-plain3"}`, want{403, 403, 403, 200, 403, 200}},
			{"member_delete org_admin", "DELETE", "/organization/member_delete", `{"organization_id": "{o}", "user_id": "{o}-admin2"}`, want{403, 403, 403, 403, 403, 200}},
			{"organization/delete", "DELETE", "/organization/delete", `{"organization_ids": ["{o}-gone"]}`, want{403, 403, 403, 403, 403, 200}},
			{"team/new in the org", "POST", "/team/new", `{"team_id": "t-{u}", "organization_id": "{o}", "models": ["gpt-4"]}`, want{403, 403, 403, 200, 403, 200}},
			{"team/new without org", "POST", "/team/new", `{"team_id": "t2-{u}"}`, want{403, 403, 403, 403, 403, 200}},
			{"team/new setting spend", "POST", "/team/new", `{"team_id": "t3-{u}", "organization_id": "{o}", "spend": 5}`, want{403, 403, 403, 403, 403, 200}},
			{"team/update in the org", "POST", "/team/update", `{"team_id": "{o}-team", "max_budget": 2}`, want{403, 403, 403, 200, 403, 200}},
			{"team/update out of the org", "POST", "/team/update", `{"team_id": "{o}-team", "organization_id": ""}`, want{403, 403, 403, 403, 403, 200}},
			{"team/info in the org", "GET", "/team/info?team_id={o}-team", ``, want{403, 403, 200, 200, 403, 200}},
			{"team/member_add in the org", "POST", "/team/member_add", `{"team_id": "{o}-team", "member": {"user_id": "m-{u}", "role": "admin"}}`, want{403, 403, 403, 200, 403, 200}},
			{"team/block in the org", "POST", "/team/block", `{"team_id": "{o}-team"}`, want{403, 403, 403, 200, 403, 200}},
			{"team/delete in the org", "POST", "/team/delete", `{"team_ids": ["{o}-team2"]}`, want{403, 403, 403, 200, 403, 200}},
		}
		callers := []string{"member", "viewer", "adminViewer", "orgAdmin", "otherOrgAdmin", "admin"}
		for _, caller := range callers {
			o := "org-" + caller
			mk := func(path, body string) {
				if s, out := e.do("POST", path, "sk-1234", body); s != 200 {
					t.Fatalf("setup %s %s: %d %v", path, body, s, out)
				}
			}
			mk("/budget/new", `{"budget_id": "`+o+`-b", "max_budget": 10}`)
			mk("/budget/new", `{"budget_id": "`+o+`-spare"}`)
			mk("/organization/new", `{"organization_id": "`+o+`", "organization_alias": "O", "models": ["gpt-4"], "budget_id": "`+o+`-b"}`)
			mk("/organization/new", `{"organization_id": "`+o+`-gone", "organization_alias": "G"}`)
			mk("/organization/new", `{"organization_id": "`+o+`-other", "organization_alias": "P"}`)
			mk("/team/new", `{"team_id": "`+o+`-team", "organization_id": "`+o+`"}`)
			mk("/team/new", `{"team_id": "`+o+`-team2", "organization_id": "`+o+`"}`)
			for _, m := range []string{"plain", "plain2", "plain3"} {
				mk("/organization/member_add", `{"organization_id": "`+o+`", "member": {"user_id": "`+o+`-`+m+`", "role": "internal_user"}}`)
			}
			mk("/organization/member_add", `{"organization_id": "`+o+`", "member": {"user_id": "`+o+`-admin2", "role": "org_admin"}}`)
			var key string
			switch caller {
			case "admin":
				key = "sk-1234"
			case "viewer":
				key = e.newUser(o+"-caller", "internal_user_viewer")
			case "adminViewer":
				key = e.newUser(o+"-caller", "proxy_admin_viewer")
			default:
				key = e.newUser(o+"-caller", "internal_user")
			}
			switch caller {
			case "member":
				mk("/organization/member_add", `{"organization_id": "`+o+`", "member": {"user_id": "`+o+`-caller", "role": "internal_user"}}`)
			case "viewer":
				mk("/organization/member_add", `{"organization_id": "`+o+`", "member": {"user_id": "`+o+`-caller", "role": "internal_user_viewer"}}`)
			case "orgAdmin":
				mk("/organization/member_add", `{"organization_id": "`+o+`", "member": {"user_id": "`+o+`-caller", "role": "org_admin"}}`)
			case "otherOrgAdmin":
				mk("/organization/member_add", `{"organization_id": "`+o+`-other", "member": {"user_id": "`+o+`-caller", "role": "org_admin"}}`)
			}
			for _, tt := range tests {
				t.Run(caller+"/"+tt.name, func(t *testing.T) {
					r := strings.NewReplacer("{u}", caller, "{o}", o)
					before := e.orgState(o)
					s, out := e.do(tt.method, r.Replace(tt.path), key, r.Replace(tt.body))
					exp := map[string]int{"member": tt.want.member, "viewer": tt.want.viewer, "adminViewer": tt.want.adminViewer,
						"orgAdmin": tt.want.orgAdmin, "otherOrgAdmin": tt.want.otherOrgAdmin, "admin": tt.want.admin}[caller]
					if s != exp {
						t.Fatalf("%d %v, want %d", s, out, exp)
					}
					if s != 200 && e.orgState(o) != before {
						t.Fatalf("refused call changed state:\n%s\n%s", before, e.orgState(o))
					}
				})
			}
		}
	})
}

// orgState is the stored state a refused organization call must not change.
func (e *env) orgState(o string) string {
	ctx := context.Background()
	var parts []string
	for _, id := range []string{o, o + "-gone", o + "-other"} {
		org, err := e.store.GetOrganization(ctx, id)
		if err == nil {
			org.UpdatedAt = time.Time{}
		}
		parts = append(parts, toJSON(org))
	}
	for _, id := range []string{o + "-b", o + "-spare"} {
		b, err := e.store.GetBudget(ctx, id)
		if err == nil {
			b.UpdatedAt = time.Time{}
		}
		parts = append(parts, toJSON(b))
	}
	for _, id := range []string{o + "-team", o + "-team2"} {
		t, err := e.store.GetTeam(ctx, id)
		if err == nil {
			t.UpdatedAt = time.Time{}
		}
		parts = append(parts, toJSON(t))
	}
	return strings.Join(parts, "\n")
}

// TestBudgetIDByRole: budget_id is a proxy_admin's field on keys, end users
// and team memberships; a team admin may not set a member's.
func TestBudgetIDByRole(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		e.do("POST", "/budget/new", "sk-1234", `{"budget_id": "gold", "rpm_limit": 1000}`)
		e.do("POST", "/team/new", "sk-1234", `{"team_id": "eng", "members_with_roles": [{"user_id": "lead", "role": "admin"}]}`)
		type want struct{ internal, internalViewer, adminViewer, admin int }
		tests := []struct {
			name, path, body string // {u}: the caller's user id; {k}: a spare key of hers
			want             want
		}{
			{"key/generate with budget_id", "/key/generate", `{"user_id": "{u}", "budget_id": "gold"}`, want{403, 403, 403, 200}},
			{"key/update budget_id", "/key/update", `{"key": "{k}", "budget_id": "gold"}`, want{403, 403, 403, 200}},
			{"customer/new with budget_id", "/customer/new", `{"user_id": "c-{u}", "budget_id": "gold"}`, want{403, 403, 403, 200}},
			{"customer/update budget_id", "/customer/update", `{"user_id": "c0", "budget_id": "gold"}`, want{403, 403, 403, 200}},
		}
		e.do("POST", "/customer/new", "sk-1234", `{"user_id": "c0"}`)
		for _, role := range []string{"internal_user", "internal_user_viewer", "proxy_admin_viewer", "proxy_admin"} {
			u := "caller-" + role
			key := e.newUser(u, role)
			for _, tt := range tests {
				t.Run(role+"/"+tt.name, func(t *testing.T) {
					spare := e.generate(`{"user_id": "` + u + `"}`)
					r := strings.NewReplacer("{u}", u, "{k}", spare)
					before := e.record(sha(spare))
					s, out := e.do("POST", tt.path, key, r.Replace(tt.body))
					exp := map[string]int{"internal_user": tt.want.internal, "internal_user_viewer": tt.want.internalViewer,
						"proxy_admin_viewer": tt.want.adminViewer, "proxy_admin": tt.want.admin}[role]
					if s != exp {
						t.Fatalf("%d %v, want %d", s, out, exp)
					}
					if s != 200 && e.record(sha(spare)) != before {
						t.Fatal("refused call changed the key")
					}
				})
			}
		}
		lead := e.newUser("lead", "internal_user")
		s, out := e.do("POST", "/team/member_add", lead, `{"team_id": "eng", "member": {"user_id": "dev", "role": "user", "budget_id": "gold"}}`)
		if s != 403 {
			t.Fatalf("team admin setting a member's budget_id: %d %v", s, out)
		}
		if tm, _ := e.store.GetTeam(context.Background(), "eng"); len(tm.Members) != 1 {
			t.Fatalf("refused member_add changed members: %v", tm.Members)
		}
		if s, out := e.do("POST", "/team/member_add", lead, `{"team_id": "eng", "member": {"user_id": "dev", "role": "user"}}`); s != 200 {
			t.Fatalf("team admin adding a plain member: %d %v", s, out)
		}
	})
}
