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
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// Prices: input 1e-5, output 1e-4 per token, so a booked cost can be
// checked against the tokens the mock reported.
const responsesConfig = `
model_list:
  - model_name: gpt-resp
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}/v1", api_key: sk-up, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
    model_info: {id: native-openai}
  - model_name: azure-resp
    litellm_params: {model: azure/my-deployment, api_base: "{{UP}}", api_key: az-up, api_version: "2024-10-21", input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
    model_info: {id: native-azure}
  - model_name: chat-only
    litellm_params: {model: hosted_vllm/llama, api_base: "{{UP}}/v1", input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-sonnet, api_base: "{{UP}}", api_key: sk-ant, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
  - model_name: broken
    litellm_params: {model: openai/x, api_base: "http://127.0.0.1:1", input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
litellm_settings:
  fallbacks: [{"broken": ["gpt-resp"]}]
general_settings:
  master_key: sk-1234
`

func startResponses(t *testing.T) *spendEnv {
	t.Helper()
	return startConfig(t, sqliteStore(t), mockupstream.Options{Chunks: 3}, responsesConfig)
}

func (e *spendEnv) newKey(t *testing.T, body string) string {
	t.Helper()
	_, out := e.post(t, "/key/generate", "sk-1234", body)
	k, _ := out["key"].(string)
	if k == "" {
		t.Fatalf("key/generate: %v", out)
	}
	return k
}

// call sends method path with key and returns the status and body.
func (e *spendEnv) call(t *testing.T, method, path, key, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// rowFor is the one spend row of key.
func (e *spendEnv) rowFor(t *testing.T, key string) store.SpendLog {
	t.Helper()
	e.srv.writer.Flush()
	logs, _, err := e.store.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	if err != nil || len(logs) != 1 {
		t.Fatalf("spend rows of the key: %v %+v", err, logs)
	}
	return logs[0]
}

func checkCost(t *testing.T, row store.SpendLog) {
	t.Helper()
	want := float64(row.PromptTokens)*0.00001 + float64(row.CompletionTokens)*0.0001
	if row.PromptTokens <= 0 || row.CompletionTokens <= 0 || math.Abs(row.Cost-want) > 1e-12 || row.CallType != "aresponses" {
		t.Fatalf("spend row %+v, want cost %v", row, want)
	}
}

type sseEvent struct {
	name string
	data map[string]any
}

// readEvents reads a whole event stream.
func readEvents(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.data); err != nil {
				t.Fatalf("event data %q: %v", line, err)
			}
		case line == "" && cur.data != nil:
			out = append(out, cur)
			cur = sseEvent{}
		}
	}
	return out
}

func (e *spendEnv) stream(t *testing.T, key, body string) (*http.Response, []sseEvent) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/v1/responses", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp, readEvents(t, resp.Body)
}

