package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/pricing"
	"github.com/tollgate/tollgate/internal/usage"
)

// geminiFake is a Gemini upstream whose answers a test sets per request: it
// records what reached it and answers with the status and body given.
type geminiFake struct {
	mu     sync.Mutex
	got    []*http.Request
	bodies []string
	answer func(r *http.Request, body string) (int, string)
}

func (f *geminiFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.got = append(f.got, r)
	f.bodies = append(f.bodies, string(b))
	f.mu.Unlock()
	status, body := f.answer(r, string(b))
	if strings.HasPrefix(body, "data:") {
		w.Header().Set("Content-Type", "text/event-stream")
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	fmt.Fprint(w, body)
}

func (f *geminiFake) last(t *testing.T) (*http.Request, string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.got) == 0 {
		t.Fatal("nothing reached Gemini")
	}
	return f.got[len(f.got)-1], f.bodies[len(f.bodies)-1]
}

// TestGeminiDeploymentsServeChatAndMessages: a gemini/ deployment answers
// OpenAI chat (plain, streamed, with tools) and Anthropic Messages clients
// through generateContent, with the key in x-goog-api-key and the model in
// the path; each answer is booked from usageMetadata at the table's price
// for the Gemini model; Google's errors come back in OpenAI's shape, and a
// 429 falls back to the next deployment.
func TestGeminiDeploymentsServeChatAndMessages(t *testing.T) {
	mock := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer mock.Close()
	fake := &geminiFake{}
	fakeSrv := httptest.NewServer(fake)
	defer fakeSrv.Close()
	yaml := fmt.Sprintf(`
model_list:
  - model_name: gemini
    litellm_params: {model: gemini/gemini-2.0-flash, api_key: g-key, api_base: "%s/v1beta"}
  - model_name: gemini-tools
    litellm_params: {model: gemini/gemini-2.5-flash, api_key: g-key-2, api_base: "%s/v1beta"}
  - model_name: flaky
    litellm_params: {model: gemini/gemini-2.0-flash, api_key: g-key-3, api_base: "%s/v1beta"}
router_settings:
  num_retries: 0
litellm_settings:
  fallbacks: [{flaky: [gemini]}]
general_settings:
  master_key: sk-1234
`, mock.URL, fakeSrv.URL, fakeSrv.URL)
	cfg, err := config.Parse("g.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{"max_budget": 1}`)

	// Plain chat.
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"gemini","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"one two three"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %v", resp.StatusCode, out)
	}
	choice := out["choices"].([]any)[0].(map[string]any)
	if msg := choice["message"].(map[string]any); !strings.Contains(fmt.Sprint(msg["content"]), "one two three") || choice["finish_reason"] != "stop" {
		t.Fatalf("chat answer %v", out)
	}

	// Streamed chat, with the usage chunk asked for.
	req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(`{"model":"gemini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"alpha beta gamma delta"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	sresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	sawUsage, done := false, false
	sc := bufio.NewScanner(sresp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
			Usage *usage.OpenAI `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
		}
		if c.Usage != nil && c.Usage.CompletionTokens > 0 {
			sawUsage = true
		}
	}
	sresp.Body.Close()
	if sresp.StatusCode != 200 || !done || !sawUsage || !strings.Contains(text.String(), "alpha") {
		t.Fatalf("stream: %d done=%v usage=%v text=%q", sresp.StatusCode, done, sawUsage, text.String())
	}

	// Tools: the function call comes back as a tool call, its thought
	// signature in the id, and the next turn sends the signature back.
	fake.answer = func(r *http.Request, body string) (int, string) {
		if strings.Contains(body, "functionResponse") {
			return 200, `{"candidates":[{"content":{"role":"model","parts":[{"text":"It is sunny."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":30,"candidatesTokenCount":4},"modelVersion":"gemini-2.5-flash","responseId":"r2"}`
		}
		return 200, geminiToolAnswerForTest
	}
	tools := `"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]`
	resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"gemini-tools","messages":[{"role":"user","content":"Weather in Paris?"}],`+tools+`}`)
	if resp.StatusCode != 200 {
		t.Fatalf("tools: %d %v", resp.StatusCode, out)
	}
	up, upBody := fake.last(t)
	if up.URL.Path != "/v1beta/models/gemini-2.5-flash:generateContent" || up.Header.Get("x-goog-api-key") != "g-key-2" || up.Header.Get("Authorization") != "" ||
		!strings.Contains(upBody, `"functionDeclarations"`) {
		t.Fatalf("upstream got %s %v %s", up.URL, up.Header, upBody)
	}
	calls := out["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["tool_calls"].([]any)
	call := calls[0].(map[string]any)
	id := call["id"].(string)
	if !strings.Contains(id, "SIG-T") || call["function"].(map[string]any)["arguments"] != `{"city":"Paris"}` {
		t.Fatalf("tool call %v", call)
	}
	follow := fmt.Sprintf(`{"model":"gemini-tools","messages":[{"role":"user","content":"Weather in Paris?"},{"role":"assistant","tool_calls":[{"id":%q,"type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":%q,"content":"sunny"}],%s}`, id, id, tools)
	if resp, out = e.post(t, "/v1/chat/completions", key, follow); resp.StatusCode != 200 {
		t.Fatalf("follow-up: %d %v", resp.StatusCode, out)
	}
	if _, upBody = fake.last(t); !strings.Contains(upBody, `"thoughtSignature":"SIG-T"`) || !strings.Contains(upBody, `"functionResponse":{"name":"get_weather"`) {
		t.Fatalf("follow-up upstream body %s", upBody)
	}

	// An Anthropic client.
	resp, out = e.post(t, "/v1/messages", key, `{"model":"gemini","max_tokens":20,"messages":[{"role":"user","content":"red green blue"}]}`)
	if resp.StatusCode != 200 || out["type"] != "message" || !strings.Contains(fmt.Sprint(out["content"]), "red") {
		t.Fatalf("messages: %d %v", resp.StatusCode, out)
	}

	// A 429 from Google: the fallback answers; a 400 comes back in
	// OpenAI's shape with Google's status as the code.
	fake.answer = func(r *http.Request, body string) (int, string) {
		if strings.Contains(body, "fail-hard") {
			return 400, `{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}`
		}
		return 429, `{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}`
	}
	if resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"flaky","messages":[{"role":"user","content":"fallback please"}]}`); resp.StatusCode != 200 {
		t.Fatalf("fallback: %d %v", resp.StatusCode, out)
	}
	resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"gemini-tools","messages":[{"role":"user","content":"fail-hard"}]}`)
	if e2, _ := out["error"].(map[string]any); resp.StatusCode != 400 || e2["code"] != "INVALID_ARGUMENT" || e2["type"] != "invalid_request_error" {
		t.Fatalf("error: %d %v", resp.StatusCode, out)
	}

	// Every answer is booked from usageMetadata at the Gemini price.
	// The upstream's refusal has a failure row without cost.
	rows := answeredRows(t, spendRows(t, e, key), 1)
	if len(rows) != 6 {
		t.Fatalf("%d answered spend rows, want 6", len(rows))
	}
	for _, r := range rows {
		model := "gemini-2.0-flash"
		if r.ModelGroup == "gemini-tools" {
			model = "gemini-2.5-flash"
		}
		p, ok := pricing.Lookup("gemini", model)
		want := p.Cost(usage.Usage{Prompt: r.PromptTokens, Completion: r.CompletionTokens})
		if !ok || r.PromptTokens <= 0 || r.CompletionTokens <= 0 || r.UsageEstimated || !near(r.Cost, want) || r.Cost <= 0 {
			t.Fatalf("booked %+v, want %v", r, want)
		}
	}
}

// geminiToolAnswerForTest is a thinking model's function call, with the
// signature of its thought.
const geminiToolAnswerForTest = `{"candidates":[{"content":{"role":"model","parts":[{"text":"Look up the weather.","thought":true},{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"SIG-T"}]},"finishReason":"STOP","index":0}],
"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":5,"thoughtsTokenCount":7},"modelVersion":"gemini-2.5-flash","responseId":"r1"}`

// TestVertexDeploymentIsAuthorized: a vertex_ai/ deployment calls
// generateContent under its project and location with an access token
// from its vertex_credentials, and is booked like Gemini; credentials that
// cannot be read disable the deployment instead of stopping the gateway.
func TestVertexDeploymentIsAuthorized(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	tokens, exchanges := googleTokenServer(t)
	creds, _ := json.Marshal(serviceAccount(t, "svc@proj.iam.gserviceaccount.com", tokens.URL))
	yaml := fmt.Sprintf(`
