package admin_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/admin"
	"github.com/tollgate/tollgate/internal/store"
)

// newUser creates a user with role and returns the key /user/new made for it.
func (e *env) newUser(id, role string, extra ...string) string {
	e.t.Helper()
	body := `{"user_id": "` + id + `", "user_role": "` + role + `"` + strings.Join(extra, "") + `}`
	status, out := e.do("POST", "/user/new", "sk-1234", body)
	if status != 200 {
		e.t.Fatalf("user/new %s: %d %v", body, status, out)
	}
	return out["key"].(string)
}

// record is a key's stored record as JSON, without its update time.
func (e *env) record(hash string) string {
	e.t.Helper()
	k, err := e.store.GetKey(context.Background(), hash)
	if err != nil {
		return "absent: " + err.Error()
	}
	k.UpdatedAt = time.Time{}
	return toJSON(k)
}

func (e *env) spendOf(kind store.Kind, id string) float64 {
	e.t.Helper()
	switch kind {
	case store.KindTeam:
		t, err := e.store.GetTeam(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		return t.Spend
	}
	e.t.Fatalf("spendOf %s", kind)
	return 0
}

// TestTeamMembershipIsChecked: an internal_user may create a key in, move a
// key to, and read a team only when she is a member of it (listed in its
// members_with_roles, or the team listed in her user's teams).
func TestTeamMembershipIsChecked(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		for _, body := range []string{
			`{"team_id": "finance", "max_budget": 100, "members_with_roles": [{"user_id": "cfo", "role": "admin"}]}`,
			`{"team_id": "eng", "members_with_roles": [{"user_id": "alice", "role": "user"}]}`,
			`{"team_id": "ops"}`,
		} {
			if s, out := e.do("POST", "/team/new", "sk-1234", body); s != 200 {
				t.Fatalf("team/new: %d %v", s, out)
			}
		}
		alice := e.newUser("alice", "internal_user", `, "teams": ["ops"]`)

		// The attack: a key in a team she is not in, charged to that team.
		s, out := e.do("POST", "/key/generate", alice, `{"team_id": "finance"}`)
		if s == 200 {
			e.chat(out["key"].(string), "gpt-4")
			t.Fatalf("internal_user created a key in a foreign team (and charged it $%v)", e.spendOf(store.KindTeam, "finance"))
		}
		if s != 403 {
			t.Fatalf("key in a foreign team: %d %v, want 403", s, out)
		}
		if s, out := e.do("GET", "/team/info?team_id=finance", alice, ""); s != 403 {
			t.Fatalf("internal_user read a foreign team: %d %v", s, out)
		}
		if s, out := e.do("POST", "/key/update", alice, `{"key": "`+alice+`", "team_id": "finance"}`); s != 403 {
			t.Fatalf("internal_user moved her key into a foreign team: %d %v", s, out)
		}
		if s, out := e.do("POST", "/key/generate", alice, `{"team_id": "no-such-team"}`); s != 403 {
			t.Fatalf("internal_user created a key in a team that does not exist: %d %v", s, out)
		}

		// Members may: by members_with_roles (eng) and by her user's teams (ops).
		for _, team := range []string{"eng", "ops"} {
			s, out := e.do("POST", "/key/generate", alice, `{"team_id": "`+team+`"}`)
			if s != 200 || out["team_id"] != team {
				t.Fatalf("member's key in %s: %d %v", team, s, out)
			}
			if s, out := e.do("GET", "/team/info?team_id="+team, alice, ""); s != 200 {
				t.Fatalf("member reading %s: %d %v", team, s, out)
			}
		}
		if s, out := e.do("POST", "/key/update", alice, `{"key": "`+alice+`", "team_id": "eng"}`); s != 200 || out["team_id"] != "eng" {
			t.Fatalf("member moving her key into her team: %d %v", s, out)
		}
		if got := e.spendOf(store.KindTeam, "finance"); got != 0 {
			t.Fatalf("finance was charged $%v", got)
		}
		_, out = e.do("GET", "/key/list?team_id=finance", "sk-1234", "")
		if out["total_count"] != 0.0 {
			t.Fatalf("finance has keys: %v", out)
		}
	})
}

