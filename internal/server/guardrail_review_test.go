package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
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

// TestHeldTextSentWhenUpstreamBreaksOff: the end of an event's text
// that could start a finding is held back for the next event; when the
// upstream then breaks off (the connection drops before [DONE]), the held
// text is still sent (checked alone), as it would have been unheld, on
// OpenAI's chat stream and on Anthropic's Messages stream.
func TestHeldTextSentWhenUpstreamBreaksOff(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"Your order number is 12345"},"finish_reason":null}]}`+"\n\n")
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close() // mid-body: the chunked body never ends
		}
	}))
	t.Cleanup(up.Close)
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(splitGuardConfig, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	rec := &rowRecorder{Store: sqliteStore(t)}
	e := serveWith(t, cfg, Options{Store: rec})
	key := e.newKey(t, `{}`)
	raw, text := streamChat(t, e, key, `{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if text != "Your order number is 12345" {
		t.Errorf("openai: text %q, want the held digits too:\n%s", text, raw)
	}
	raw, text = anthropicText(t, e, key, `{"model":"gpt-4","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if text != "Your order number is 12345" {
		t.Errorf("anthropic: text %q, want the held digits too:\n%s", text, raw)
	}
	// Both broken-off calls are booked, with what was produced.
	for _, row := range rec.rowsOf(t, e, key, 2) {
		if row.CompletionTokens == 0 {
			t.Errorf("row %+v: no completion tokens booked", row)
		}
	}
}

// TestGuardrailPingBetweenSplitCard: Anthropic's streams "may include any
// number of ping events"; a ping between the two deltas of a split card
// number must not release the held start of the card unmasked.
func TestGuardrailPingBetweenSplitCard(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		ev := func(typ, data string) { fmt.Fprintf(w, "event: %s\ndata: %s\n\n", typ, data); w.(http.Flusher).Flush() }
		ev("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-x","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":1}}}`)
		ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
		ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Pay with 4111 1111 "}}`)
		ev("ping", `{"type":"ping"}`)
		ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"1111 1111 today."}}`)
		ev("content_block_stop", `{"type":"content_block_stop","index":0}`)
		ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}`)
		ev("message_stop", `{"type":"message_stop"}`)
	}))
	t.Cleanup(up.Close)
	yaml := strings.Replace(splitGuardConfig, `litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}"`, `litellm_params: {model: anthropic/claude-x, api_key: k, api_base: "{{UP}}"`, 1)
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(yaml, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	e := serveWith(t, cfg, Options{Store: &rowRecorder{Store: sqliteStore(t)}})
	key := e.newKey(t, `{}`)
	raw, text := anthropicText(t, e, key, `{"model":"gpt-4","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if strings.Contains(raw, "4111") || text != "Pay with <CREDIT_CARD> today." {
		t.Errorf("text %q, want the card masked whole:\n%s", text, raw)
	}
	raw, text = streamChat(t, e, key, `{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if strings.Contains(raw, "4111") || text != "Pay with <CREDIT_CARD> today." {
		t.Errorf("openai client: text %q, want the card masked whole:\n%s", text, raw)
	}
}