// TestResponsesPassthrough: OpenAI and Azure deployments get the Responses
// request as sent (the model replaced) at their own endpoint; the answer
// comes back with a sealed id, and the usage it reports is booked at the
// price table's cost under that id.
func TestResponsesPassthrough(t *testing.T) {
	e := startResponses(t)
	tests := []struct {
		model, upstreamModel, path, query string
	}{
		{"gpt-resp", "gpt-4o-mini", "/v1/responses", ""},
		{"azure-resp", "my-deployment", "/openai/responses", "api-version=2025-04-01-preview"},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			key := e.newKey(t, `{}`)
			body := `{"model":"` + tt.model + `","input":"tell me a story","instructions":"be brief","max_output_tokens":50,"metadata":{"k":"v"}}`
			status, b := e.call(t, "POST", "/v1/responses", key, body)
			var out struct {
				ID     string `json:"id"`
				Object string `json:"object"`
				Output []struct {
					Content []struct{ Text string } `json:"content"`
				} `json:"output"`
			}
			if status != 200 || json.Unmarshal(b, &out) != nil || out.Object != "response" || !strings.HasPrefix(out.ID, "resp_") ||
				strings.HasPrefix(out.ID, "resp_mock") || len(out.Output) != 1 || !strings.Contains(out.Output[0].Content[0].Text, "tell me a story") {
				t.Fatalf("%d %s", status, b)
			}
			got := e.mock.LastRequest()
			if got.Path != tt.path || got.Query != tt.query {
				t.Fatalf("upstream got %s?%s", got.Path, got.Query)
			}
			want := strings.Replace(body, `"model":"`+tt.model+`"`, `"model":"`+tt.upstreamModel+`"`, 1)
			if string(got.Body) != want {
				t.Fatalf("upstream body %s, want %s", got.Body, want)
			}
			row := e.rowFor(t, key)
			checkCost(t, row)
			if row.ResponseID != out.ID {
				t.Fatalf("row response id %q, answer id %q", row.ResponseID, out.ID)
			}
		})
	}
	t.Run("stream", func(t *testing.T) {
		key := e.newKey(t, `{}`)
		resp, evs := e.stream(t, key, `{"model":"gpt-resp","input":"one two three four five six","stream":true}`)
		if resp.StatusCode != 200 || len(evs) < 8 || evs[0].name != "response.created" || evs[len(evs)-1].name != "response.completed" {
			t.Fatalf("%d %+v", resp.StatusCode, evs)
		}
		deltas := 0
		for i, ev := range evs {
			if ev.data["sequence_number"] != float64(i) {
				t.Fatalf("event %d: %v", i, ev.data)
			}
			if ev.name == "response.output_text.delta" {
				deltas++
			}
		}
		final := evs[len(evs)-1].data["response"].(map[string]any)
		id := final["id"].(string)
		created := evs[0].data["response"].(map[string]any)["id"]
		if deltas != 3 || created != id || strings.HasPrefix(id, "resp_mock") {
			t.Fatalf("deltas %d, ids %v %v", deltas, created, id)
		}
		row := e.rowFor(t, key)
		checkCost(t, row)
		usage := final["usage"].(map[string]any)
		if row.ResponseID != id || float64(row.CompletionTokens) != usage["output_tokens"] || float64(row.PromptTokens) != usage["input_tokens"] {
			t.Fatalf("row %+v, usage %v", row, usage)
		}
	})
}

