package server

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// boundsYAML's deployments ask the mock upstream for answers of 3 MiB
// (see mockupstream's flood), generated as they are sent.
const boundsYAML = `
model_list:
  - model_name: huge-length
    litellm_params: {model: openai/m, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0.0001, headers: {x-mock-flood-bytes: "3145728", x-mock-flood: length}}
  - model_name: huge-chunked
    litellm_params: {model: openai/m, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0.0001, headers: {x-mock-flood-bytes: "3145728", x-mock-flood: chunked}}
  - model_name: huge-event
    litellm_params: {model: openai/m, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0.0001, headers: {x-mock-flood-bytes: "3145728", x-mock-flood: event}}
  - model_name: huge-claude
    litellm_params: {model: anthropic/m, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0.0001, headers: {x-mock-flood-bytes: "3145728", x-mock-flood: event}}
general_settings:
  master_key: sk-1234
  max_response_size_mb: 1
`

// TestUpstreamAnswersAreBounded: a whole answer over max_response_size_mb
// is a 502 in the OpenAI shape and releases its hold; a stream event over
// the bound ends the stream with an error event in the client's API, and
// the stream is booked, with what it produced, as a failure.
func TestUpstreamAnswersAreBounded(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	t.Cleanup(up.Close)
	cfg, err := config.Parse("b.yaml", []byte(strings.ReplaceAll(boundsYAML, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	url, _ := serveSrv(t, cfg, Options{Store: st})
	// The budget covers one hold of a max_tokens 3 request (3e-4), not two:
	// a hold that is not released refuses the next request.
	for _, k := range []string{`{"key":"sk-bounded-key","max_budget":0.0004}`, `{"key":"sk-bounded-streams"}`} {
		if code, body := send(t, url+"/key/generate", "sk-1234", k); code != 200 {
			t.Fatal(code, body)
		}
	}
	const key, streamKey = "sk-bounded-key", "sk-bounded-streams"

	for _, model := range []string{"huge-length", "huge-chunked", "huge-length", "huge-chunked"} {
		code, body := send(t, url+"/v1/chat/completions", key, `{"model":"`+model+`","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`)
		if code != 502 {
			t.Fatalf("%s: %d %.200s", model, code, body)
		}
		e := decodeError(t, []byte(body))
		if e.Error.Type != "api_error" || !strings.Contains(e.Error.Message, "max_response_size_mb") {
			t.Fatalf("%s: %s", model, body)
		}
	}

	tests := []struct {
		name, path, model string
		want              []string
	}{
		{"openai client", "/v1/chat/completions", "huge-event", []string{`"content":"hi"`, `data: {"error":{"message":"the upstream sent a stream event over 1048576 bytes`, `"code":"upstream_event_too_large"`}},
		{"openai client, anthropic upstream", "/v1/chat/completions", "huge-claude", []string{`"content":"hi"`, `data: {"error":{"message":"the upstream sent a stream event over`}},
		{"anthropic client", "/v1/messages", "huge-event", []string{`"text":"hi"`, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\""}},
		{"anthropic client, anthropic upstream", "/v1/messages", "huge-claude", []string{`"text":"hi"`, "event: error\ndata: {\"type\":\"error\""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := postAs(t, url, tt.path, `{"model":"`+tt.model+`","max_tokens":3,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
				"Authorization", "Bearer "+streamKey)
			if resp.StatusCode != 200 || len(body) > 64<<10 {
				t.Fatalf("%d, %d bytes: %.300s", resp.StatusCode, len(body), body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("no %q in\n%s", w, body)
				}
			}
			if strings.Contains(body, "[DONE]") || strings.Contains(body, "message_stop") {
				t.Errorf("the stream was not ended by the gateway:\n%s", body)
			}
		})
	}
	// The four streams are booked with what they produced (one chunk each),
	// as failures; the whole answers as failures with no cost (their usage
	// cannot be read), and no hold left.
	var logs []store.SpendLog
	if _, ok := within(10*time.Second, func() bool {
		logs, _, _ = st.ListSpendLogs(t.Context(), store.SpendFilter{KeyHash: sha(streamKey)})
		return len(logs) >= 4
	}); !ok {
		t.Fatalf("spend rows: %+v", logs)
	}
	for _, l := range logs {
		if l.Status != 502 || l.CompletionTokens < 1 || l.Cost <= 0 {
			t.Errorf("row %+v: want status 502 and the chunk produced booked", l)
		}
	}
	if _, ok := within(10*time.Second, func() bool {
		logs, _, _ = st.ListSpendLogs(t.Context(), store.SpendFilter{KeyHash: sha(key)})
		return len(logs) >= 4
	}); !ok {
		t.Fatalf("spend rows for the refused whole answers: %+v", logs)
	}
	for _, l := range logs {
		if l.Status != 502 || l.Cost != 0 {
			t.Errorf("row %+v: want status 502 and no cost", l)
		}
	}
}