model_list:
  - model_name: vertex-gemini
    litellm_params:
      model: vertex_ai/gemini-2.0-flash
      vertex_project: proj-1
      vertex_location: europe-west4
      vertex_credentials: %s
      api_base: %s
  - model_name: broken-vertex
    litellm_params:
      model: vertex_ai/gemini-2.0-flash
      vertex_project: proj-1
      vertex_credentials: /nonexistent/key.json
general_settings:
  master_key: sk-1234
`, creds, up.URL)
	cfg, err := config.Parse("v.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{}`)
	for i := range 2 {
		resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"vertex-gemini","messages":[{"role":"user","content":"hello vertex"}]}`)
		if resp.StatusCode != 200 {
			t.Fatalf("call %d: %d %v", i, resp.StatusCode, out)
		}
		got := mock.LastRequest()
		if got.Path != "/v1/projects/proj-1/locations/europe-west4/publishers/google/models/gemini-2.0-flash:generateContent" ||
			got.Header.Get("Authorization") != "Bearer ya29.svc" || strings.Contains(fmt.Sprint(got.Header), key) {
			t.Fatalf("vertex got %s %v", got.Path, got.Header)
		}
	}
	if n := exchanges.Load(); n != 1 {
		t.Fatalf("%d token exchanges for two calls, want 1", n)
	}
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"broken-vertex","messages":[{"role":"user","content":"x"}]}`)
	if resp.StatusCode != 404 || !strings.Contains(fmt.Sprint(out), "vertex credentials") {
		t.Fatalf("disabled deployment: %d %v", resp.StatusCode, out)
	}
	rows := spendRows(t, e, key)
	p, _ := pricing.Lookup("vertex_ai", "gemini-2.0-flash")
	if len(rows) != 2 || rows[0].Cost <= 0 || !near(rows[0].Cost, p.Cost(usage.Usage{Prompt: rows[0].PromptTokens, Completion: rows[0].CompletionTokens})) {
		t.Fatalf("booked %+v", rows)
	}
}