// TestResponsesTranslated: a chat-only deployment and an Anthropic one
// serve the Responses API through translation, streamed or not, and are
// booked like any call.
func TestResponsesTranslated(t *testing.T) {
	e := startResponses(t)
	tests := []struct{ model, path string }{
		{"chat-only", "/v1/chat/completions"},
		{"claude", "/v1/messages"},
	}
	body := `{"model":%q,"instructions":"be brief","input":[{"role":"user","content":[{"type":"input_text","text":"alpha beta gamma"}]}],"max_output_tokens":40%s}`
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			key := e.newKey(t, `{}`)
			status, b := e.call(t, "POST", "/v1/responses", key, sprintf(body, tt.model, ""))
			var out struct {
				Object, Status string
				Output         []struct {
					Type    string
					Content []struct{ Type, Text string }
				}
				Usage struct {
					InputTokens  int64 `json:"input_tokens"`
					OutputTokens int64 `json:"output_tokens"`
				}
			}
			if status != 200 || json.Unmarshal(b, &out) != nil || out.Object != "response" || out.Status != "completed" || len(out.Output) != 1 ||
				out.Output[0].Type != "message" || out.Output[0].Content[0].Type != "output_text" || !strings.Contains(out.Output[0].Content[0].Text, "alpha beta gamma") {
				t.Fatalf("%d %s", status, b)
			}
			got := e.mock.LastRequest()
			if got.Path != tt.path || !strings.Contains(string(got.Body), "be brief") || !strings.Contains(string(got.Body), `"max_tokens":40`) {
				t.Fatalf("upstream got %s %s", got.Path, got.Body)
			}
			row := e.rowFor(t, key)
			checkCost(t, row)
			if row.CompletionTokens != out.Usage.OutputTokens || row.PromptTokens != out.Usage.InputTokens {
				t.Fatalf("row %+v, answer usage %+v", row, out.Usage)
			}

			key = e.newKey(t, `{}`)
			resp, evs := e.stream(t, key, sprintf(body, tt.model, `,"stream":true`))
			names := make([]string, len(evs))
			for i, ev := range evs {
				names[i] = ev.name
				if ev.data["sequence_number"] != float64(i) {
					t.Fatalf("event %d: %v", i, ev.data)
				}
			}
			joined := strings.Join(names, " ")
			for _, want := range []string{"response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta",
				"response.output_text.done response.content_part.done response.output_item.done response.completed"} {
				if !strings.Contains(joined, want) {
					t.Fatalf("%d events %s", resp.StatusCode, joined)
				}
			}
			final := evs[len(evs)-1].data["response"].(map[string]any)
			usage := final["usage"].(map[string]any)
			row = e.rowFor(t, key)
			checkCost(t, row)
			if float64(row.CompletionTokens) != usage["output_tokens"] || final["output"].([]any)[0].(map[string]any)["type"] != "message" {
				t.Fatalf("row %+v, final %v", row, final)
			}
		})
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// TestResponsesGoverned: a spent budget refuses a Responses call before the
// upstream, a failing deployment falls back, and rate limits apply, as for
// chat.
func TestResponsesGoverned(t *testing.T) {
	e := startResponses(t)
	key := e.newKey(t, `{"max_budget":0}`)
	before := e.mock.Stats().Requests
	status, b := e.call(t, "POST", "/v1/responses", key, `{"model":"gpt-resp","input":"hi"}`)
	if status != 400 || decodeError(t, b).Error.Type != "budget_exceeded" || e.mock.Stats().Requests != before {
		t.Fatalf("spent budget: %d %s", status, b)
	}

	key = e.newKey(t, `{}`)
	req, _ := http.NewRequest("POST", e.url+"/v1/responses", strings.NewReader(`{"model":"broken","input":"fall back please"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("x-tollgate-model-id") != "native-openai" || !strings.Contains(string(b), "fall back please") {
		t.Fatalf("fallback: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	checkCost(t, e.rowFor(t, key))

	key = e.newKey(t, `{"rpm_limit":1}`)
	if status, b := e.call(t, "POST", "/v1/responses", key, `{"model":"gpt-resp","input":"one"}`); status != 200 {
		t.Fatalf("first call under rpm 1: %d %s", status, b)
	}
	before = e.mock.Stats().Requests
	if status, b := e.call(t, "POST", "/v1/responses", key, `{"model":"gpt-resp","input":"two"}`); status != 429 || decodeError(t, b).Error.Type != "rate_limit_error" || e.mock.Stats().Requests != before {
		t.Fatalf("second call under rpm 1: %d %s", status, b)
	}
}

// TestStoredResponsesBelongToTheirKey: GET, input_items and DELETE reach
// the deployment that created a response for the key that created it and
// for admins; another key learns nothing, and previous_response_id is held
// to the same rule.
func TestStoredResponsesBelongToTheirKey(t *testing.T) {
	e := startResponses(t)
	owner, other := e.newKey(t, `{}`), e.newKey(t, `{}`)
	admin := e.newKey(t, `{"user_id":"boss"}`)
	if s, b := e.call(t, "POST", "/user/new", "sk-1234", `{"user_id":"boss","user_role":"proxy_admin"}`); s != 200 {
		t.Fatalf("user/new: %d %s", s, b)
	}
	status, b := e.call(t, "POST", "/v1/responses", owner, `{"model":"azure-resp","input":"remember this"}`)
	var created struct{ ID string }
	if status != 200 || json.Unmarshal(b, &created) != nil {
		t.Fatalf("%d %s", status, b)
	}
	path := "/v1/responses/" + created.ID
	tests := []struct {
		name, method, path, key string
		want                    int
	}{
		{"owner reads", "GET", path, owner, 200},
		{"owner lists input items", "GET", path + "/input_items", owner, 200},
		{"master reads", "GET", path, "sk-1234", 200},
		{"admin user reads", "GET", path, admin, 200},
		{"other key may not read", "GET", path, other, 404},
		{"other key may not list", "GET", path + "/input_items", other, 404},
		{"other key may not delete", "DELETE", path, other, 404},
		{"forged id", "GET", "/v1/responses/resp_" + strings.Repeat("A", 40), owner, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.mock.Stats().Requests
			status, b := e.call(t, tt.method, tt.path, tt.key, "")
			if status != tt.want {
				t.Fatalf("%d %s", status, b)
			}
			if tt.want != 200 {
				decodeError(t, b)
				if e.mock.Stats().Requests != before {
					t.Fatal("the upstream was asked")
				}
				return
			}
			if !strings.Contains(string(b), created.ID) && !strings.Contains(string(b), "remember this") {
				t.Fatalf("answer %s", b)
			}
			if got := e.mock.LastRequest(); !strings.HasPrefix(got.Path, "/openai/responses/resp_mock") || got.Query != "api-version=2025-04-01-preview" {
				t.Fatalf("upstream got %s?%s", got.Path, got.Query)
			}
		})
	}

	// A follow-up goes to the deployment that holds the previous response,
	// with its upstream id (the mock refuses ids it does not hold).
	next := `{"model":"azure-resp","input":"and then?","previous_response_id":"` + created.ID + `"}`
	if status, b := e.call(t, "POST", "/v1/responses", other, next); status != 400 || decodeError(t, b).Error.Code != "previous_response_not_found" {
		t.Fatalf("other key's follow-up: %d %s", status, b)
	}
	if status, b := e.call(t, "POST", "/v1/responses", owner, strings.Replace(next, "azure-resp", "gpt-resp", 1)); status != 400 {
		t.Fatalf("follow-up on another model: %d %s", status, b)
	}
	status, b = e.call(t, "POST", "/v1/responses", owner, next)
	if status != 200 || !strings.Contains(string(b), `"previous_response_id":"`+created.ID+`"`) {
		t.Fatalf("owner's follow-up: %d %s", status, b)
	}

	if status, b := e.call(t, "DELETE", path, owner, ""); status != 200 || !strings.Contains(string(b), `"id":"`+created.ID+`"`) || !strings.Contains(string(b), `"deleted":true`) {
		t.Fatalf("delete: %d %s", status, b)
	}
	if status, _ := e.call(t, "GET", path, owner, ""); status != 404 {
		t.Fatalf("read after delete: %d", status)
	}

	// A translated response is not stored.
	status, b = e.call(t, "POST", "/v1/responses", owner, `{"model":"chat-only","input":"x"}`)
	if status != 200 || json.Unmarshal(b, &created) != nil {
		t.Fatalf("%d %s", status, b)
	}
	if status, b := e.call(t, "GET", "/v1/responses/"+created.ID, owner, ""); status != 404 || !strings.Contains(decodeError(t, b).Error.Message, "not stored") {
		t.Fatalf("translated response read: %d %s", status, b)
	}
}

// TestBadResponsesRequests: bad input is a 400 in OpenAI's shape and never
// reaches the upstream.
func TestBadResponsesRequests(t *testing.T) {
	e := startResponses(t)
	key := e.newKey(t, `{}`)
	tests := []struct{ name, body, param string }{
		{"not an object", `[1,2]`, ""},
		{"not JSON", `{"model":`, ""},
		{"no model", `{"input":"hi"}`, "model"},
		{"stream not a boolean", `{"model":"gpt-resp","input":"hi","stream":"yes"}`, "stream"},
		{"negative max_output_tokens", `{"model":"gpt-resp","input":"hi","max_output_tokens":-1}`, "max_output_tokens"},
		{"input a number", `{"model":"gpt-resp","input":5}`, "input"},
		{"instructions an object", `{"model":"gpt-resp","input":"hi","instructions":{}}`, "instructions"},
		{"previous id not ours", `{"model":"gpt-resp","input":"hi","previous_response_id":"resp_abc"}`, "previous_response_id"},
		{"hosted tool on a chat deployment", `{"model":"chat-only","input":"hi","tools":[{"type":"web_search"}]}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.mock.Stats().Requests
			status, b := e.call(t, "POST", "/v1/responses", key, tt.body)
			er := decodeError(t, b)
			if status != 400 || (tt.param != "" && (er.Error.Param == nil || *er.Error.Param != tt.param)) {
				t.Fatalf("%d %s", status, b)
			}
			if e.mock.Stats().Requests != before {
				t.Fatal("the upstream was asked")
			}
		})
	}
}

