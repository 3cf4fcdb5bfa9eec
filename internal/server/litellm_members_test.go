package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

// strictOpenAI answers like OpenAI: a chat body with a member OpenAI does
// not know is refused with 400 "Unrecognized request argument supplied".
func strictOpenAI(t *testing.T) string {
	known := map[string]bool{"model": true, "messages": true, "stream": true, "stream_options": true, "max_tokens": true,
		"max_completion_tokens": true, "temperature": true, "top_p": true, "n": true, "stop": true, "user": true, "tools": true,
		"tool_choice": true, "response_format": true, "seed": true, "metadata": true, "store": true}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]json.RawMessage
		_ = json.Unmarshal(b, &m)
		w.Header().Set("Content-Type", "application/json")
		for k := range m {
			if !known[k] {
				w.WriteHeader(400)
				fmt.Fprintf(w, `{"error":{"message":"Unrecognized request argument supplied: %s","type":"invalid_request_error"}}`, k)
				return
			}
		}
		io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
	}))
	t.Cleanup(s.Close)
	return s.URL
}

// TestLiteLLMSessionIDIsNotForwarded: LiteLLM's Session Logs
// (docs.litellm.ai/docs/proxy/ui_logs_sessions) group a client's requests
// by sending litellm_session_id in the body (extra_body={"litellm_session_id":
// ...}); the gateway reads it (the payload's metadata.session_id) and never
// forwards it: OpenAI would refuse the call (400, unrecognized argument).
func TestLiteLLMSessionIDIsNotForwarded(t *testing.T) {
	up := strictOpenAI(t)
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	yaml := `
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_base: "` + up + `/v1", api_key: sk-up}
general_settings:
  master_key: sk-1234
  store_prompts_in_spend_logs: true
litellm_settings:
  callbacks: ["hook"]
callback_settings:
  hook:
    callback_type: generic_api
    endpoint: "` + hs.URL + `"
`
	cfg, err := config.Parse("s.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveWith(t, cfg, Options{Store: sqliteStore(t)})
	resp, out := e.post(t, "/v1/chat/completions", "sk-1234", `{"model":"gpt-4o","messages":[{"role":"user","content":"Write a short story about a robot"}],"litellm_session_id":"0b7e4a52-5f2c-4b8e-9a59-3f1e8a6c2d10","tags":["team-a"]}`)
	if resp.StatusCode != 200 {
		t.Errorf("LiteLLM's session-logs request: %d %v; want 200 (litellm_session_id is LiteLLM's, not OpenAI's)", resp.StatusCode, out)
	}
	e.stop()
	ps := hook.payloads(t)
	if len(ps) != 1 {
		t.Fatalf("%d payloads, want 1", len(ps))
	}
	if md, _ := ps[0]["metadata"].(map[string]any); md["session_id"] != "0b7e4a52-5f2c-4b8e-9a59-3f1e8a6c2d10" {
		t.Errorf("payload metadata.session_id %v; want the litellm_session_id", md["session_id"])
	}
	if tags, _ := ps[0]["request_tags"].([]any); !slices.Contains(tags, any("team-a")) {
		t.Errorf("payload request_tags %v lacks the body's top-level tag", tags)
	}
}

// TestBodyTagsAreNotForwarded: LiteLLM's tag routing docs send the
// request's tags as a top-level body member ("tags": ["free"]), which the
// gateway reads as request tags and never forwards (OpenAI refuses it).
func TestBodyTagsAreNotForwarded(t *testing.T) {
	up := strictOpenAI(t)
	yaml := `
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_base: "` + up + `/v1", api_key: sk-up}
general_settings:
  master_key: sk-1234
`
	cfg, err := config.Parse("s.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveWith(t, cfg, Options{Store: sqliteStore(t)})
	resp, out := e.post(t, "/v1/chat/completions", "sk-1234", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"tags":["free"]}`)
	if resp.StatusCode != 200 {
		t.Errorf("a request with LiteLLM's body tags: %d %v; want 200", resp.StatusCode, out)
	}
	// Read as metadata.tags are: a tags member that is not an array is the
	// client's error.
	if resp, out := e.post(t, "/v1/chat/completions", "sk-1234", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"tags":"free"}`); resp.StatusCode != 400 {
		t.Errorf("tags not an array: %d %v; want 400", resp.StatusCode, out)
	}
}