// TestTeamAdminManagesMembers: a team's admin member adds and removes plain
// members of that team only; she may not make admins, nor touch other teams.
func TestTeamAdminManagesMembers(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		e.do("POST", "/team/new", "sk-1234", `{"team_id": "eng", "members_with_roles": [{"user_id": "lead", "role": "admin"}, {"user_id": "dev", "role": "user"}, {"user_id": "lead2", "role": "admin"}, {"user_id": "vlead", "role": "admin"}]}`)
		e.do("POST", "/team/new", "sk-1234", `{"team_id": "finance", "members_with_roles": [{"user_id": "dev", "role": "user"}]}`)
		lead := e.newUser("lead", "internal_user")
		dev := e.newUser("dev", "internal_user")
		viewerLead := e.newUser("vlead", "internal_user_viewer")
		tests := []struct {
			name, key, path, body string
			status                int
		}{
			{"admin adds a user", lead, "/team/member_add", `{"team_id": "eng", "member": {"user_id": "new", "role": "user"}}`, 200},
			{"admin removes a user", lead, "/team/member_delete", `{"team_id": "eng", "user_id": "new"}`, 200},
			{"admin may not add an admin", lead, "/team/member_add", `{"team_id": "eng", "member": {"user_id": "x", "role": "admin"}}`, 403},
			{"admin may not promote a user", lead, "/team/member_add", `{"team_id": "eng", "member": {"user_id": "dev", "role": "admin"}}`, 403},
			{"admin may not remove an admin", lead, "/team/member_delete", `{"team_id": "eng", "user_id": "lead2"}`, 403},
			{"admin of eng may not edit finance", lead, "/team/member_add", `{"team_id": "finance", "member": {"user_id": "lead", "role": "user"}}`, 403},
			{"plain member may not add", dev, "/team/member_add", `{"team_id": "eng", "member": {"user_id": "y", "role": "user"}}`, 403},
			{"plain member may not remove", dev, "/team/member_delete", `{"team_id": "eng", "user_id": "lead"}`, 403},
			{"team admin may not update the team", lead, "/team/update", `{"team_id": "eng", "max_budget": 1000}`, 403},
			{"admin budgets a user", lead, "/team/member_update", `{"team_id": "eng", "user_id": "dev", "max_budget_in_team": 5}`, 200},
			{"admin keeps a user a user", lead, "/team/member_update", `{"team_id": "eng", "user_id": "dev", "role": "user"}`, 200},
			{"admin may not promote by update", lead, "/team/member_update", `{"team_id": "eng", "user_id": "dev", "role": "admin"}`, 403},
			{"admin may not budget an admin", lead, "/team/member_update", `{"team_id": "eng", "user_id": "lead2", "max_budget_in_team": 5}`, 403},
			{"admin of eng may not budget in finance", lead, "/team/member_update", `{"team_id": "finance", "user_id": "dev", "max_budget_in_team": 5}`, 403},
			{"plain member may not update", dev, "/team/member_update", `{"team_id": "eng", "user_id": "dev", "max_budget_in_team": 50}`, 403},
			{"viewer team admin may not update", viewerLead, "/team/member_update", `{"team_id": "eng", "user_id": "dev", "max_budget_in_team": 50}`, 403},
			{"viewer team admin may not add", viewerLead, "/team/member_add", `{"team_id": "eng", "member": {"user_id": "z", "role": "user"}}`, 403},
			{"admin adds by email", lead, "/team/member_add", `{"team_id": "eng", "member": {"user_email": "new@x.io", "role": "user"}, "max_budget_in_team": 2}`, 200},
			{"deleting a non-member is a 400", lead, "/team/member_delete", `{"team_id": "eng", "user_id": "ghost"}`, 400},
			{"a non-admin deleting a non-member is a 403", dev, "/team/member_delete", `{"team_id": "eng", "user_id": "ghost"}`, 403},
			{"updating a non-member is a 400", "sk-1234", "/team/member_update", `{"team_id": "eng", "user_id": "ghost", "role": "user"}`, 400},
			{"proxy_admin promotes by update", "sk-1234", "/team/member_update", `{"team_id": "eng", "user_id": "lead2", "role": "user", "max_budget_in_team": 1}`, 200},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before, _ := e.store.GetTeam(context.Background(), "eng")
				s, out := e.do("POST", tt.path, tt.key, tt.body)
				if s != tt.status {
					t.Fatalf("%d %v, want %d", s, out, tt.status)
				}
				after, _ := e.store.GetTeam(context.Background(), "eng")
				if s != 200 && (toJSON(before.Members) != toJSON(after.Members) || toJSON(before.MemberBudgets) != toJSON(after.MemberBudgets)) {
					t.Fatalf("refused call changed members: %v %v -> %v %v", before.Members, before.MemberBudgets, after.Members, after.MemberBudgets)
				}
			})
		}
	})
}