// TestResponsesHoldOnMaxOutputTokens: under strict budgets a Responses call
// holds its worst case, which max_output_tokens bounds (as max_tokens does
// for chat), whether the deployment is passed through or translated.
func TestResponsesHoldOnMaxOutputTokens(t *testing.T) {
	yaml := strings.Replace(responsesConfig, "litellm_settings:\n", "litellm_settings:\n  budget_enforcement: strict\n", 1)
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, yaml)
	for _, model := range []string{"gpt-resp", "chat-only"} {
		t.Run(model, func(t *testing.T) {
			key := e.newKey(t, `{"max_budget":0.10}`)
			before := e.mock.Stats().Requests
			status, b := e.call(t, "POST", "/v1/responses", key, `{"model":"`+model+`","input":"hi"}`)
			if status != 400 || !strings.Contains(decodeError(t, b).Error.Message, "max_output_tokens") || e.mock.Stats().Requests != before {
				t.Fatalf("no bound: %d %s", status, b)
			}
			status, b = e.call(t, "POST", "/v1/responses", key, `{"model":"`+model+`","input":"hi","max_output_tokens":100}`)
			if status != 200 {
				t.Fatalf("max_output_tokens 100: %d %s", status, b)
			}
			checkCost(t, e.rowFor(t, key))
		})
	}
}

