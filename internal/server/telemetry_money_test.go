package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store"
)

// moneyUpstream is an OpenAI fake whose behaviour the upstream model
// chooses: ok (5 prompt, 3 completion tokens), flaky (every other request
// a 500, the first one failing), down (500), bad (400), hang (never
// answers), slow (a stream of 40 chunks 50 ms apart). Streams end with a
// usage chunk.
type moneyUpstream struct{ flaky atomic.Int64 }

func (u *moneyUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &req)
	fail := func(code int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"message":"upstream says %d","type":"server_error"}}`, code)
	}
	switch req.Model {
	case "down":
		fail(500)
		return
	case "bad":
		fail(400)
		return
	case "flaky":
		if u.flaky.Add(1)%2 == 1 {
			fail(500)
			return
		}
	case "stall":
		if req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			fl, _ := w.(http.Flusher)
			for i := 0; i < 3; i++ {
				fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"ok\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}]}\n\n")
				fl.Flush()
			}
		}
		select {
		case <-r.Context().Done():
		case <-time.After(60 * time.Second):
		}
		return
	case "hang":
		select {
		case <-r.Context().Done():
		case <-time.After(60 * time.Second):
		}
		return
	}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"ok","choices":[{"index":0,"message":{"role":"assistant","content":"one two three"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	n, delay := 3, time.Duration(0)
	if req.Model == "slow" {
		n, delay = 40, 50*time.Millisecond
	}
	fl, _ := w.(http.Flusher)
	for i := 0; i < n; i++ {
		if _, err := fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"ok\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}]}\n\n"); err != nil {
			return
		}
		fl.Flush()
		if delay > 0 {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(delay):
			}
		}
	}
	fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"ok\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\ndata: [DONE]\n\n", n, n+5)
	fl.Flush()
}

const moneyConfig = `
model_list:
  - model_name: ok
    litellm_params: {model: openai/ok, api_base: "{{UP}}/v1", api_key: sk-up, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
  - model_name: flaky
    litellm_params: {model: openai/flaky, api_base: "{{UP}}/v1", api_key: sk-up, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
  - model_name: down
    litellm_params: {model: openai/down, api_base: "{{UP}}/v1", api_key: sk-up, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
  - model_name: backup
    litellm_params: {model: openai/ok, api_base: "{{UP}}/v1", api_key: sk-up, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
  - model_name: bad
    litellm_params: {model: openai/bad, api_base: "{{UP}}/v1", api_key: sk-up, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
  - model_name: hang
    litellm_params: {model: openai/hang, api_base: "{{UP}}/v1", api_key: sk-up, timeout: 0.5, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
  - model_name: stall
    litellm_params: {model: openai/stall, api_base: "{{UP}}/v1", api_key: sk-up, stream_timeout: 0.5, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
  - model_name: slow
    litellm_params: {model: openai/slow, api_base: "{{UP}}/v1", api_key: sk-up, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
router_settings:
  num_retries: 1
  allowed_fails: 1000
  fallbacks: [{"down": ["backup"]}]
general_settings:
  master_key: sk-1234
`

const moneyTelemetry = `  store_prompts_in_spend_logs: true
litellm_settings:
  callbacks: ["hook"]
callback_settings:
  hook:
    callback_type: generic_api
    endpoint: "{{HOOK}}"
`

type moneyOutcome struct {
	rows     []store.SpendLog
	payloads []map[string]any
	status   int
}

// moneyCase runs one request shaped by how (on a fresh gateway over st,
// with or without content logging and a webhook), stops the gateway (the
// writer and the callback queues flush), and returns the key's spend rows
// and the webhook's payloads of the key.
func moneyCase(t *testing.T, st store.Store, telemetry bool, how func(t *testing.T, url, key string, stop func()) int) moneyOutcome {
	t.Helper()
	up := httptest.NewServer(&moneyUpstream{})
	t.Cleanup(up.Close)
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	t.Cleanup(hs.Close)
	yaml := moneyConfig
	if telemetry {
		yaml += moneyTelemetry
	}
	yaml = strings.NewReplacer("{{UP}}", up.URL, "{{HOOK}}", hs.URL).Replace(yaml)
	cfg, err := config.Parse("m.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	e := serveWith(t, cfg, Options{Store: st, ShutdownTimeout: 300 * time.Millisecond})
	_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
	key, _ := out["key"].(string)
	if key == "" {
		t.Fatalf("key/generate: %v", out)
	}
	stop := func() {
		// A shutdown timeout passing with a request in flight is Serve's
		// error by design; anything else is not.
		if err := e.stop(); err != nil && !strings.Contains(err.Error(), "graceful shutdown") {
			t.Errorf("serve: %v", err)
		}
	}
	status := how(t, e.url, key, stop)
	stop()
	logs, _, err := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	if err != nil {
		t.Fatal(err)
	}
	var mine []map[string]any
	for _, p := range hook.payloads(t) {
		md, _ := p["metadata"].(map[string]any)
		if md["user_api_key_hash"] == sha(key) {
			mine = append(mine, p)
		}
	}
	return moneyOutcome{rows: logs, payloads: mine, status: status}
}

func moneyChat(t *testing.T, url, key, model string, stream bool) int {
	resp, _ := post(t, url+"/v1/chat/completions", fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":"mail jane@example.com"}]}`, model, stream),
		"Authorization", "Bearer "+key)
	return resp.StatusCode
}

// readChunks starts a slow stream and returns once n chunks arrived, with
// the body still open.
func readChunks(t *testing.T, url, key string, n int) (io.Closer, chan struct{}) {
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(`{"model":"slow","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	readDataChunks(t, r, n)
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, r); close(done) }()
	return resp.Body, done
}

// readDataChunks reads a stream from r until n data chunks have arrived.
func readDataChunks(t *testing.T, r *bufio.Reader, n int) {
	t.Helper()
	for seen := 0; seen < n; {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("the stream ended after %d chunks: %v", seen, err)
		}
		if strings.HasPrefix(line, "data: {") {
			seen++
		}
	}
}

// TestMoneyPathsWithTelemetryBookOnce: with store_prompts_in_spend_logs and a
// webhook on, every way a call can end books the same spend rows (count,
// status, cost) as with both off, and the webhook gets exactly one payload
// per call, with the status the call ended with. A call that failed
// upstream has one failure row without cost.
func TestMoneyPathsWithTelemetryBookOnce(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		how         func(t *testing.T, url, key string, stop func()) int
		rows        int
		wantStatus  string // the payload's status
		minHTTPCode int    // the payload's http_status at least
		// cut: the stream is cut while the upstream is still sending, so
		// what was produced (and its cost) depends on timing; the two runs
		// are compared by status and by the row's cost matching the key's
		// spend, not by equal amounts.
		cut bool
	}{
		{"success", func(t *testing.T, url, key string, _ func()) int { return moneyChat(t, url, key, "ok", false) }, 1, "success", 200, false},
		{"stream", func(t *testing.T, url, key string, _ func()) int { return moneyChat(t, url, key, "ok", true) }, 1, "success", 200, false},
		{"upstream 400", func(t *testing.T, url, key string, _ func()) int { return moneyChat(t, url, key, "bad", false) }, 1, "failure", 400, false},
		{"retry then success", func(t *testing.T, url, key string, _ func()) int { return moneyChat(t, url, key, "flaky", false) }, 1, "success", 200, false},
		{"retry then success stream", func(t *testing.T, url, key string, _ func()) int { return moneyChat(t, url, key, "flaky", true) }, 1, "success", 200, false},
		{"fallback", func(t *testing.T, url, key string, _ func()) int { return moneyChat(t, url, key, "down", false) }, 1, "success", 200, false},
		{"fallback stream", func(t *testing.T, url, key string, _ func()) int { return moneyChat(t, url, key, "down", true) }, 1, "success", 200, false},
		{"timeout", func(t *testing.T, url, key string, _ func()) int { return moneyChat(t, url, key, "hang", false) }, 1, "failure", 400, false},
		{"client gone mid-stream", func(t *testing.T, url, key string, _ func()) int {
			body, _ := readChunks(t, url, key, 3)
			body.Close()
			return 200
		}, 1, "failure", 499, true},
		{"messages success", func(t *testing.T, url, key string, _ func()) int {
			resp, _ := post(t, url+"/v1/messages", `{"model":"ok","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}`, "Authorization", "Bearer "+key)
			return resp.StatusCode
		}, 1, "success", 200, false},
		{"messages stream retry", func(t *testing.T, url, key string, _ func()) int {
			resp, _ := post(t, url+"/v1/messages", `{"model":"flaky","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"hi"}]}`, "Authorization", "Bearer "+key)
			return resp.StatusCode
		}, 1, "success", 200, false},
		{"responses stream fallback", func(t *testing.T, url, key string, _ func()) int {
			resp, _ := post(t, url+"/v1/responses", `{"model":"down","stream":true,"input":"hi"}`, "Authorization", "Bearer "+key)
			return resp.StatusCode
		}, 1, "success", 200, false},
		{"upstream stalls mid-stream", func(t *testing.T, url, key string, _ func()) int { return moneyChat(t, url, key, "stall", true) }, 1, "failure", 502, false},
		{"shutdown mid-stream", func(t *testing.T, url, key string, stop func()) int {
			body, done := readChunks(t, url, key, 3)
			defer body.Close()
			stop() // the shutdown timeout passes with the stream in flight
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Error("the stream did not end within 60 s of the shutdown")
			}
			return 200
		}, 1, "", 0, true},
	}
	stores(t, func(t *testing.T, st store.Store) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel() // each case its own gateways, upstream, webhook and key (rows read by key)
				off := moneyCase(t, st, false, tc.how)
				on := moneyCase(t, st, true, tc.how)
				if len(off.rows) != tc.rows {
					t.Errorf("telemetry off: %d spend rows, want %d: %+v", len(off.rows), tc.rows, off.rows)
				}
				if len(on.rows) != len(off.rows) {
					t.Errorf("telemetry on: %d spend rows, off: %d", len(on.rows), len(off.rows))
				}
				for i := 0; i < len(on.rows) && i < len(off.rows); i++ {
					a, b := on.rows[i], off.rows[i]
					sameCost := tc.cut || math.Abs(a.Cost-b.Cost) <= 1e-12
					if a.Status != b.Status || !sameCost || a.PromptTokens != b.PromptTokens || (a.CompletionTokens == 0) != (b.CompletionTokens == 0) {
						t.Errorf("row on: status %d cost %v tokens %d/%d; off: status %d cost %v tokens %d/%d",
							a.Status, a.Cost, a.PromptTokens, a.CompletionTokens, b.Status, b.Cost, b.PromptTokens, b.CompletionTokens)
					}
					if failed := a.Status >= 400 && a.PromptTokens == 0 && a.CompletionTokens == 0; failed != (a.Cost == 0) {
						t.Errorf("row with telemetry on: status %d, tokens %d/%d, cost %v (a failure without tokens costs 0, anything else more)", a.Status, a.PromptTokens, a.CompletionTokens, a.Cost)
					}
				}
				if k, err := st.GetKey(context.Background(), sha(keyOfRows(on.rows))); err == nil && len(on.rows) == 1 && math.Abs(k.Spend-on.rows[0].Cost) > 1e-12 {
					t.Errorf("key spend %v, its row %v", k.Spend, on.rows[0].Cost)
				}
				if len(off.payloads) != 0 {
					t.Errorf("telemetry off: %d payloads", len(off.payloads))
				}
				if len(on.payloads) != 1 {
					t.Fatalf("telemetry on: %d callback payloads for one call, want 1: %v", len(on.payloads), on.payloads)
				}
				p := on.payloads[0]
				if tc.wantStatus != "" && p["status"] != tc.wantStatus {
					t.Errorf("payload status %v, want %s (http_status %v)", p["status"], tc.wantStatus, p["http_status"])
				}
				if hs, _ := p["http_status"].(float64); int(hs) < tc.minHTTPCode {
					t.Errorf("payload http_status %v, want at least %d", p["http_status"], tc.minHTTPCode)
				}
				if len(on.rows) == 1 {
					if c, _ := p["response_cost"].(float64); math.Abs(c-on.rows[0].Cost) > 1e-12 {
						t.Errorf("payload response_cost %v, spend row %v", p["response_cost"], on.rows[0].Cost)
					}
				}
			})
		}
	})
}

func keyOfRows(rows []store.SpendLog) string {
	if len(rows) == 0 {
		return ""
	}
	return rows[0].KeyHash
}