// TestOwnerCannotUndoAdminLimits tries every change an admin reserves, as a
// key's owner of each role: only proxy_admin may make them; a refusal
// changes nothing.
func TestOwnerCannotUndoAdminLimits(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		e.do("POST", "/team/new", "sk-1234", `{"team_id": "other"}`)
		roles := []struct {
			role  string
			admin bool
		}{{"internal_user", false}, {"app_owner", false}, {"internal_user_viewer", false}, {"proxy_admin_viewer", false}, {"proxy_admin", true}}
		// Each change is tried on a fresh key the admin made for the owner:
		// models [gpt-4, gpt-3.5-turbo], max_budget 1, rpm 5, spend 0.5, ...
		changes := []struct {
			name, path, body string // body: %s is the target key
		}{
			{"raise max_budget", "/key/update", `{"key": "%s", "max_budget": 100}`},
			{"drop max_budget", "/key/update", `{"key": "%s", "max_budget": null}`},
			{"raise soft_budget", "/key/update", `{"key": "%s", "soft_budget": 100}`},
			{"raise rpm_limit", "/key/update", `{"key": "%s", "rpm_limit": 1000}`},
			{"raise tpm_limit", "/key/update", `{"key": "%s", "tpm_limit": 1000000}`},
			{"raise max_parallel_requests", "/key/update", `{"key": "%s", "max_parallel_requests": 100}`},
			{"raise model_max_budget", "/key/update", `{"key": "%s", "model_max_budget": {"gpt-4": 100}}`},
			{"raise model_rpm_limit", "/key/update", `{"key": "%s", "model_rpm_limit": {"gpt-4": 1000}}`},
			{"raise model_tpm_limit", "/key/update", `{"key": "%s", "model_tpm_limit": {"gpt-4": 1000}}`},
			{"widen models", "/key/update", `{"key": "%s", "models": ["gpt-4", "gpt-3.5-turbo", "my-free-tier"]}`},
			{"clear models", "/key/update", `{"key": "%s", "models": []}`},
			{"alias to another model", "/key/update", `{"key": "%s", "aliases": {"gpt-4": "my-free-tier"}}`},
			{"reset spend", "/key/update", `{"key": "%s", "spend": 0}`},
			{"change budget_duration", "/key/update", `{"key": "%s", "budget_duration": "1s"}`},
			{"extend duration", "/key/update", `{"key": "%s", "duration": "3650d"}`},
			{"unblock through update", "/key/update", `{"key": "%s", "blocked": false}`},
			{"leave the team", "/key/update", `{"key": "%s", "team_id": ""}`},
			{"join a foreign team", "/key/update", `{"key": "%s", "team_id": "other"}`},
			{"move to another user", "/key/update", `{"key": "%s", "user_id": "someone"}`},
			{"unblock an admin's block", "/key/unblock", `{"key": "%s"}`},
			{"budget on regenerate", "/key/regenerate", `{"key": "%s", "max_budget": 100}`},
			{"relax an admin's strict mode", "/key/update", `{"key": "%s", "metadata": {"note": "mine", "guardrails": ["injection"], "max_input_tokens": 500}}`},
			{"remove a pinned guardrail", "/key/update", `{"key": "%s", "metadata": {"budget_enforcement": "strict", "max_input_tokens": 500}}`},
			{"clear guardrails", "/key/update", `{"key": "%s", "guardrails": []}`},
			{"lift max_input_tokens", "/key/update", `{"key": "%s", "metadata": {"budget_enforcement": "strict", "guardrails": ["injection"], "max_input_tokens": 100000}}`},
			{"drop max_input_tokens", "/key/update", `{"key": "%s", "metadata": {"budget_enforcement": "strict", "guardrails": ["injection"]}}`},
		}
		for _, r := range roles {
			owner := "owner-" + r.role
			ownKey := e.newUser(owner, r.role, `, "teams": ["t-`+owner+`"]`)
			e.do("POST", "/team/new", "sk-1234", `{"team_id": "t-`+owner+`", "members_with_roles": [{"user_id": "`+owner+`", "role": "user"}]}`)
			for _, c := range changes {
				t.Run(r.role+"/"+c.name, func(t *testing.T) {
					target := e.generate(`{"user_id": "` + owner + `", "team_id": "t-` + owner + `", "models": ["gpt-4", "gpt-3.5-turbo"], "max_budget": 1, "soft_budget": 0.5, "rpm_limit": 5, "tpm_limit": 500, "max_parallel_requests": 1, "budget_duration": "30d", "duration": "1d", "model_max_budget": {"gpt-4": 0.5}, "model_rpm_limit": {"gpt-4": 2}, "model_tpm_limit": {"gpt-4": 200}, "metadata": {"budget_enforcement": "strict", "guardrails": ["injection"], "max_input_tokens": 500}}`)
					if s, out := e.do("POST", "/key/update", "sk-1234", `{"key": "`+target+`", "spend": 0.5}`); s != 200 {
						t.Fatalf("admin setting spend: %d %v", s, out)
					}
					if c.path == "/key/unblock" || strings.Contains(c.name, "unblock") {
						e.do("POST", "/key/block", "sk-1234", `{"key": "`+target+`"}`)
					}
					before := e.record(sha(target))
					s, out := e.do("POST", c.path, ownKey, fmt.Sprintf(c.body, target))
					after := e.record(sha(target))
					if r.admin {
						if s != 200 {
							t.Fatalf("proxy_admin refused: %d %v", s, out)
						}
						return
					}
					if s != 403 {
						t.Fatalf("%s %s: %d %v, want 403", r.role, c.name, s, out)
					}
					if before != after {
						t.Fatalf("refused change altered the key:\nbefore %s\nafter  %s", before, after)
					}
				})
			}
		}

		// What an owner may do to her own key.
		ownKey := e.newUser("owner2", "internal_user")
		target := e.generate(`{"user_id": "owner2", "models": ["gpt-4", "gpt-3.5-turbo"], "max_budget": 1}`)
		allowed := []struct{ name, path, body string }{
			{"alias", "/key/update", `{"key": "%s", "key_alias": "mine"}`},
			{"metadata", "/key/update", `{"key": "%s", "metadata": {"note": "x"}}`},
			{"add guardrails", "/key/update", `{"key": "%s", "guardrails": ["injection"]}`},
			{"add another guardrail", "/key/update", `{"key": "%s", "metadata": {"note": "x", "guardrails": ["injection", "pii"], "max_input_tokens": 500}}`},
			{"lower max_input_tokens", "/key/update", `{"key": "%s", "metadata": {"note": "x", "guardrails": ["injection", "pii"], "max_input_tokens": 100}}`},
			{"narrow models", "/key/update", `{"key": "%s", "models": ["gpt-4"]}`},
			{"same max_budget", "/key/update", `{"key": "%s", "max_budget": 1}`},
			{"block", "/key/block", `{"key": "%s"}`},
			{"unblock her own block", "/key/unblock", `{"key": "%s"}`},
		}
		for _, c := range allowed {
			if s, out := e.do("POST", c.path, ownKey, fmt.Sprintf(c.body, target)); s != 200 {
				t.Fatalf("owner %s: %d %v", c.name, s, out)
			}
		}
		// Blocking a key an admin blocked does not make the block hers.
		e.do("POST", "/key/block", "sk-1234", `{"key": "`+target+`"}`)
		if s, out := e.do("POST", "/key/block", ownKey, `{"key": "`+target+`"}`); s != 200 {
			t.Fatalf("owner re-blocking a blocked key: %d %v", s, out)
		}
		if s, out := e.do("POST", "/key/unblock", ownKey, `{"key": "`+target+`"}`); s != 403 {
			t.Fatalf("owner lifted an admin's block by blocking it again first: %d %v", s, out)
		}
		e.do("POST", "/key/unblock", "sk-1234", `{"key": "`+target+`"}`)
		if s, out := e.do("POST", "/key/update", ownKey, fmt.Sprintf(`{"key": "%s", "models": ["gpt-4", "gpt-3.5-turbo"]}`, target)); s != 403 {
			t.Fatalf("owner widened models back after narrowing: %d %v", s, out)
		}
		s, out := e.do("POST", "/key/regenerate", ownKey, `{"key": "`+target+`"}`)
		if s != 200 || out["max_budget"] != 1.0 {
			t.Fatalf("owner regenerating her key: %d %v", s, out)
		}
	})
}