// TestResponsesFailuresAndAbandonedStreams: as for chat, an upstream error
// reaches the client in OpenAI's shape and costs nothing (the hold is
// released, a failure row without cost), and a client that leaves a stream midway is charged
// for what was produced.
func TestResponsesFailuresAndAbandonedStreams(t *testing.T) {
	t.Parallel()
	yaml := strings.Replace(responsesConfig, "litellm_settings:", mockModel("failing", "x-mock-status", "500")+"litellm_settings:", 1)
	st := sqliteStore(t)
	e := startConfig(t, st, mockupstream.Options{Chunks: 20, ChunkDelay: 200 * time.Millisecond}, yaml)

	key := e.newKey(t, `{"max_budget":1}`)
	status, b := e.call(t, "POST", "/v1/responses", key, `{"model":"failing","input":"hi"}`)
	if status != 500 || decodeError(t, b).Error.Message == "" {
		t.Fatalf("failing upstream: %d %s", status, b)
	}
	e.srv.writer.Flush()
	if logs, total, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)}); total != 1 || logs[0].Cost != 0 || logs[0].Status != 500 {
		t.Fatalf("a failed call was booked, or has no failure row: %+v", logs)
	}

	for _, model := range []string{"gpt-resp", "chat-only"} {
		t.Run(model, func(t *testing.T) {
			key := e.newKey(t, `{}`)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/responses",
				strings.NewReader(`{"model":"`+model+`","stream":true,"input":"a b c d e f g h i j k l"}`))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(resp.Body)
			for deltas := 0; deltas < 2; {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				if strings.HasPrefix(line, "event: response.output_text.delta") {
					deltas++
				}
			}
			cancel() // the client walks away mid-stream
			resp.Body.Close()
			// The gateway books the call once it sees the client gone.
			logs := awaitSpendRows(e.srv, st, key)
			if len(logs) != 1 || logs[0].Status != 499 || logs[0].CompletionTokens < 2 || logs[0].Cost <= 0 {
				t.Fatalf("abandoned stream booked as %+v", logs)
			}
		})
	}
}

