package admin_test

import (
	"context"
	"slices"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

// teamsOf is the user's stored teams.
func (e *env) teamsOf(id string) []string {
	e.t.Helper()
	u, err := e.store.GetUser(context.Background(), id)
	if err != nil {
		e.t.Fatalf("user %s: %v", id, err)
	}
	return u.Teams
}

// TestMembershipIsWrittenBothWays: every route that changes a team's
// members changes its members' users' teams too, as LiteLLM keeps them;
// members may be named by email; /user/info shows the teams as objects
// with the user's memberships and their budget table.
func TestMembershipIsWrittenBothWays(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		e.newUser("alice", "internal_user", `, "user_email": "alice@x.io"`)
		e.newUser("bob", "internal_user")
		e.newUser("erin", "internal_user", `, "user_email": "erin@x.io"`)
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "eng", "team_alias": "Engineering", "members_with_roles": [{"user_id": "alice", "role": "admin"}]}`); s != 200 {
			t.Fatalf("team/new: %d %v", s, out)
		}
		if got := e.teamsOf("alice"); !slices.Equal(got, []string{"eng"}) {
			t.Fatalf("team/new did not reach alice's teams: %v", got)
		}
		// By email: the user is found.
		if s, out := e.do("POST", "/team/member_add", "sk-1234", `{"team_id": "eng", "member": [{"user_email": "erin@x.io", "role": "admin"}, {"user_id": "bob", "role": "user"}], "max_budget_in_team": 2.5}`); s != 200 ||
			len(out["updated_users"].([]any)) != 2 || len(out["updated_team_memberships"].([]any)) != 2 {
			t.Fatalf("member_add: %d %v", s, out)
		}
		if got := e.teamsOf("bob"); !slices.Equal(got, []string{"eng"}) {
			t.Fatalf("member_add did not reach bob's teams: %v", got)
		}
		tm, _ := e.store.GetTeam(context.Background(), "eng")
		if len(tm.Members) != 3 || !slices.ContainsFunc(tm.Members, func(m store.TeamMember) bool { return m.UserID == "erin" }) {
			t.Fatalf("erin by email is not a member by her user_id: %v", tm.Members)
		}
		// A member added again is a 400 (LiteLLM's), and nothing changes.
		if s, out := e.do("POST", "/team/member_add", "sk-1234", `{"team_id": "eng", "member": {"user_email": "alice@x.io", "role": "user"}}`); s != 400 {
			t.Fatalf("member_add of a member: %d %v", s, out)
		}
		if again, _ := e.store.GetTeam(context.Background(), "eng"); !slices.Equal(again.Members, tm.Members) {
			t.Fatalf("a refused member_add changed the members: %v", again.Members)
		}
		// By an unknown user_id: the user is created, as LiteLLM does.
		if s, out := e.do("POST", "/team/member_add", "sk-1234", `{"team_id": "eng", "member": {"user_id": "zed", "role": "user"}}`); s != 200 {
			t.Fatalf("member_add of an unknown user_id: %d %v", s, out)
		}
		if _, err := e.store.GetUser(context.Background(), "zed"); err != nil {
			t.Fatalf("member_add of an unknown user_id made no user: %v", err)
		}
		// By email: the user is created.
		s, out := e.do("POST", "/team/member_add", "sk-1234", `{"team_id": "eng", "member": {"user_email": "carol@x.io", "role": "user"}}`)
		if s != 200 {
			t.Fatalf("member_add of a new email: %d %v", s, out)
		}
		tm, _ = e.store.GetTeam(context.Background(), "eng")
		carol := tm.Members[len(tm.Members)-1]
		if carol.UserEmail != "carol@x.io" || carol.UserID == "" {
			t.Fatalf("new member by email: %+v", carol)
		}
		if got := e.teamsOf(carol.UserID); !slices.Equal(got, []string{"eng"}) {
			t.Fatalf("created user's teams: %v", got)
		}

		// /user/info: team objects, with her membership and its budget.
		s, out = e.do("GET", "/user/info?user_id=bob", "sk-1234", "")
		teams, _ := out["teams"].([]any)
		if s != 200 || len(teams) != 1 {
			t.Fatalf("user/info: %d %v", s, out)
		}
		team := teams[0].(map[string]any)
		tms, _ := team["team_memberships"].([]any)
		if team["team_id"] != "eng" || team["team_alias"] != "Engineering" || len(tms) != 1 {
			t.Fatalf("user/info team: %v", team)
		}
		m := tms[0].(map[string]any)
		budget, _ := m["litellm_budget_table"].(map[string]any)
		if m["user_id"] != "bob" || m["team_id"] != "eng" || m["spend"] != 0.0 || budget["max_budget"] != 2.5 || m["budget_id"] != budget["budget_id"] || m["budget_id"] == "" {
			t.Fatalf("user/info membership: %v", m)
		}
		// /team/info lists every membership with a budget.
		_, out = e.do("GET", "/team/info?team_id=eng", "sk-1234", "")
		if tms, _ := out["team_memberships"].([]any); len(tms) != 2 {
			t.Fatalf("team/info team_memberships: %v", out["team_memberships"])
		}

		// member_update by email: role and budget.
		s, out = e.do("POST", "/team/member_update", "sk-1234", `{"team_id": "eng", "user_email": "carol@x.io", "role": "admin", "max_budget_in_team": 1}`)
		if s != 200 || out["user_id"] != carol.UserID || out["max_budget_in_team"] != 1.0 || out["team_id"] != "eng" {
			t.Fatalf("member_update: %d %v", s, out)
		}
		tm, _ = e.store.GetTeam(context.Background(), "eng")
		if b, ok := tm.MemberBudget(carol.UserID); !ok || b.MaxBudget != 1 || tm.Members[len(tm.Members)-1].Role != "admin" {
			t.Fatalf("after member_update: %+v %+v", tm.Members, tm.MemberBudgets)
		}

		// Leaving takes the team off her user, and her budget with her.
		if s, out := e.do("POST", "/team/member_delete", "sk-1234", `{"team_id": "eng", "user_id": "bob"}`); s != 200 {
			t.Fatalf("member_delete: %d %v", s, out)
		}
		if got := e.teamsOf("bob"); len(got) != 0 {
			t.Fatalf("member_delete left bob's teams %v", got)
		}
		tm, _ = e.store.GetTeam(context.Background(), "eng")
		if _, ok := tm.MemberBudget("bob"); ok {
			t.Fatalf("bob's budget outlived his membership: %+v", tm.MemberBudgets)
		}
		if s, out := e.do("POST", "/team/member_delete", "sk-1234", `{"team_id": "eng", "user_id": "bob"}`); s != 400 {
			t.Fatalf("deleting a non-member: %d %v, want 400", s, out)
		}
		// /team/update's members_with_roles, both ways.
		if s, out := e.do("POST", "/team/update", "sk-1234", `{"team_id": "eng", "members_with_roles": [{"user_id": "bob", "role": "user"}]}`); s != 200 {
			t.Fatalf("team/update: %d %v", s, out)
		}
		if a, b := e.teamsOf("alice"), e.teamsOf("bob"); len(a) != 0 || !slices.Equal(b, []string{"eng"}) {
			t.Fatalf("team/update members: alice %v bob %v", a, b)
		}
		// A user created after the team that lists her gets it.
		e.do("POST", "/team/update", "sk-1234", `{"team_id": "eng", "members_with_roles": [{"user_id": "bob", "role": "user"}, {"user_id": "dave", "role": "user"}]}`)
		e.newUser("dave", "internal_user")
		if got := e.teamsOf("dave"); !slices.Equal(got, []string{"eng"}) {
			t.Fatalf("user created after her team: %v", got)
		}
		// Deleting the team takes it off every member.
		if s, out := e.do("POST", "/team/delete", "sk-1234", `{"team_ids": ["eng"]}`); s != 200 {
			t.Fatalf("team/delete: %d %v", s, out)
		}
		if b, d := e.teamsOf("bob"), e.teamsOf("dave"); len(b)+len(d) != 0 {
			t.Fatalf("team/delete left bob %v dave %v", b, d)
		}
	})
}

// TestTeamCreatorIsItsAdmin: a proxy_admin user who creates a team is its
// admin member (as in LiteLLM); the master key is no member of anything.
func TestTeamCreatorIsItsAdmin(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		boss := e.newUser("boss", "proxy_admin")
		if s, out := e.do("POST", "/team/new", boss, `{"team_id": "mine", "model_aliases": {"fast": "gpt-3.5-turbo"}}`); s != 200 ||
			out["litellm_model_table"].(map[string]any)["model_aliases"].(map[string]any)["fast"] != "gpt-3.5-turbo" {
			t.Fatalf("team/new by a user: %d %v", s, out)
		}
		tm, _ := e.store.GetTeam(context.Background(), "mine")
		if toJSON(tm.Members) != `[{"user_id":"boss","role":"admin"}]` {
			t.Fatalf("creator's membership: %v", tm.Members)
		}
		if got := e.teamsOf("boss"); !slices.Equal(got, []string{"mine"}) {
			t.Fatalf("creator's teams: %v", got)
		}
		e.do("POST", "/team/new", "sk-1234", `{"team_id": "theirs", "members_with_roles": [{"user_email": "erin@x.io"}]}`)
		tm, _ = e.store.GetTeam(context.Background(), "theirs")
		if len(tm.Members) != 1 || tm.Members[0].UserEmail != "erin@x.io" || tm.Members[0].Role != "user" || tm.Members[0].UserID == "" {
			t.Fatalf("the master key became a member, or the member by email is not hers: %v", tm.Members)
		}
		if got := e.teamsOf(tm.Members[0].UserID); !slices.Equal(got, []string{"theirs"}) {
			t.Fatalf("user created by team/new's email: teams %v", got)
		}
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "theirs"}`); s != 400 {
			t.Fatalf("a taken team_id: %d %v", s, out)
		}
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "bad", "model_aliases": {"x": ""}}`); s != 400 || errParam(out) != "model_aliases" {
			t.Fatalf("an empty alias: %d %v", s, out)
		}
		if _, err := e.store.GetTeam(context.Background(), "bad"); err != store.ErrNotFound {
			t.Fatalf("a refused team/new wrote the team: %v", err)
		}
	})
}

// TestUserUpdateCreates: /user/update of an unknown user_id creates the user,
// as LiteLLM's upsert does; bad input still creates nothing.
func TestUserUpdateCreates(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		if s, out := e.do("POST", "/user/update", "sk-1234", `{"user_id": "ghost", "user_role": "nope"}`); s != 400 {
			t.Fatalf("bad role: %d %v", s, out)
		}
		if _, err := e.store.GetUser(context.Background(), "ghost"); err != store.ErrNotFound {
			t.Fatalf("a refused update created the user: %v", err)
		}
		s, out := e.do("POST", "/user/update", "sk-1234", `{"user_id": "ghost", "max_budget": 7, "user_email": "g@x.io", "spend": 1.5}`)
		if s != 200 || out["user_id"] != "ghost" || out["max_budget"] != 7.0 || out["spend"] != 1.5 {
			t.Fatalf("update of an unknown user: %d %v", s, out)
		}
		u, err := e.store.GetUser(context.Background(), "ghost")
		if err != nil || u.UserEmail != "g@x.io" || u.Spend != 1.5 || u.UserRole != "internal_user" {
			t.Fatalf("stored: %+v %v", u, err)
		}
	})
}

// TestMemberRoutesRefuseBadInput: bad input to the member routes is a 400
// naming the field, and changes neither the team nor any user.
func TestMemberRoutesRefuseBadInput(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		e.newUser("alice", "internal_user")
		e.do("POST", "/team/new", "sk-1234", `{"team_id": "eng", "members_with_roles": [{"user_id": "alice", "role": "user"}]}`)
		tests := []struct{ path, body, param string }{
			{"/team/member_update", `{"team_id": "eng", "user_id": "alice", "role": "boss"}`, "role"},
			{"/team/member_update", `{"team_id": "eng", "user_id": "alice", "max_budget_in_team": -1}`, "max_budget_in_team"},
			{"/team/member_update", `{"team_id": "eng", "user_id": "alice", "max_budget_in_team": "5"}`, "max_budget_in_team"},
			{"/team/member_update", `{"team_id": "eng", "user_id": "alice", "budget": 5}`, "budget"},
			{"/team/member_update", `{"team_id": "eng"}`, "user_id"},
			{"/team/member_add", `{"team_id": "eng", "member": {"user_email": "b@x.io", "role": "user"}, "max_budget_in_team": -2}`, "max_budget_in_team"},
			{"/team/member_add", `{"team_id": "eng", "member": {"role": "user"}}`, "member"},
			{"/team/member_add", `{"team_id": "eng", "member": {"user_email": "b@x.io", "role": "user", "extra": 1}}`, "member"},
			{"/team/member_delete", `{"team_id": "eng"}`, "user_id"},
			{"/team/update", `{"team_id": "eng", "model_aliases": {"": "gpt-4"}}`, "model_aliases"},
		}
		before, _ := e.store.GetTeam(context.Background(), "eng")
		for _, tt := range tests {
			s, out := e.do("POST", tt.path, "sk-1234", tt.body)
			if s != 400 || errParam(out) != tt.param {
				t.Errorf("%s %s: %d %v, want 400 naming %s", tt.path, tt.body, s, out, tt.param)
			}
		}
		after, _ := e.store.GetTeam(context.Background(), "eng")
		before.UpdatedAt, after.UpdatedAt = before.UpdatedAt.UTC(), after.UpdatedAt.UTC()
		if toJSON(before) != toJSON(after) {
			t.Fatalf("refused calls changed the team:\n%s\n%s", toJSON(before), toJSON(after))
		}
		if _, out := e.do("GET", "/user/list", "sk-1234", ""); out["total"] != 1.0 {
			t.Fatalf("a refused member_add created a user: %v", out["total"])
		}
	})
}
