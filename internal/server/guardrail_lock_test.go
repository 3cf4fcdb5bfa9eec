package server

import (
	"fmt"
	"strings"
	"testing"
)

// TestGuardrailsLockRefusesPerRequestChanges: LiteLLM's team (and, in
// Tollgate, key) metadata {"guardrails": {"modify_guardrails": false}}
// makes a request that names guardrails (switches one off, or names a
// list, in metadata, litellm_metadata or the top-level member) a 403 in
// OpenAI's shape (Anthropic's on /v1/messages), before the upstream is
// called or anything is booked; a request that names none is served with
// the default_on guardrail; an unlocked team's keys switch it off.
func TestGuardrailsLockRefusesPerRequestChanges(t *testing.T) {
	t.Parallel()
	rec := &rowRecorder{Store: sqliteStore(t)}
	e, up := startGuarded(t, rec)
	if resp, out := e.post(t, "/team/new", "sk-1234", `{"team_id":"locked","metadata":{"guardrails":{"modify_guardrails":false}}}`); resp.StatusCode != 200 {
		t.Fatalf("team/new: %d %v", resp.StatusCode, out)
	}
	teamKey := e.newKey(t, `{"team_id":"locked"}`)
	ownKey := e.newKey(t, `{"metadata":{"guardrails":{"modify_guardrails":false}}}`)
	const mail = `"messages":[{"role":"user","content":"mail jane@example.com"}]`
	refused := []struct{ name, body string }{
		{"metadata {name: false}", `{"model":"gpt-4","metadata":{"guardrails":{"pii-mask":false}},` + mail + `}`},
		{"litellm_metadata {name: false}", `{"model":"gpt-4","litellm_metadata":{"guardrails":{"pii-mask":false}},` + mail + `}`},
		{"metadata list", `{"model":"gpt-4","metadata":{"guardrails":["secrets-block"]},` + mail + `}`},
		{"top-level list", `{"model":"gpt-4","guardrails":["secrets-block"],` + mail + `}`},
		{"top-level empty list", `{"model":"gpt-4","guardrails":[],` + mail + `}`},
	}
	for _, k := range []struct{ who, key string }{{"team", teamKey}, {"key", ownKey}} {
		for _, tt := range refused {
			resp, out := e.post(t, "/v1/chat/completions", k.key, tt.body)
			em, _ := out["error"].(map[string]any)
			want := "Your " + k.who + " does not have permission to modify guardrails."
			if resp.StatusCode != 403 || em["message"] != want || em["type"] != "permission_error" {
				t.Errorf("%s lock, %s: %d %v, want 403 %q", k.who, tt.name, resp.StatusCode, out, want)
			}
		}
		resp, out := e.post(t, "/v1/messages", k.key, `{"model":"gpt-4","max_tokens":10,"metadata":{"guardrails":{"pii-mask":false}},`+mail+`}`)
		em, _ := out["error"].(map[string]any)
		if resp.StatusCode != 403 || out["type"] != "error" || em["type"] != "permission_error" || !strings.Contains(fmt.Sprint(em["message"]), "permission to modify guardrails") {
			t.Errorf("%s lock, /v1/messages: %d %v, want Anthropic's 403", k.who, resp.StatusCode, out)
		}
	}
	if n := len(up.received()); n != 0 {
		t.Errorf("refused requests reached the upstream %d times", n)
	}
	e.srv.writer.Flush()
	rec.mu.Lock()
	rows := len(rec.rows)
	rec.mu.Unlock()
	if rows != 0 {
		t.Errorf("%d spend rows for refused requests, want none", rows)
	}
	for _, k := range []string{teamKey, ownKey} {
		_, info := e.getJSON(t, "/key/info?key="+k, "sk-1234")
		if in, _ := info["info"].(map[string]any); in == nil || in["spend"] != 0.0 {
			t.Errorf("key/info after refusals: %v, want spend 0", info)
		}
	}
	// A locked key's request naming no guardrails is served, masked by
	// the default_on guardrail.
	for _, k := range []string{teamKey, ownKey} {
		n := len(up.received())
		resp, out := e.post(t, "/v1/chat/completions", k, `{"model":"gpt-4",`+mail+`}`)
		got := up.received()
		if resp.StatusCode != 200 || len(got) != n+1 || strings.Contains(got[n], "jane@example.com") {
			t.Errorf("locked key, no guardrails named: %d %v, upstream got %q", resp.StatusCode, out, got[n:])
		}
	}
	// Unlocked (modify_guardrails: true, set by proxy_admin): the switch works.
	if resp, out := e.post(t, "/team/update", "sk-1234", `{"team_id":"locked","metadata":{"guardrails":{"modify_guardrails":true}}}`); resp.StatusCode != 200 {
		t.Fatalf("team/update: %d %v", resp.StatusCode, out)
	}
	n := len(up.received())
	resp, out := e.post(t, "/v1/chat/completions", teamKey, `{"model":"gpt-4","metadata":{"guardrails":{"pii-mask":false}},`+mail+`}`)
	if got := up.received(); resp.StatusCode != 200 || len(got) != n+1 || !strings.Contains(got[n], "jane@example.com") {
		t.Errorf("unlocked team, {pii-mask: false}: %d %v, upstream got %q", resp.StatusCode, out, got[n:])
	}
}