// TestResponsesOnTheDemoModel: the built-in demo model, which speaks only
// chat, serves the Responses API through translation, offline.
func TestResponsesOnTheDemoModel(t *testing.T) {
	srv, err := New(config.Default(), Options{Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(srv.Handler())
	defer gw.Close()
	resp, b := post(t, gw.URL+"/v1/responses", `{"model":"demo","input":"Hello there"}`)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"output_text"`) || !strings.Contains(string(b), "You said: Hello there") {
		t.Fatalf("non-stream: %d %s", resp.StatusCode, b)
	}
	resp, b = post(t, gw.URL+"/v1/responses", `{"model":"demo","stream":true,"input":"Hello there"}`)
	evs := readEvents(t, strings.NewReader(string(b)))
	if resp.StatusCode != 200 || len(evs) == 0 || evs[len(evs)-1].name != "response.completed" {
		t.Fatalf("stream: %d %s", resp.StatusCode, b)
	}
	if u := evs[len(evs)-1].data["response"].(map[string]any)["usage"].(map[string]any); u["output_tokens"].(float64) <= 0 {
		t.Fatalf("stream usage %v", u)
	}
}

// TestFollowUpsStayOnTheirDeployment: in a group of two deployments, every
// call that names a previous response goes to the deployment that created
// it (the other would not hold it).
func TestFollowUpsStayOnTheirDeployment(t *testing.T) {
	yaml := strings.Replace(responsesConfig, "litellm_settings:", `  - model_name: pair
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}/v1", input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
    model_info: {id: pair-a}
  - model_name: pair
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}/v1", input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
    model_info: {id: pair-b}
litellm_settings:`, 1)
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, yaml)
	key := e.newKey(t, `{}`)
	post := func(body string) (string, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", e.url+"/v1/responses", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ ID string }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%d %v", resp.StatusCode, err)
		}
		return out.ID, resp.Header.Get("x-tollgate-model-id")
	}
	id, first := post(`{"model":"pair","input":"start"}`)
	for i := 0; i < 12; i++ {
		next, dep := post(`{"model":"pair","input":"more","previous_response_id":"` + id + `"}`)
		if dep != first {
			t.Fatalf("follow-up %d went to %s, the response lives on %s", i, dep, first)
		}
		id = next
	}
}

// TestTranslationRefusalNamesItsField: a request the translation to chat
// refuses is a 400 naming the Responses member it refuses (not chat's
// "messages"), and never reaches the upstream.
func TestTranslationRefusalNamesItsField(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, responsesConfig)
	key := e.newKey(t, `{}`)
	for param, body := range map[string]string{
		"tools":       `{"model":"chat-only","input":"hi","tools":[{"type":"web_search"}]}`,
		"input":       `{"model":"chat-only","input":[{"type":"web_search_call","id":"ws_1"}]}`,
		"tool_choice": `{"model":"chat-only","input":"hi","tool_choice":{"type":"web_search"}}`,
		"text":        `{"model":"chat-only","input":"hi","text":{"format":{"type":"grammar"}}}`,
	} {
		before := e.mock.Stats().Requests
		status, b := e.call(t, "POST", "/v1/responses", key, body)
		if e.mock.Stats().Requests != before {
			t.Fatalf("%s: refused request reached the upstream: %d %s", param, status, b)
		}
		wantError(t, param, status, b, 400, param)
	}
}

// TestBackgroundResponsesRefused: background: true is answered "queued"
// with no usage and billed upstream later, so it is refused with a 400
// naming background before any deployment is asked, on a deployment that
// serves the Responses API and on one reached through chat alike.
func TestBackgroundResponsesRefused(t *testing.T) {
	var asked atomic.Int32
	fake := http.NewServeMux()
	fake.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"resp_bg","object":"response","status":"queued","background":true,"model":"gpt-4o-mini","output":[],"usage":null}`)
	})
	e := fakeEnv(t, fake, nativeRespConfig)
	key := e.newKey(t, `{"max_budget": 1}`)
	for _, body := range []string{
		`{"model":"gpt-resp","input":"write a long essay","background":true}`,
		`{"model":"gpt-resp","input":"write a long essay","background":true,"stream":true}`,
	} {
		status, b := e.call(t, "POST", "/v1/responses", key, body)
		wantError(t, body, status, b, 400, "background")
	}
	if n := asked.Load(); n != 0 {
		t.Fatalf("a refused background response reached the upstream %d times", n)
	}
	if status, b := e.call(t, "POST", "/v1/responses", key, `{"model":"gpt-resp","input":"hi","background":false}`); status != 200 {
		t.Fatalf("background false: %d %s", status, b)
	}
}

// nativeRespConfig is one OpenAI Responses deployment, for fakeEnv.
const nativeRespConfig = `
model_list:
  - model_name: gpt-resp
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}/v1", api_key: sk-up, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
    model_info: {id: native-openai}
general_settings:
  master_key: sk-1234
`

