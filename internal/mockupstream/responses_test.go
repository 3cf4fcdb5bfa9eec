package mockupstream

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestResponses: the Responses API as OpenAI and Azure serve it: an answer
// with its usage, a stream whose last event carries the usage, and stored
// responses read, listed and deleted.
func TestResponses(t *testing.T) {
	srv := httptest.NewServer(New(Options{Chunks: 2}))
	defer srv.Close()

	resp, body := call(t, srv.URL+"/v1/responses", `{"model":"gpt-4o","input":"one two three","max_output_tokens":4}`)
	var r struct {
		ID, Status string
		Output     []struct{ Content []struct{ Text string } }
		Usage      struct {
			InputTokens  int64 `json:"input_tokens"`
			OutputTokens int64 `json:"output_tokens"`
		}
	}
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &r) != nil || r.Status != "incomplete" || r.Usage.OutputTokens != 4 ||
		r.Usage.InputTokens != 3 || r.Output[0].Content[0].Text != "Hello! You said: one" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}

	resp, body = call(t, srv.URL+"/v1/responses", `{"model":"gpt-4o","input":[{"role":"user","content":"one two"}],"stream":true}`)
	var types []string
	var last map[string]any
	for i, d := range dataLines(body) {
		var ev map[string]any
		if err := json.Unmarshal([]byte(d), &ev); err != nil || ev["sequence_number"] != float64(i) {
			t.Fatalf("event %d: %s", i, d)
		}
		types, last = append(types, ev["type"].(string)), ev
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta response.output_text.delta " +
		"response.output_text.done response.content_part.done response.output_item.done response.completed"
	if resp.StatusCode != 200 || strings.Join(types, " ") != want {
		t.Fatalf("events %v", types)
	}
	if u := last["response"].(map[string]any)["usage"].(map[string]any); u["output_tokens"] != float64(5) {
		t.Fatalf("usage %v", u)
	}

	if resp, body := call(t, srv.URL+"/openai/responses", `{"model":"dep","input":"x"}`); resp.StatusCode != 400 {
		t.Fatalf("azure without api-version: %d %s", resp.StatusCode, body)
	}
	resp, body = call(t, srv.URL+"/openai/responses?api-version=2025-04-01-preview", `{"model":"dep","input":"keep me"}`)
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &r) != nil {
		t.Fatalf("azure: %d %s", resp.StatusCode, body)
	}
	do := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	q := "?api-version=2025-04-01-preview"
	if s, b := do("GET", "/openai/responses/"+r.ID+q); s != 200 || !strings.Contains(b, "keep me") {
		t.Fatalf("get: %d %s", s, b)
	}
	if s, b := do("GET", "/v1/responses/"+r.ID+"/input_items"); s != 200 || !strings.Contains(b, `"text":"keep me"`) || !strings.Contains(b, `"object":"list"`) {
		t.Fatalf("input items: %d %s", s, b)
	}
	if resp, body := call(t, srv.URL+"/v1/responses", `{"model":"m","input":"next","previous_response_id":"resp_unknown"}`); resp.StatusCode != 400 {
		t.Fatalf("unknown previous response: %d %s", resp.StatusCode, body)
	}
	if resp, body := call(t, srv.URL+"/v1/responses", `{"model":"m","input":"next","previous_response_id":"`+r.ID+`"}`); resp.StatusCode != 200 {
		t.Fatalf("known previous response: %d %s", resp.StatusCode, body)
	}
	if s, b := do("DELETE", "/openai/responses/"+r.ID+q); s != 200 || !strings.Contains(b, `"deleted":true`) {
		t.Fatalf("delete: %d %s", s, b)
	}
	if s, _ := do("GET", "/v1/responses/"+r.ID); s != 404 {
		t.Fatalf("get after delete: %d", s)
	}
}
