package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/usage"
)

// TestVertexClaudeServesChatAndMessages: a vertex_ai/claude-... deployment
// calls Anthropic's publisher path on Vertex AI (rawPredict, and
// streamRawPredict for streams) with an access token, the Messages body
// carrying anthropic_version vertex-2023-10-16 and no model (the mock
// refuses anything else); OpenAI chat clients reach it translated,
// Messages clients natively, and each answer is booked at the table's
// vertex_ai/claude price.
func TestVertexClaudeServesChatAndMessages(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	fake := &geminiFake{answer: func(*http.Request, string) (int, string) {
		return 429, `{"error":{"code":429,"message":"Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model.","status":"RESOURCE_EXHAUSTED"}}`
	}}
	fakeSrv := httptest.NewServer(fake)
	defer fakeSrv.Close()
	tokens, _ := googleTokenServer(t)
	creds, _ := json.Marshal(serviceAccount(t, "claude@proj.iam.gserviceaccount.com", tokens.URL))
	const model = "claude-3-5-sonnet-v2@20241022"
	yaml := fmt.Sprintf(`
model_list:
  - model_name: vclaude
    litellm_params:
      model: vertex_ai/%s
      vertex_project: proj-9
      vertex_location: us-east5
      vertex_credentials: %s
      api_base: %s
  - model_name: vclaude-quota
    litellm_params:
      model: vertex_ai/%s
      vertex_project: proj-9
      vertex_location: us-east5
      vertex_credentials: %s
      api_base: %s
router_settings:
  num_retries: 0
general_settings:
  master_key: sk-1234
`, model, creds, up.URL, model, creds, fakeSrv.URL)
	cfg, err := config.Parse("v.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{}`)
	path := "/v1/projects/proj-9/locations/us-east5/publishers/anthropic/models/" + model
	checkUp := func(action string) {
		t.Helper()
		got := mock.LastRequest()
		var b map[string]any
		_ = json.Unmarshal(got.Body, &b)
		if got.Path != path+":"+action || got.Header.Get("Authorization") != "Bearer ya29.claude" || b["anthropic_version"] != "vertex-2023-10-16" || b["model"] != nil {
			t.Fatalf("vertex got %s %v %s", got.Path, got.Header, got.Body)
		}
	}

	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"vclaude","messages":[{"role":"user","content":"hello claude"}]}`)
	if resp.StatusCode != 200 || !strings.Contains(fmt.Sprint(out["choices"]), "hello claude") {
		t.Fatalf("chat: %d %v", resp.StatusCode, out)
	}
	checkUp("rawPredict")

	status, text, _, finish, sawUsage, done := chatStream(t, e, key, `{"model":"vclaude","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"stream it please"}]}`)
	if status != 200 || !done || !sawUsage || !strings.HasSuffix(text, "stream it please") || finish != "stop" {
		t.Fatalf("chat stream: %d done=%v usage=%v text=%q finish=%q", status, done, sawUsage, text, finish)
	}
	checkUp("streamRawPredict")

	resp, out = e.post(t, "/v1/messages", key, `{"model":"vclaude","max_tokens":30,"messages":[{"role":"user","content":"red green blue"}]}`)
	if resp.StatusCode != 200 || out["type"] != "message" || !strings.Contains(fmt.Sprint(out["content"]), "red green blue") {
		t.Fatalf("messages: %d %v", resp.StatusCode, out)
	}
	checkUp("rawPredict")

	req, _ := http.NewRequest("POST", e.url+"/v1/messages", strings.NewReader(`{"model":"vclaude","max_tokens":30,"stream":true,"messages":[{"role":"user","content":"a streamed message"}]}`))
	req.Header.Set("x-api-key", key)
	sresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(sresp.Body)
	sresp.Body.Close()
	if sresp.StatusCode != 200 || !strings.Contains(string(raw), "event: message_stop") || !strings.Contains(string(raw), "streamed") {
		t.Fatalf("messages stream: %d %s", sresp.StatusCode, raw)
	}
	checkUp("streamRawPredict")

	// Vertex's own refusals come in Google's error shape: OpenAI's for a
	// chat client, Anthropic's for a Messages client.
	resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"vclaude-quota","messages":[{"role":"user","content":"x"}]}`)
	if e2, _ := out["error"].(map[string]any); resp.StatusCode != 429 || e2["type"] != "rate_limit_error" || e2["code"] != "RESOURCE_EXHAUSTED" || !strings.Contains(fmt.Sprint(e2["message"]), "Quota exceeded") {
		t.Fatalf("chat error: %d %v", resp.StatusCode, out)
	}
	resp, out = e.post(t, "/v1/messages", key, `{"model":"vclaude-quota","max_tokens":5,"messages":[{"role":"user","content":"x"}]}`)
	if e2, _ := out["error"].(map[string]any); resp.StatusCode != 429 || out["type"] != "error" || e2["type"] != "rate_limit_error" || !strings.Contains(fmt.Sprint(e2["message"]), "Quota exceeded") {
		t.Fatalf("messages error: %d %v", resp.StatusCode, out)
	}

	// The two quota refusals have a failure row without cost each.
	rows := answeredRows(t, spendRows(t, e, key), 2)
	if len(rows) != 4 {
		t.Fatalf("%d answered spend rows, want 4", len(rows))
	}
	for _, r := range rows {
		want := tableCost(t, "vertex_ai", model, usage.Usage{Prompt: r.PromptTokens, Completion: r.CompletionTokens})
		if r.PromptTokens <= 0 || r.CompletionTokens <= 0 || r.UsageEstimated || r.Cost <= 0 || !near(r.Cost, want) {
			t.Fatalf("booked %+v, want %v", r, want)
		}
	}
}