// TestFollowUpUsageBookedAsReported: a call whose input lives upstream
// (previous_response_id, a conversation, a stored prompt) is billed by
// OpenAI for the turns it brings, far more than its body holds. The
// gateway books the input_tokens the upstream reports, not the body's
// byte bound.
func TestFollowUpUsageBookedAsReported(t *testing.T) {
	fake := http.NewServeMux()
	fake.HandleFunc("POST /v1/responses", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		in, id := 10, "resp_up1"
		if strings.Contains(string(b), "previous_response_id") || strings.Contains(string(b), "conv_") || strings.Contains(string(b), "pmpt_") {
			in, id = 50000, "resp_up2" // the conversation so far
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"`+id+`","object":"response","status":"completed","model":"gpt-4o-mini","output":[{"type":"message","id":"msg_1","role":"assistant","status":"completed","content":[{"type":"output_text","text":"ok","annotations":[]}]}],"usage":{"input_tokens":`+itoa(in)+`,"output_tokens":5,"total_tokens":`+itoa(in+5)+`}}`)
	})
	e := fakeEnv(t, fake, nativeRespConfig)
	first := func(key string) string {
		status, b := e.call(t, "POST", "/v1/responses", key, `{"model":"gpt-resp","input":"hi"}`)
		var r struct{ ID string }
		if status != 200 || json.Unmarshal(b, &r) != nil || r.ID == "" {
			t.Fatalf("first: %d %s", status, b)
		}
		return r.ID
	}
	want := 50000*0.00001 + 5*0.0001
	for name, member := range map[string]func(key string) string{
		"previous_response_id": func(key string) string { return `"previous_response_id":"` + first(key) + `"` },
		"conversation":         func(string) string { return `"conversation":"conv_1"` },
		"prompt":               func(string) string { return `"prompt":{"id":"pmpt_1"}` },
	} {
		key := e.newKey(t, `{}`)
		status, b := e.call(t, "POST", "/v1/responses", key, `{"model":"gpt-resp","input":"and?",`+member(key)+`}`)
		if status != 200 {
			t.Fatalf("%s: %d %s", name, status, b)
		}
		var follow *store.SpendLog
		rows := e.keyRows(t, key)
		for i := range rows {
			if rows[i].ReportedPromptTokens == 50000 {
				follow = &rows[i]
			}
		}
		if follow == nil {
			t.Fatalf("%s: no row for the follow-up: %+v", name, rows)
		}
		if follow.PromptTokens != 50000 || math.Abs(follow.Cost-want) > 1e-9 {
			t.Fatalf("%s: booked %d prompt tokens, $%v (clamped=%v); the upstream billed 50000, $%v",
				name, follow.PromptTokens, follow.Cost, follow.UsageClamped, want)
		}
	}
}

// itoa is n as JSON.
func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// keyRows are the spend rows of key, after the writer flushed.
func (e *spendEnv) keyRows(t *testing.T, key string) []store.SpendLog {
	t.Helper()
	e.srv.writer.Flush()
	logs, _, err := e.store.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key), Page: store.Page{Size: 100}})
	if err != nil {
		t.Fatal(err)
	}
	return logs
}

// TestResponsesStreamLeftBeforeFirstDeltaBooked: a client that leaves
// a stream after its first event (a reasoning model thinks for a while
// before its first delta) has had its prompt sent and billed upstream.
// Chat books such a call (the control: its first chunk counts), and so do
// the Responses streams, passed through or translated: the first event
// counts though it is no delta.
func TestResponsesStreamLeftBeforeFirstDeltaBooked(t *testing.T) {
	const inProgress = `{"id":"resp_s1","object":"response","status":"in_progress","model":"gpt-4o-mini","output":[],"usage":null}`
	fake := http.NewServeMux()
	hang := func(w http.ResponseWriter, r *http.Request, events ...string) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range events {
			io.WriteString(w, ev)
		}
		w.(http.Flusher).Flush()
		select { // reasoning... until the gateway hangs up
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	}
	fake.HandleFunc("POST /v1/responses", func(w http.ResponseWriter, r *http.Request) {
		hang(w, r, "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":"+inProgress+"}\n\n",
			"event: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":"+inProgress+"}\n\n")
	})
	fake.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		hang(w, r, `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"llama","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`+"\n\n")
	})
	yaml := strings.Replace(nativeRespConfig, "general_settings:", `  - model_name: chat-only
    litellm_params: {model: hosted_vllm/llama, api_base: "{{UP}}/v1", input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
general_settings:`, 1)
	e := fakeEnv(t, fake, yaml)
	for _, c := range []struct{ name, path, model, until string }{
		{"chat (control)", "/v1/chat/completions", "chat-only", "data: "},
		{"responses passed through", "/v1/responses", "gpt-resp", "event: response.created"},
		{"responses translated", "/v1/responses", "chat-only", "event: response.created"},
	} {
		t.Run(c.name, func(t *testing.T) {
			key := e.newKey(t, `{}`)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			prompt := strings.Repeat("think hard ", 200)
			body := `{"model":"` + c.model + `","stream":true,"input":"` + prompt + `"}`
			if c.path == "/v1/chat/completions" {
				body = `{"model":"` + c.model + `","stream":true,"messages":[{"role":"user","content":"` + prompt + `"}]}`
			}
			req, _ := http.NewRequestWithContext(ctx, "POST", e.url+c.path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(resp.Body)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("stream ended before its first event: %v", err)
				}
				if strings.HasPrefix(line, c.until) {
					break
				}
			}
			cancel()
			resp.Body.Close()
			if _, ok := within(15*time.Second, func() bool { return len(e.keyRows(t, key)) > 0 }); !ok {
				t.Fatal("a stream abandoned before its first delta reached the upstream and was never booked")
			}
			if rows := e.keyRows(t, key); rows[0].PromptTokens <= 0 || rows[0].Cost <= 0 {
				t.Fatalf("booked without its prompt: %+v", rows[0])
			}
		})
	}
}