// TestResponsesReachGemini: a Responses API client reaches a Gemini (and a
// Cohere) deployment through chat, plain and streamed, and the call is
// booked from the provider's usage like any other.
func TestResponsesReachGemini(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	cfg, err := config.Parse("g.yaml", []byte(fmt.Sprintf(`
model_list:
  - model_name: gemini
    litellm_params: {model: gemini/gemini-2.0-flash, api_key: g-key, api_base: "%s/v1beta"}
  - model_name: cohere
    litellm_params: {model: cohere/command-r, api_key: co-key, api_base: "%s"}
general_settings:
  master_key: sk-1234
`, up.URL, up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{}`)
	// Cohere, like every deployment chat reaches translated, takes a
	// Responses request through chat.
	resp, out := e.post(t, "/v1/responses", key, `{"model":"cohere","input":"left right up down"}`)
	if resp.StatusCode != 200 || out["status"] != "completed" || !strings.Contains(fmt.Sprint(out["output"]), "left") {
		t.Fatalf("responses to cohere: %d %v", resp.StatusCode, out)
	}
	if got := mock.LastRequest(); got.Path != "/v2/chat" || got.Header.Get("Authorization") != "Bearer co-key" {
		t.Fatalf("cohere got %s %v", got.Path, got.Header)
	}
	resp, out = e.post(t, "/v1/responses", key, `{"model":"gemini","instructions":"Be brief.","input":"north south east west"}`)
	if resp.StatusCode != 200 || out["object"] != "response" || out["status"] != "completed" || !strings.Contains(fmt.Sprint(out["output"]), "north") {
		t.Fatalf("responses: %d %v", resp.StatusCode, out)
	}
	if got := mock.LastRequest(); got.Path != "/v1beta/models/gemini-2.0-flash:generateContent" || !strings.Contains(string(got.Body), `"systemInstruction"`) {
		t.Fatalf("gemini got %s %s", got.Path, got.Body)
	}
	req, _ := http.NewRequest("POST", e.url+"/v1/responses", strings.NewReader(`{"model":"gemini","stream":true,"input":"one two three four five"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	sresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(sresp.Body)
	sresp.Body.Close()
	stream := string(raw)
	if sresp.StatusCode != 200 || !strings.Contains(stream, "response.output_text.delta") || !strings.Contains(stream, "event: response.completed") ||
		!strings.Contains(stream, `"output_tokens"`) {
		t.Fatalf("stream: %d\n%s", sresp.StatusCode, stream)
	}
	if got := mock.LastRequest(); got.Path != "/v1beta/models/gemini-2.0-flash:streamGenerateContent" || got.Query != "alt=sse" {
		t.Fatalf("gemini got %s?%s", got.Path, got.Query)
	}
	rows := spendRows(t, e, key)
	p, _ := pricing.Lookup("gemini", "gemini-2.0-flash")
	if len(rows) != 3 || rows[0].ModelGroup != "cohere" || rows[0].Cost <= 0 {
		t.Fatalf("%d rows: %+v", len(rows), rows)
	}
	for _, r := range rows[1:] {
		if r.CallType != "aresponses" || r.UsageEstimated || r.CompletionTokens <= 0 || !near(r.Cost, p.Cost(usage.Usage{Prompt: r.PromptTokens, Completion: r.CompletionTokens})) {
			t.Fatalf("booked %+v", r)
		}
	}
}

// TestVertexCredentialsNeverShown: vertex_credentials the gateway cannot
// read (here a key pasted base64-encoded) disable the deployment, and the
// reason a caller of its model group is shown never quotes them; a
// missing key file is named, so the operator knows which.
func TestVertexCredentialsNeverShown(t *testing.T) {
	const secret = "eyJ0eXBlIjoic2VydmljZV9hY2NvdW50IiwicHJpdmF0ZV9rZXkiOiJTRUNSRVQtS0VZLU1BVEVSSUFMIn0"
	missing := t.TempDir() + "/missing-key.json"
	cfg, err := config.Parse("v.yaml", []byte(fmt.Sprintf(`
model_list:
  - model_name: pasted
    litellm_params: {model: vertex_ai/gemini-2.0-flash, vertex_project: proj-1, vertex_credentials: "%s"}
  - model_name: missing
    litellm_params: {model: vertex_ai/gemini-2.0-flash, vertex_project: proj-1, vertex_credentials: "%s"}
general_settings:
  master_key: sk-1234
`, secret, missing)))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{}`)
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"pasted","messages":[{"role":"user","content":"x"}]}`)
	if msg := fmt.Sprint(out); resp.StatusCode != 404 || strings.Contains(msg, secret) || strings.Contains(msg, "SECRET") ||
		!strings.Contains(msg, fmt.Sprintf("neither a service account JSON nor a readable file (%d bytes)", len(secret))) {
		t.Fatalf("pasted key: %d %v", resp.StatusCode, out)
	}
	resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"missing","messages":[{"role":"user","content":"x"}]}`)
	if resp.StatusCode != 404 || !strings.Contains(fmt.Sprint(out), missing) {
		t.Fatalf("missing key file: %d %v", resp.StatusCode, out)
	}
}

// TestVertexKeyFileRotatedOnReload: a vertex_ai deployment whose
// vertex_credentials names a key file signs with the key the file holds
// when the configuration is read: after the file is replaced by another
// account's key (a rotation) and the configuration reloaded, Vertex AI
// gets the new account's token, not the old one cached by the path.
func TestVertexKeyFileRotatedOnReload(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	tokens, _ := googleTokenServer(t)
	file := t.TempDir() + "/key.json"
	writeKey := func(email string) {
		if err := os.WriteFile(file, []byte(serviceAccount(t, email, tokens.URL)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	yaml := []byte(fmt.Sprintf(`
model_list:
  - model_name: vx
    litellm_params: {model: vertex_ai/gemini-2.0-flash, vertex_project: proj-1, vertex_credentials: %s, api_base: %s}
general_settings:
  master_key: sk-1234
`, file, up.URL))
	writeKey("old@proj.iam.gserviceaccount.com")
	cfg, err := config.Parse("v.yaml", yaml)
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{}`)
	call := func() string {
		t.Helper()
		if resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"vx","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 200 {
			t.Fatalf("%d %v", resp.StatusCode, out)
		}
		return mock.LastRequest().Header.Get("Authorization")
	}
	if got := call(); got != "Bearer ya29.old" {
		t.Fatalf("first key: %q", got)
	}
	writeKey("new@proj.iam.gserviceaccount.com")
	if cfg, err = config.Parse("v.yaml", yaml); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if got := call(); got != "Bearer ya29.new" {
		t.Fatalf("after the key file was replaced and the configuration reloaded, Vertex AI got %q", got)
	}
}