// TestOwnKeyGenerateBounds: what an internal_user may set on a key she makes
// for herself: no spend, no block, no model aliases; models within her
// user's; budgets and limits no higher than her user's own.
func TestOwnKeyGenerateBounds(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		dev := e.newUser("dev", "internal_user", `, "models": ["gpt-4"], "max_budget": 5, "rpm_limit": 10`)
		tests := []struct {
			name, body string
			status     int
		}{
			{"plain", `{}`, 200},
			{"within", `{"models": ["gpt-4"], "max_budget": 5, "rpm_limit": 10, "key_alias": "k", "metadata": {"a": 1}, "duration": "1d"}`, 200},
			{"budget over the user's", `{"max_budget": 6}`, 403},
			{"rpm over the user's", `{"rpm_limit": 11}`, 403},
			{"model outside the user's", `{"models": ["gpt-3.5-turbo"]}`, 403},
			{"spend", `{"spend": 0}`, 403},
			{"blocked", `{"blocked": false}`, 403},
			{"aliases", `{"aliases": {"gpt-4": "gpt-3.5-turbo"}}`, 403},
		}
		// A key without a user (say, one an admin gave a budget of $1) may
		// not mint keys: nothing would bound them.
		loose := e.generate(`{"max_budget": 1}`)
		if s, out := e.do("POST", "/key/generate", loose, `{}`); s != 403 {
			t.Fatalf("a user-less key created a key: %d %v", s, out)
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				snap, _ := e.store.LoadAll(context.Background())
				s, out := e.do("POST", "/key/generate", dev, tt.body)
				if s != tt.status {
					t.Fatalf("%d %v, want %d", s, out, tt.status)
				}
				if after, _ := e.store.LoadAll(context.Background()); s != 200 && len(after.Keys) != len(snap.Keys) {
					t.Fatal("a refused generate wrote a key")
				}
			})
		}
	})
}