// TestStoredResponseCallsBooked: every request that reaches an upstream is
// a spend row (Files calls write cost-0 rows: afile_retrieve, ...), and a
// key's rpm_limit counts every request. GET/DELETE /v1/responses/{id} reach
// the upstream with the gateway's credentials: each takes a place under
// the limit and writes a row of cost 0.
func TestStoredResponseCallsBooked(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, responsesConfig)
	key := e.newKey(t, `{"rpm_limit": 3}`)
	status, b := e.call(t, "POST", "/v1/responses", key, `{"model":"gpt-resp","input":"hi"}`)
	var created struct{ ID string }
	if status != 200 || json.Unmarshal(b, &created) != nil {
		t.Fatalf("create: %d %s", status, b)
	}
	before := e.mock.Stats().Requests
	if s, b := e.call(t, "GET", "/v1/responses/"+created.ID, key, ""); s != 200 {
		t.Fatalf("read: %d %s", s, b)
	}
	if s, b := e.call(t, "DELETE", "/v1/responses/"+created.ID, key, ""); s != 200 {
		t.Fatalf("delete: %d %s", s, b)
	}
	s, b := e.call(t, "GET", "/v1/responses/"+created.ID, key, "")
	wantError(t, "a read past rpm_limit 3", s, b, 429, "")
	if reached := e.mock.Stats().Requests - before; reached != 2 {
		t.Fatalf("%d stored-response calls reached the upstream, want 2 (the third is past rpm_limit)", reached)
	}
	types := map[string]int{}
	for _, r := range e.keyRows(t, key) {
		if r.CallType != "aresponses" && r.Cost != 0 {
			t.Fatalf("a stored-response call cost $%v: %+v", r.Cost, r)
		}
		types[r.CallType]++
	}
	if len(e.keyRows(t, key)) != 3 || types["aget_responses"] != 1 || types["adelete_responses"] != 1 {
		t.Fatalf("spend rows by call type %v, want the create, one aget_responses and one adelete_responses", types)
	}
}

// awaitSpendRows waits (up to 30 s, flushing the spend writer) for the
// first spend rows of key, and returns them: none when the bound passed.
func awaitSpendRows(srv *Server, st store.Store, key string) []store.SpendLog {
	var logs []store.SpendLog
	for i := 0; i < 1200 && len(logs) == 0; i++ {
		srv.writer.Flush()
		logs, _, _ = st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
		if len(logs) == 0 {
			time.Sleep(25 * time.Millisecond)
		}
	}
	return logs
}