// geminiOneEnv serves one gemini deployment backed by fake, with a key
// of budget $1.
func geminiOneEnv(t *testing.T, fake http.Handler) (*spendEnv, string) {
	t.Helper()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cfg, err := config.Parse("g.yaml", []byte(fmt.Sprintf(`
model_list:
  - model_name: gemini
    litellm_params: {model: gemini/gemini-2.0-flash, api_key: g-key, api_base: "%s/v1beta"}
general_settings:
  master_key: sk-1234
`, srv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	return e, newKey(t, e, `{"max_budget": 1}`)
}

const geminiShortAnswer = `{"candidates":[{"content":{"role":"model","parts":[{"text":"ok"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":1},"modelVersion":"gemini-2.0-flash","responseId":"r"}`

// TestGeminiBadRequestsStayHome: a chat request Gemini cannot take gets a
// 400 in OpenAI's shape, naming the member at fault, and never reaches
// Google: a tool message answering no call and naming no function, a tool
// or tool call without a name, a data: URL without its data, n=0, a
// negative max_tokens, only a system prompt. Empty message contents are
// left out rather than sent as empty parts.
func TestGeminiBadRequestsStayHome(t *testing.T) {
	fake := &geminiFake{answer: func(*http.Request, string) (int, string) { return 200, geminiShortAnswer }}
	e, key := geminiOneEnv(t, fake)
	sent := func() int {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		return len(fake.bodies)
	}
	for _, tc := range []struct{ name, param, body string }{
		{"tool message answering nothing", "messages", `{"model":"gemini","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"nope","content":"42"}]}`},
		{"tool without name", "tools", `{"model":"gemini","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":""}}]}`},
		{"assistant call without name", "messages", `{"model":"gemini","messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"x"}]}`},
		{"image without data", "messages", `{"model":"gemini","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:"}}]}]}`},
		{"n=0", "n", `{"model":"gemini","n":0,"messages":[{"role":"user","content":"hi"}]}`},
		{"max_tokens<0", "max_tokens", `{"model":"gemini","max_tokens":-5,"messages":[{"role":"user","content":"hi"}]}`},
		{"only system", "messages", `{"model":"gemini","messages":[{"role":"system","content":"be nice"}]}`},
	} {
		before := sent()
		resp, out := e.post(t, "/v1/chat/completions", key, tc.body)
		errObj, _ := out["error"].(map[string]any)
		if resp.StatusCode != 400 || errObj == nil || errObj["param"] != tc.param || errObj["type"] != "invalid_request_error" || sent() != before {
			t.Errorf("%s: %d %v, %d requests reached Gemini", tc.name, resp.StatusCode, out, sent()-before)
		}
	}
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"gemini","messages":[{"role":"system","content":""},{"role":"user","content":"hi"},{"role":"assistant","content":""},{"role":"user","content":"again"}]}`)
	if _, body := fake.last(t); resp.StatusCode != 200 || strings.Contains(body, `{}`) {
		t.Fatalf("empty contents: %d %v; Gemini got %s", resp.StatusCode, out, body)
	}
}

// TestGeminiAnswerWithoutUsageIsBooked: a generateContent answer without
// usageMetadata (a proxy in between, an older endpoint) still used Gemini:
// it is booked at an estimate, never at $0.
func TestGeminiAnswerWithoutUsageIsBooked(t *testing.T) {
	fake := &geminiFake{answer: func(*http.Request, string) (int, string) {
		return 200, `{"candidates":[{"content":{"role":"model","parts":[{"text":"a fairly long answer of several words"}]},"finishReason":"STOP","index":0}],"modelVersion":"gemini-2.0-flash","responseId":"r"}`
	}}
	e, key := geminiOneEnv(t, fake)
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"gemini","messages":[{"role":"user","content":"please write a fairly long answer"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, out)
	}
	rows := spendRows(t, e, key)
	if len(rows) != 1 || rows[0].Cost <= 0 || rows[0].PromptTokens <= 0 || rows[0].CompletionTokens <= 0 {
		t.Fatalf("an answer without usageMetadata was booked %+v", rows)
	}
}

// TestGeminiStreamLeftBeforeUsageIsBooked: a Gemini stream whose
// usageMetadata comes only in its last event (as Vertex AI sends it), left
// by the client after its first words, is booked at an estimate: a
// prompt, some output and a cost.
func TestGeminiStreamLeftBeforeUsageIsBooked(t *testing.T) {
	released := make(chan struct{})
	defer close(released)
	e, key := geminiOneEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range []string{"alpha ", "beta ", "gamma "} {
			fmt.Fprintf(w, "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":%q}]},\"index\":0}],\"modelVersion\":\"gemini-2.0-flash\",\"responseId\":\"r1\"}\n\n", word)
		}
		w.(http.Flusher).Flush()
		select { // the gateway lets go once its client has
		case <-r.Context().Done():
		case <-released:
		}
		fmt.Fprint(w, "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"delta\"}]},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":4,\"totalTokenCount\":13},\"modelVersion\":\"gemini-2.0-flash\",\"responseId\":\"r1\"}\n\n")
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions", strings.NewReader(`{"model":"gemini","stream":true,"messages":[{"role":"user","content":"count to four please"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && !strings.Contains(sc.Text(), "alpha") {
	}
	cancel()
	resp.Body.Close()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		e.srv.writer.Flush()
		if rows := spendRows(t, e, key); len(rows) > 0 {
			if r := rows[0]; r.PromptTokens <= 0 || r.CompletionTokens <= 0 || r.Cost <= 0 {
				t.Fatalf("a stream left before its usage was booked as prompt %d, completion %d, cost %v", r.PromptTokens, r.CompletionTokens, r.Cost)
			}
			return
		}
	}
	t.Fatal("no spend row for a stream the client left")
}