// TestGuardrailsLockByRole: who may set and lift the lock on a key
// (/key/update) and on a team (/team/update). An internal_user may set
// it on her own key but not lift it (nor write a guardrails list over
// it); her team's admin may not lift the team's; the viewer writes
// nothing; proxy_admin lifts both.
func TestGuardrailsLockByRole(t *testing.T) {
	t.Parallel()
	e, _ := startGuarded(t, &rowRecorder{Store: sqliteStore(t)})
	for _, u := range []string{`{"user_id":"ann","user_role":"internal_user"}`, `{"user_id":"vic","user_role":"internal_user_viewer"}`} {
		if resp, out := e.post(t, "/user/new", "sk-1234", u); resp.StatusCode != 200 {
			t.Fatalf("user/new: %d %v", resp.StatusCode, out)
		}
	}
	if resp, out := e.post(t, "/team/new", "sk-1234", `{"team_id":"tl","members_with_roles":[{"user_id":"ann","role":"admin"}],"metadata":{"guardrails":{"modify_guardrails":false}}}`); resp.StatusCode != 200 {
		t.Fatalf("team/new: %d %v", resp.StatusCode, out)
	}
	lock := `{"guardrails":{"modify_guardrails":false}}`
	annKey := e.newKey(t, `{"user_id":"ann","metadata":`+lock+`}`) // the lock set by proxy_admin
	annFree := e.newKey(t, `{"user_id":"ann"}`)
	vicKey := e.newKey(t, `{"user_id":"vic","metadata":`+lock+`}`)
	upd := func(key, body string) string { return fmt.Sprintf(`{"key":%q,%s}`, key, body) }
	tests := []struct {
		name, path, caller, body string
		want                     int
	}{
		{"internal_user lifts her key's lock", "/key/update", annKey, upd(annKey, `"metadata":{}`), 403},
		{"internal_user sets it true", "/key/update", annKey, upd(annKey, `"metadata":{"guardrails":{"modify_guardrails":true}}`), 403},
		{"internal_user writes a guardrails list over it", "/key/update", annKey, upd(annKey, `"guardrails":["pii-mask"]`), 403},
		{"internal_user keeps it, changes other metadata", "/key/update", annKey, upd(annKey, `"metadata":{"guardrails":{"modify_guardrails":false},"note":"x"}`), 200},
		{"internal_user sets it on her own key", "/key/update", annFree, upd(annFree, `"metadata":`+lock), 200},
		{"internal_user lifts the lock she set", "/key/update", annFree, upd(annFree, `"metadata":{}`), 403},
		{"internal_user_viewer lifts her key's lock", "/key/update", vicKey, upd(vicKey, `"metadata":{}`), 403},
		{"team admin lifts the team's lock", "/team/update", annFree, `{"team_id":"tl","metadata":{}}`, 403},
		{"team admin writes a guardrails list over it", "/team/update", annFree, `{"team_id":"tl","guardrails":["pii-mask"]}`, 403},
		{"proxy_admin lifts the key's lock", "/key/update", "sk-1234", upd(annKey, `"metadata":{}`), 200},
		{"proxy_admin lifts the team's lock", "/team/update", "sk-1234", `{"team_id":"tl","metadata":{}}`, 200},
	}
	for _, tt := range tests {
		resp, out := e.post(t, tt.path, tt.caller, tt.body)
		if resp.StatusCode != tt.want {
			t.Errorf("%s: %d %v, want %d", tt.name, resp.StatusCode, out, tt.want)
		}
	}
	// What stays locked stays locked at the gateway.
	body := `{"model":"gpt-4","metadata":{"guardrails":{"pii-mask":false}},"messages":[{"role":"user","content":"hi"}]}`
	if resp, out := e.post(t, "/v1/chat/completions", annFree, body); resp.StatusCode != 403 {
		t.Errorf("annFree (still locked): %d %v, want 403", resp.StatusCode, out)
	}
	if resp, out := e.post(t, "/v1/chat/completions", annKey, body); resp.StatusCode != 200 {
		t.Errorf("annKey (lifted by proxy_admin): %d %v, want 200", resp.StatusCode, out)
	}
}
