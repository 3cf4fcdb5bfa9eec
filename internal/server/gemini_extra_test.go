package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/usage"
)

// TestGeminiEmbeddingsAndBlockedPrompts: a gemini/ embedding model answers
// OpenAI embeddings clients through batchEmbedContents (the mock checks
// the key and that each request names the path's model); the Gemini API
// reports no usage, so the input is counted and booked as estimated at the
// table's price. A prompt Gemini blocks answers 200 with finish_reason
// content_filter and no content, as LiteLLM does, and is booked from the
// prompt's usageMetadata.
func TestGeminiEmbeddingsAndBlockedPrompts(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	const blocked = `{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":12,"totalTokenCount":12},"modelVersion":"gemini-2.0-flash","responseId":"b1"}`
	fake := &geminiFake{answer: func(r *http.Request, _ string) (int, string) {
		if strings.Contains(r.URL.Path, "streamGenerateContent") {
			return 200, "data: " + blocked + "\n\n"
		}
		return 200, blocked
	}}
	fakeSrv := httptest.NewServer(fake)
	defer fakeSrv.Close()
	yaml := fmt.Sprintf(`
model_list:
  - model_name: gembed
    litellm_params: {model: gemini/gemini-embedding-001, api_key: g-key, api_base: "%s/v1beta"}
  - model_name: guarded
    litellm_params: {model: gemini/gemini-2.0-flash, api_key: g-key, api_base: "%s/v1beta"}
general_settings:
  master_key: sk-1234
`, up.URL, fakeSrv.URL)
	cfg, err := config.Parse("g.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{}`)

	resp, out := e.post(t, "/v1/embeddings", key, `{"model":"gembed","input":["the quick brown fox jumps","over the lazy dog"]}`)
	if resp.StatusCode != 200 || out["object"] != "list" || len(out["data"].([]any)) != 2 || out["model"] != "gemini-embedding-001" {
		t.Fatalf("embeddings: %d %v", resp.StatusCode, out)
	}
	got := mock.LastRequest()
	if got.Path != "/v1beta/models/gemini-embedding-001:batchEmbedContents" || got.Header.Get("x-goog-api-key") != "g-key" {
		t.Fatalf("gemini got %s %v", got.Path, got.Header)
	}

	// A blocked prompt is refused as OpenAI refuses one (whole); a stream
	// has begun, so it ends finished by content_filter. Both are booked
	// for the prompt Google billed.
	resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"guarded","messages":[{"role":"user","content":"something blocked"}]}`)
	if eb, _ := out["error"].(map[string]any); resp.StatusCode != 400 || eb["code"] != "content_policy_violation" || !strings.Contains(fmt.Sprint(eb["message"]), "SAFETY") {
		t.Fatalf("blocked: %d %v", resp.StatusCode, out)
	}
	status, _, _, finish, _, done := chatStream(t, e, key, `{"model":"guarded","stream":true,"messages":[{"role":"user","content":"something blocked"}]}`)
	if status != 200 || !done || finish != "content_filter" {
		t.Fatalf("blocked stream: %d done=%v finish=%q", status, done, finish)
	}

	rows := spendRows(t, e, key)
	if len(rows) != 3 {
		t.Fatalf("%d spend rows, want 3", len(rows))
	}
	emb := rows[0]
	if !emb.UsageEstimated || emb.PromptTokens <= 0 || emb.Cost <= 0 ||
		!near(emb.Cost, tableCost(t, "gemini", "gemini-embedding-001", usage.Usage{Prompt: emb.PromptTokens})) {
		t.Fatalf("embeddings booked %+v", emb)
	}
	for _, r := range rows[1:] {
		if r.PromptTokens != 12 || r.UsageEstimated || !near(r.Cost, tableCost(t, "gemini", "gemini-2.0-flash", usage.Usage{Prompt: 12})) {
			t.Fatalf("blocked booked %+v", r)
		}
	}
	if !strings.HasPrefix(rows[1].ModelGroup, "guarded") {
		t.Fatalf("rows %+v", rows)
	}
}
