package mockupstream

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestNativeProviders: the mock speaks Cohere's v2 chat (its stream's
// event sequence, a tool call when tools are given) and embed, refusing a
// request without a bearer key; Gemini's batchEmbedContents; and Vertex
// AI's rawPredict for Claude, refusing a body that names a model.
func TestNativeProviders(t *testing.T) {
	srv := httptest.NewServer(New(Options{Chunks: 2}))
	defer srv.Close()
	bearer := []string{"Authorization", "Bearer k"}

	if resp, body := call(t, srv.URL+"/v2/embed", `{"model":"embed-english-v3.0","texts":["a"],"input_type":"search_document"}`); resp.StatusCode != 401 || !strings.Contains(body, `"message"`) {
		t.Fatalf("embed without a key: %d %s", resp.StatusCode, body)
	}
	if resp, body := call(t, srv.URL+"/v2/embed", `{"model":"embed-english-v3.0","texts":["a","bb"],"input_type":"search_document"}`, bearer...); resp.StatusCode != 200 ||
		!strings.Contains(body, `"float":[[`) || !strings.Contains(body, `"billed_units":{"input_tokens":2}`) {
		t.Fatalf("embed: %d %s", resp.StatusCode, body)
	}
	_, body := call(t, srv.URL+"/v2/chat", `{"model":"command-r","stream":true,"messages":[{"role":"user","content":"one two three"}]}`, bearer...)
	var names []string
	for _, l := range strings.Split(body, "\n") {
		if n, ok := strings.CutPrefix(l, "event: "); ok && (len(names) == 0 || names[len(names)-1] != n) {
			names = append(names, n)
		}
	}
	if got := strings.Join(names, ","); got != "message-start,content-start,content-delta,content-end,message-end" || !strings.Contains(body, `"billed_units"`) {
		t.Fatalf("stream events %s\n%s", got, body)
	}
	_, body = call(t, srv.URL+"/v2/chat", `{"model":"command-r","stream":true,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]}`, bearer...)
	if !strings.Contains(body, "event: tool-call-start") || !strings.Contains(body, "event: tool-call-end") || !strings.Contains(body, `"finish_reason":"TOOL_CALL"`) {
		t.Fatalf("tool stream %s", body)
	}

	resp, body := call(t, srv.URL+"/v1beta/models/gemini-embedding-001:batchEmbedContents",
		`{"requests":[{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"hi"}]}}]}`, "x-goog-api-key", "g")
	if resp.StatusCode != 200 || !strings.Contains(body, `"embeddings":[{"values":[`) {
		t.Fatalf("batchEmbedContents: %d %s", resp.StatusCode, body)
	}

	raw := srv.URL + "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict"
	if resp, body := call(t, raw, `{"anthropic_version":"vertex-2023-10-16","model":"claude","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, bearer...); resp.StatusCode != 400 {
		t.Fatalf("rawPredict with a model: %d %s", resp.StatusCode, body)
	}
	if resp, body := call(t, raw, `{"anthropic_version":"vertex-2023-10-16","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, bearer...); resp.StatusCode != 200 ||
		!strings.Contains(body, `"type":"message"`) || !strings.Contains(body, `"model":"claude-3-5-sonnet-v2@20241022"`) {
		t.Fatalf("rawPredict: %d %s", resp.StatusCode, body)
	}
}