// TestDeletingRevokes: deleting a user or a team deletes its keys; the very
// next request with one is a 401, and a blocked team's key stays refused.
func TestDeletingRevokes(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		uk := e.newUser("leaver", "internal_user")
		uk2 := e.generate(`{"user_id": "leaver"}`)
		e.do("POST", "/team/new", "sk-1234", `{"team_id": "gone"}`)
		tk := e.generate(`{"team_id": "gone"}`)
		e.do("POST", "/team/new", "sk-1234", `{"team_id": "stays", "members_with_roles": [{"user_id": "leaver", "role": "admin"}, {"user_id": "other", "role": "user"}]}`)
		e.do("POST", "/team/new", "sk-1234", `{"team_id": "blocked"}`)
		bk := e.generate(`{"team_id": "blocked"}`)
		for _, k := range []string{uk, uk2, tk} {
			if s, out := e.chat(k, "gpt-4"); s != 200 {
				t.Fatalf("key before deletion: %d %v", s, out)
			}
		}
		e.do("POST", "/team/block", "sk-1234", `{"team_id": "blocked"}`)
		if s, _ := e.chat(bk, "gpt-4"); s != 401 {
			t.Fatalf("key of a blocked team: %d", s)
		}

		if s, out := e.do("POST", "/user/delete", "sk-1234", `{"user_ids": ["leaver"]}`); s != 200 {
			t.Fatalf("user/delete: %d %v", s, out)
		}
		for _, k := range []string{uk, uk2} {
			if s, out := e.chat(k, "gpt-4"); s != 401 {
				t.Fatalf("key of a deleted user: %d %v", s, out)
			}
		}
		// A user created again under the id inherits no membership.
		if team, _ := e.store.GetTeam(context.Background(), "stays"); len(team.Members) != 1 || team.Members[0].UserID != "other" {
			t.Fatalf("deleted user still a member: %v", team.Members)
		}
		if s, out := e.do("POST", "/team/delete", "sk-1234", `{"team_ids": ["gone", "blocked"]}`); s != 200 {
			t.Fatalf("team/delete: %d %v", s, out)
		}
		if s, out := e.chat(tk, "gpt-4"); s != 401 {
			t.Fatalf("key of a deleted team: %d %v", s, out)
		}
		if s, out := e.chat(bk, "gpt-4"); s != 401 {
			t.Fatalf("key of a deleted blocked team: %d %v", s, out)
		}
		for _, k := range []string{uk, uk2, tk, bk} {
			if _, err := e.store.GetKey(context.Background(), sha(k)); err == nil {
				t.Fatalf("key %s...%s is still in the store", k[:5], k[len(k)-2:])
			}
		}
	})
}

// TestCustomKeyIsAKey: a custom key is hashed whatever it looks like, so no
// key can be shadowed by one whose raw value is its hash.
func TestCustomKeyIsAKey(t *testing.T) {
	cfg := seedConfig + `llm:
  policies:
    apiKey:
      mode: optional
      keys:
      - key: sk-static-team-key-1
      - keyHash: sha256:` + sha("sk-static-hashed-key-2") + `
`
	engines(t, cfg, func(t *testing.T, e *env) {
		hex64 := sha("anything at all")
		s, out := e.do("POST", "/key/generate", "sk-1234", `{"key": "`+hex64+`", "max_budget": 3}`)
		if s != 200 || out["token"] != sha(hex64) {
			t.Fatalf("64-hex custom key: %d token %v, want the hash of the key", s, out["token"])
		}
		if s, out := e.chat(hex64, "gpt-4"); s != 200 {
			t.Fatalf("64-hex custom key does not work: %d %v", s, out)
		}
		// Named by raw value or by hash, it is the same key.
		for _, name := range []string{hex64, sha(hex64)} {
			if s, out := e.do("GET", "/key/info?key="+name, "sk-1234", ""); s != 200 || out["info"].(map[string]any)["token"] != sha(hex64) {
				t.Fatalf("key/info?key=%s: %d %v", name, s, out)
			}
		}

		alice := e.newUser("alice", "internal_user")
		bob := e.newUser("bob", "internal_user")
		tests := []struct {
			name, key, body string
		}{
			{"a static key's hash", "sk-1234", `{"key": "` + sha("sk-static-team-key-1") + `"}`},
			{"a static keyHash", "sk-1234", `{"key": "` + sha("sk-static-hashed-key-2") + `"}`},
			{"a static key itself", "sk-1234", `{"key": "sk-static-team-key-1"}`},
			{"the master key", "sk-1234", `{"key": "sk-1234"}`},
			{"another user's key hash", alice, `{"key": "` + sha(bob) + `"}`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				snap, _ := e.store.LoadAll(context.Background())
				s, out := e.do("POST", "/key/generate", tt.key, tt.body)
				if s != 400 || errParam(out) != "key" {
					t.Fatalf("%d %v, want 400 naming key", s, out)
				}
				if after, _ := e.store.LoadAll(context.Background()); len(after.Keys) != len(snap.Keys) {
					t.Fatal("refused key was written")
				}
			})
		}
		// The static keys still resolve to themselves (no virtual-key limits).
		for _, k := range []string{"sk-static-team-key-1", "sk-static-hashed-key-2"} {
			if s, out := e.chat(k, "gpt-4"); s != 200 {
				t.Fatalf("static key %s: %d %v", k, s, out)
			}
		}
		// Regenerating to a new_key that is a static key is refused too.
		if s, out := e.do("POST", "/key/regenerate", alice, `{"key": "`+alice+`", "new_key": "sk-static-team-key-1"}`); s != 400 {
			t.Fatalf("regenerate onto a static key: %d %v", s, out)
		}
		// Naming bob's key by its hash does not reach it for alice.
		for _, path := range []string{"/key/info?key=" + sha(bob)} {
			if s, _ := e.do("GET", path, alice, ""); s != 403 {
				t.Fatalf("%s as alice: %d", path, s)
			}
		}
		if s, _ := e.do("POST", "/key/delete", alice, `{"keys": ["`+sha(bob)+`"]}`); s != 403 {
			t.Fatalf("alice deleted bob's key by hash: %d", s)
		}
		if s, _ := e.chat(bob, "gpt-4"); s != 200 {
			t.Fatalf("bob's key after alice's attempts: %d", s)
		}
	})
}

