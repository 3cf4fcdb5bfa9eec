package server

import (
	"fmt"
	"testing"
)

// TestOwnerMayAddOnlyConfiguredGuardrails: a team's admin may only add
// guardrails, never remove one; a name no configured guardrail has makes
// every call of the team's keys a 400 ("unknown guardrail"), so she must
// not be able to add one (she could never take it back). The same for a
// key's owner on her own key.
func TestOwnerMayAddOnlyConfiguredGuardrails(t *testing.T) {
	t.Parallel()
	e, _ := startGuarded(t, &rowRecorder{Store: sqliteStore(t)})
	if _, out := e.post(t, "/user/new", "sk-1234", `{"user_id":"tadmin","user_role":"internal_user"}`); out["user_id"] != "tadmin" {
		t.Fatalf("user/new: %v", out)
	}
	if resp, out := e.post(t, "/team/new", "sk-1234", `{"team_id":"tlock","members_with_roles":[{"user_id":"tadmin","role":"admin"}]}`); resp.StatusCode != 200 {
		t.Fatalf("team/new: %d %v", resp.StatusCode, out)
	}
	adminKey := e.newKey(t, `{"user_id":"tadmin"}`)
	teamKey := e.newKey(t, `{"user_id":"tadmin","team_id":"tlock"}`)
	ok := `{"model":"gpt-4","messages":[{"role":"user","content":"hello"}]}`
	tests := []struct {
		name, path, key, body string
	}{
		{"team admin, unknown name", "/team/update", adminKey, `{"team_id":"tlock","guardrails":["no-such-guard"]}`},
		{"team admin, a name cased differently", "/team/update", adminKey, `{"team_id":"tlock","guardrails":["INJECTION"]}`},
		{"key owner, unknown name", "/key/update", adminKey, fmt.Sprintf(`{"key":%q,"guardrails":["no-such-guard"]}`, teamKey)},
		{"key owner, unknown name in metadata", "/key/update", adminKey, fmt.Sprintf(`{"key":%q,"metadata":{"guardrails":["no-such-guard"]}}`, teamKey)},
	}
	for _, tt := range tests {
		resp, out := e.post(t, tt.path, tt.key, tt.body)
		if resp.StatusCode != 400 {
			t.Errorf("%s: %d %v, want 400", tt.name, resp.StatusCode, out)
		}
		if resp, out := e.post(t, "/v1/chat/completions", teamKey, ok); resp.StatusCode != 200 {
			t.Fatalf("after %s the team's key is refused: %d %v", tt.name, resp.StatusCode, out)
		}
	}
	// An org_admin's new team: she may not remove a name later either.
	if resp, out := e.post(t, "/organization/new", "sk-1234", `{"organization_id":"acme","organization_alias":"Acme"}`); resp.StatusCode != 200 {
		t.Fatalf("organization/new: %d %v", resp.StatusCode, out)
	}
	if resp, out := e.post(t, "/organization/member_add", "sk-1234", `{"organization_id":"acme","member":{"user_id":"boss","role":"org_admin"}}`); resp.StatusCode != 200 {
		t.Fatalf("organization/member_add: %d %v", resp.StatusCode, out)
	}
	bossKey := e.newKey(t, `{"user_id":"boss"}`)
	if resp, out := e.post(t, "/team/new", bossKey, `{"team_id":"tacme","organization_id":"acme","guardrails":["no-such-guard"]}`); resp.StatusCode != 400 {
		t.Errorf("org_admin team/new, unknown name: %d %v, want 400", resp.StatusCode, out)
	}
	if resp, out := e.post(t, "/team/new", bossKey, `{"team_id":"tacme","organization_id":"acme","guardrails":["injection"]}`); resp.StatusCode != 200 {
		t.Errorf("org_admin team/new, configured name: %d %v", resp.StatusCode, out)
	}
	// An org_admin of another organization touches neither team.
	for _, body := range []string{`{"team_id":"tlock","guardrails":["injection","pii-mask"]}`, `{"team_id":"tlock","metadata":{}}`} {
		if resp, out := e.post(t, "/team/update", bossKey, body); resp.StatusCode != 403 {
			t.Errorf("org_admin of acme on a team outside it, %s: %d %v", body, resp.StatusCode, out)
		}
	}
	// A configured name is still added.
	if resp, out := e.post(t, "/team/update", adminKey, `{"team_id":"tlock","guardrails":["injection"]}`); resp.StatusCode != 200 {
		t.Errorf("team admin adds a configured guardrail: %d %v", resp.StatusCode, out)
	}
}
