package server

import (
	"strings"
	"testing"
)

// TestGuardrailsObjectFormInRequest: LiteLLM's per-request switch,
// metadata.guardrails as an object ({"name": true} runs a guardrail,
// {"name": false} switches a default_on one off for this request), read
// through the real handler, in metadata, litellm_metadata and the body's
// guardrails member alike.
func TestGuardrailsObjectFormInRequest(t *testing.T) {
	e, up := startGuarded(t, &rowRecorder{Store: sqliteStore(t)})
	key := e.newKey(t, `{}`)
	for _, member := range []string{"metadata", "litellm_metadata"} {
		// {"name": true}: the named guardrail runs and blocks.
		body := `{"model":"gpt-4","` + member + `":{"guardrails":{"secrets-block":true}},"messages":[{"role":"user","content":"tell me about Project Apollo"}]}`
		resp, out := e.post(t, "/v1/chat/completions", key, body)
		if resp.StatusCode != 400 {
			t.Errorf("%s {secrets-block: true}: status %d %v, want the guardrail's 400", member, resp.StatusCode, out)
		}
		// {"name": false}: the default_on pii-mask does not run.
		n := len(up.received())
		body = `{"model":"gpt-4","` + member + `":{"guardrails":{"pii-mask":false}},"messages":[{"role":"user","content":"mail jane@example.com"}]}`
		resp, out = e.post(t, "/v1/chat/completions", key, body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s {pii-mask: false}: status %d %v", member, resp.StatusCode, out)
		}
		got := up.received()
		if len(got) != n+1 || !strings.Contains(got[n], "jane@example.com") {
			t.Errorf("%s {pii-mask: false}: upstream got %q, want the e-mail unmasked", member, got[n:])
		}
		if h := resp.Header.Get("x-litellm-applied-guardrails"); h != "" {
			t.Errorf("%s {pii-mask: false}: applied guardrails %q, want none", member, h)
		}
		// {"name": false} of a guardrail not on anyway names nothing.
		body = `{"model":"gpt-4","` + member + `":{"guardrails":{"secrets-block":false}},"messages":[{"role":"user","content":"Project Apollo, jane@example.com"}]}`
		resp, out = e.post(t, "/v1/chat/completions", key, body)
		if resp.StatusCode != 200 || resp.Header.Get("x-litellm-applied-guardrails") != "pii-mask" {
			t.Errorf("%s {secrets-block: false}: status %d, applied %q %v", member, resp.StatusCode, resp.Header.Get("x-litellm-applied-guardrails"), out)
		}
	}
	// A guardrail the key names stays on whatever the request says.
	guarded := e.newKey(t, `{"metadata":{"guardrails":["pii-mask"]}}`)
	n := len(up.received())
	resp, out := e.post(t, "/v1/chat/completions", guarded, `{"model":"gpt-4","metadata":{"guardrails":{"pii-mask":false}},"messages":[{"role":"user","content":"mail jane@example.com"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("key-named pii-mask: status %d %v", resp.StatusCode, out)
	}
	if got := up.received(); len(got) != n+1 || strings.Contains(got[n], "jane@example.com") {
		t.Errorf("a key's guardrail was switched off by the request: upstream got %q", got[n:])
	}
}