// TestNumbersAtTheEdge: budgets beyond the ledger's range and durations
// beyond a century are 400s naming the field, never a panic, and write nothing.
func TestNumbersAtTheEdge(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		e.do("POST", "/user/new", "sk-1234", `{"user_id": "u", "auto_create_key": false}`)
		e.do("POST", "/team/new", "sk-1234", `{"team_id": "t"}`)
		e.do("POST", "/customer/new", "sk-1234", `{"user_id": "c"}`)
		key := e.generate(`{}`)
		tests := []struct {
			name, path, body, param string
		}{
			{"key max_budget 1e10", "/key/generate", `{"max_budget": 1e10}`, "max_budget"},
			{"key spend 1e10", "/key/generate", `{"spend": 1e10}`, "spend"},
			{"key soft_budget 1e10", "/key/generate", `{"soft_budget": 1e10}`, "soft_budget"},
			{"key huge exponent", "/key/generate", `{"max_budget": 1e308}`, "max_budget"},
			{"key beyond float64", "/key/generate", `{"max_budget": 1e400}`, "max_budget"},
			{"key model_max_budget", "/key/generate", `{"model_max_budget": {"gpt-4": 1e10}}`, "model_max_budget"},
			{"key model_max_budget object", "/key/generate", `{"model_max_budget": {"gpt-4": {"budget_limit": 1e10, "time_period": "1d"}}}`, "model_max_budget"},
			{"key model_max_budget period", "/key/generate", `{"model_max_budget": {"gpt-4": {"budget_limit": 1, "time_period": "3000000d"}}}`, "model_max_budget"},
			{"key rpm_limit", "/key/generate", `{"rpm_limit": 9000000000000000000}`, "rpm_limit"},
			{"key model_tpm_limit", "/key/generate", `{"model_tpm_limit": {"gpt-4": 9000000000000000000}}`, "model_tpm_limit"},
			{"key duration 3000000d", "/key/generate", `{"duration": "3000000d"}`, "duration"},
			{"key budget_duration 3000000d", "/key/generate", `{"budget_duration": "3000000d"}`, "budget_duration"},
			{"key duration in seconds", "/key/generate", `{"duration": "99999999999999s"}`, "duration"},
			{"key budget_duration 1201mo", "/key/generate", `{"budget_duration": "1201mo"}`, "budget_duration"},
			{"key budget_duration 101y", "/key/generate", `{"budget_duration": "101y"}`, "budget_duration"},
			{"key update spend 1e10", "/key/update", `{"key": "` + key + `", "spend": 1e10}`, "spend"},
			{"key update duration", "/key/update", `{"key": "` + key + `", "duration": "3000000d"}`, "duration"},
			{"key regenerate max_budget", "/key/regenerate", `{"key": "` + key + `", "max_budget": 1e10}`, "max_budget"},
			{"user max_budget", "/user/new", `{"user_id": "u2", "max_budget": 1e10}`, "max_budget"},
			{"user budget_duration", "/user/new", `{"user_id": "u2", "budget_duration": "3000000d"}`, "budget_duration"},
			{"user update spend", "/user/update", `{"user_id": "u", "spend": 1e10}`, "spend"},
			{"user update max_budget", "/user/update", `{"user_id": "u", "max_budget": 1e10}`, "max_budget"},
			{"team max_budget", "/team/new", `{"team_id": "t2", "max_budget": 1e10}`, "max_budget"},
			{"team budget_duration", "/team/new", `{"team_id": "t2", "budget_duration": "3000000d"}`, "budget_duration"},
			{"team update spend", "/team/update", `{"team_id": "t", "spend": 1e10}`, "spend"},
			{"customer max_budget", "/customer/new", `{"user_id": "c2", "max_budget": 1e10}`, "max_budget"},
			{"customer budget_duration", "/customer/new", `{"user_id": "c2", "budget_duration": "3000000d"}`, "budget_duration"},
			{"customer update budget_duration", "/customer/update", `{"user_id": "c", "budget_duration": "3000000d"}`, "budget_duration"},
			{"customer update spend", "/customer/update", `{"user_id": "c", "spend": 1e10}`, "spend"},
		}
		before, _ := e.store.LoadAll(context.Background())
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s, out := e.do("POST", tt.path, "sk-1234", tt.body)
				if s != 400 || errParam(out) != tt.param {
					t.Fatalf("got %d %v, want 400 naming %q", s, out, tt.param)
				}
			})
		}
		after, _ := e.store.LoadAll(context.Background())
		if toJSON(before) != toJSON(after) {
			t.Fatal("refused input changed the store")
		}
		// The largest budget allowed is booked exactly.
		for _, body := range []string{`{"max_budget": 1e9, "spend": 1e9, "duration": "36600d"}`, `{"budget_duration": "1200mo"}`,
			`{"budget_duration": "100y", "model_max_budget": {"gpt-4": {"budget_limit": 1e9, "time_period": "5228w"}}}`} {
			if s, out := e.do("POST", "/key/generate", "sk-1234", body); s != 200 {
				t.Fatalf("the largest values allowed, %s: %d %v", body, s, out)
			}
		}
	})
}

// TestKeyAliasFilterIsLiteral: % and _ in a key_alias filter match themselves.
func TestKeyAliasFilterIsLiteral(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		for _, alias := range []string{"a_b", "axb", "100%", "1000", `back\slash`, "backxslash"} {
			e.generate(`{"key_alias": "` + strings.ReplaceAll(alias, `\`, `\\`) + `"}`)
		}
		tests := []struct {
			filter string
			want   float64
		}{{"a_b", 1}, {"_", 1}, {"100%25", 1}, {"%25", 1}, {"back%5Cs", 1}, {"x", 2}}
		for _, tt := range tests {
			_, out := e.do("GET", "/key/list?key_alias="+tt.filter, "sk-1234", "")
			if out["total_count"] != tt.want {
				t.Errorf("key_alias=%s matched %v keys, want %v", tt.filter, out["total_count"], tt.want)
			}
		}
	})
}

// TestInvalidUTF8IsRefused: a management body with invalid UTF-8 in any
// string is a 400 and writes nothing.
func TestInvalidUTF8IsRefused(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		tests := []struct{ name, path, body string }{
			{"key alias", "/key/generate", "{\"key_alias\": \"a\xffb\"}"},
			{"metadata value", "/key/generate", "{\"metadata\": {\"note\": \"\xc3\"}}"},
			{"metadata name", "/key/generate", "{\"metadata\": {\"n\xfe\": 1}}"},
			{"user email", "/user/new", "{\"user_id\": \"u\", \"user_email\": \"\xed\xa0\x80@x\"}"},
			{"team alias", "/team/new", "{\"team_id\": \"t\", \"team_alias\": \"\x80\"}"},
			{"lone surrogate escape", "/team/new", `{"team_id": "t", "team_alias": "\ud800"}`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if s, out := e.do("POST", tt.path, "sk-1234", tt.body); s != 400 {
					t.Fatalf("%d %v, want 400", s, out)
				}
			})
		}
		snap, _ := e.store.LoadAll(context.Background())
		if len(snap.Keys)+len(snap.Users)+len(snap.Teams) != 0 {
			t.Fatal("invalid UTF-8 was written")
		}
		for _, path := range []string{"/key/list?key_alias=%FF", "/team/info?team_id=a%C3", "/user/info?user_id=%ED%A0%80"} {
			if s, out := e.do("GET", path, "sk-1234", ""); s != 400 {
				t.Fatalf("GET %s: %d %v, want 400", path, s, out)
			}
		}
		// A management body over 1 MB is a 413, as an inference body over
		// max_request_size_mb is.
		big := `{"metadata": {"note": "` + strings.Repeat("x", 1<<20) + `"}}`
		if s, out := e.do("POST", "/key/generate", "sk-1234", big); s != 413 {
			t.Fatalf("a 1 MB management body: %d %v, want 413", s, out)
		}
	})
}

// TestRoutesByRole calls each management route this file's rules touch as
// each role, on objects that are not the caller's own (a team she is not
// in, another user), and on her own key where the route is about keys.
func TestRoutesByRole(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		type want struct{ internal, internalViewer, adminViewer, admin int }
		tests := []struct {
			name, method, path, body string // {u}: the caller's user id; {k}: a spare key of hers
			want                     want
		}{
			{"generate own key", "POST", "/key/generate", `{}`, want{200, 403, 403, 200}},
			{"block own key", "POST", "/key/block", `{"key": "{k}"}`, want{200, 403, 403, 200}},
			{"unblock own key", "POST", "/key/unblock", `{"key": "{k}"}`, want{200, 403, 403, 200}},
			{"regenerate own key", "POST", "/key/regenerate", `{"key": "{k}"}`, want{200, 403, 403, 200}},
			{"update own user", "POST", "/user/update", `{"user_id": "{u}", "max_budget": 1000}`, want{403, 403, 403, 200}},
			{"delete a user", "POST", "/user/delete", `{"user_ids": ["victim-{u}"]}`, want{403, 403, 403, 200}},
			{"read a foreign team", "GET", "/team/info?team_id=t-{u}", ``, want{403, 403, 200, 200}},
			{"update a team", "POST", "/team/update", `{"team_id": "t-{u}", "max_budget": 1000}`, want{403, 403, 403, 200}},
			{"add to a foreign team", "POST", "/team/member_add", `{"team_id": "t-{u}", "member": {"user_id": "{u}", "role": "user"}}`, want{403, 403, 403, 200}},
			{"budget a member of a foreign team", "POST", "/team/member_update", `{"team_id": "t-{u}", "user_id": "m-{u}", "max_budget_in_team": 5}`, want{403, 403, 403, 200}},
			{"remove from a foreign team", "POST", "/team/member_delete", `{"team_id": "t-{u}", "user_id": "m-{u}"}`, want{403, 403, 403, 200}},
			{"create a team", "POST", "/team/new", `{"team_id": "n-{u}", "model_aliases": {"a": "gpt-4"}}`, want{403, 403, 403, 200}},
			{"create a user by update", "POST", "/user/update", `{"user_id": "new-{u}", "max_budget": 5}`, want{403, 403, 403, 200}},
			{"set the gateway budget", "POST", "/user/update", `{"user_id": "litellm-proxy-budget", "max_budget": 1000}`, want{403, 403, 403, 200}},
			{"read the gateway budget", "GET", "/user/info?user_id=litellm-proxy-budget", ``, want{403, 403, 200, 200}},
			{"delete a team", "POST", "/team/delete", `{"team_ids": ["t-{u}"]}`, want{403, 403, 403, 200}},
			{"create a customer", "POST", "/customer/new", `{"user_id": "c-{u}"}`, want{403, 403, 403, 200}},
			{"read a customer", "GET", "/customer/info?end_user_id=c0", ``, want{403, 403, 200, 200}},
		}
		e.do("POST", "/customer/new", "sk-1234", `{"user_id": "c0"}`)
		e.do("POST", "/user/update", "sk-1234", `{"user_id": "litellm-proxy-budget", "max_budget": 5000}`)
		roles := []string{"internal_user", "internal_user_viewer", "proxy_admin_viewer", "proxy_admin"}
		for _, role := range roles {
			u := "caller-" + role
			key := e.newUser(u, role)
			e.newUser("victim-"+u, "internal_user")
			e.do("POST", "/team/new", "sk-1234", `{"team_id": "t-`+u+`", "members_with_roles": [{"user_id": "m-`+u+`", "role": "user"}]}`)
			for _, tt := range tests {
				t.Run(role+"/"+tt.name, func(t *testing.T) {
					spare := e.generate(`{"user_id": "` + u + `"}`)
					r := strings.NewReplacer("{u}", u, "{k}", spare)
					s, out := e.do(tt.method, r.Replace(tt.path), key, r.Replace(tt.body))
					exp := map[string]int{"internal_user": tt.want.internal, "internal_user_viewer": tt.want.internalViewer,
						"proxy_admin_viewer": tt.want.adminViewer, "proxy_admin": tt.want.admin}[role]
					if s != exp {
						t.Fatalf("%d %v, want %d", s, out, exp)
					}
				})
			}
		}
	})
}

// TestFieldTableIsDocumented: docs/security.md lists every field of the
// key and team field tables, and every row of the budget and organization
// route table, with the same rule.
func TestFieldTableIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range slices.Concat(admin.KeyFieldTable(), admin.TeamRouteTable(), admin.TeamFieldTable(), admin.RouteTable(), admin.ReadRouteTable()) {
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/security.md lacks the row\n%s", row)
		}
	}
}
