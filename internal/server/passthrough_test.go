package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/pricing"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/usage"
)

// nativeFake is a provider speaking its own API: OpenAI, Anthropic, Gemini
// and Cohere answers with usage (10 prompt, 20 completion tokens), streams
// that wait for release after their first event, a JSON 404 for anything
// else. It records every request.
type nativeFake struct {
	mu      sync.Mutex
	got     []passRecorded
	release chan struct{}
	url     string
}

type passRecorded struct {
	Method, Host, Path, RawPath, Query string
	Header                             http.Header
	Body                               string
}

func newNativeFake(t *testing.T) *nativeFake {
	f := &nativeFake{release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *nativeFake) requests() []passRecorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]passRecorded(nil), f.got...)
}

func (f *nativeFake) last(t *testing.T) passRecorded {
	t.Helper()
	got := f.requests()
	if len(got) == 0 {
		t.Fatal("nothing reached the upstream")
	}
	return got[len(got)-1]
}

func (f *nativeFake) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.got = append(f.got, passRecorded{r.Method, r.Host, r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), string(body)})
	f.mu.Unlock()
	stream := strings.Contains(string(body), `"stream":true`)
	events := func(first string, rest ...string) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, first)
		w.(http.Flusher).Flush()
		select {
		case <-f.release:
		case <-r.Context().Done():
			return
		}
		for _, e := range rest {
			fmt.Fprint(w, e)
		}
	}
	answer := func(s string) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "native")
		fmt.Fprint(w, s)
	}
	switch {
	case r.URL.Path == "/v1/chat/completions" && stream:
		events(`data: {"id":"c1","choices":[{"delta":{"content":"hello there"}}]}`+"\n\n",
			`data: {"id":"c1","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20}}`+"\n\n", "data: [DONE]\n\n")
	case r.URL.Path == "/v1/chat/completions":
		answer(`{"id":"c1","object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}`)
	case r.URL.Path == "/v1/messages" && stream:
		events("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n",
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":20}}\n\n",
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	case r.URL.Path == "/v1/messages":
		answer(`{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":10,"output_tokens":20}}`)
	case strings.HasSuffix(r.URL.Path, ":rawPredict"): // Claude on Vertex AI
		answer(`{"id":"msg_v","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":10,"output_tokens":20}}`)
	case strings.HasSuffix(r.URL.Path, ":generateContent"):
		answer(`{"candidates":[{"content":{"parts":[{"text":"hi"}]}}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":20,"totalTokenCount":30}}`)
	case r.URL.Path == "/v2/chat":
		answer(`{"id":"co1","message":{"role":"assistant","content":[{"type":"text","text":"hi"}]},"usage":{"billed_units":{"input_tokens":10,"output_tokens":20},"tokens":{"input_tokens":15,"output_tokens":20}}}`)
	case strings.HasPrefix(r.URL.Path, "/model/") && strings.HasSuffix(r.URL.Path, "/converse-stream"):
		w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
		w.Write(eventFrame(`{"contentBlockIndex":0,"delta":{"text":"hi"}}`))
		w.Write(eventFrame(`{"metrics":{"latencyMs":5},"usage":{"inputTokens":10,"outputTokens":20,"totalTokens":30}}`))
	case strings.HasPrefix(r.URL.Path, "/model/") && strings.HasSuffix(r.URL.Path, "/converse"):
		answer(`{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":10,"outputTokens":20,"totalTokens":30}}`)
	case r.URL.Path == "/v1/models" && r.Method == http.MethodGet:
		answer(`{"object":"list","data":[]}`)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":{"message":"Invalid URL (%s %s)","type":"invalid_request_error","param":null,"code":null}}`, r.Method, r.URL.Path)
	}
}

// eventFrame is payload as one frame of AWS's binary event stream, with
// its checksums (the meter's decoder checks them).
func eventFrame(payload string) []byte {
	var b bytes.Buffer
	var h eventstream.Headers
	h.Set(":event-type", eventstream.StringValue("metadata"))
	_ = eventstream.NewEncoder().Encode(&b, eventstream.Message{Headers: h, Payload: []byte(payload)})
	return b.Bytes()
}

const passYAML = `
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}/v1", api_key: sk-upstream-openai}
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-sonnet-20241022, api_base: "{{UP}}", api_key: sk-upstream-anthropic}
general_settings:
  master_key: sk-1234
  pass_through_endpoints:
    - path: /custom/open
      target: "{{UP}}/v1/models"
      headers: {X-Injected: os.environ/TG_PT_INJECT}
    - path: /custom/paid
      target: "{{UP}}/v2"
      include_subpath: true
      auth: true
      cost_per_request: 0.25
      forward_headers: true
      headers: {Authorization: "Bearer os.environ/TG_PT_INJECT"}
`

// startPass serves passYAML against f, with Gemini's and Cohere's
// credentials from the environment (the others' from their deployments).
func startPass(t *testing.T, f *nativeFake) *spendEnv {
	t.Helper()
	t.Setenv("GEMINI_API_KEY", "sk-upstream-gemini")
	t.Setenv("GEMINI_API_BASE", f.url)
	t.Setenv("COHERE_API_KEY", "sk-upstream-cohere")
	t.Setenv("COHERE_API_BASE", f.url)
	t.Setenv("TG_PT_INJECT", "injected-secret")
	cfg, err := config.Parse("p.yaml", []byte(strings.ReplaceAll(passYAML, "{{UP}}", f.url)))
	if err != nil {
		t.Fatal(err)
	}
	return serveEnv(t, cfg, sqliteStore(t))
}

// serveEnv serves cfg on st on a real listener.
func serveEnv(t *testing.T, cfg *config.Config, st store.Store) *spendEnv {
	t.Helper()
	return serveWith(t, cfg, Options{Store: st})
}

// serveWith serves cfg with opts (the test logger added) on a real
// listener, until the test ends or the env is stopped.
func serveWith(t *testing.T, cfg *config.Config, opts Options) *spendEnv {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger
	}
	srv, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	var serveErr error
	stop := func() error {
		once.Do(func() { cancel(); serveErr = <-done })
		return serveErr
	}
	t.Cleanup(func() { stop() })
	return &spendEnv{url: "http://" + ln.Addr().String(), store: opts.Store, srv: srv, stop: stop}
}

// passSend makes one request with headers (name, value pairs) and reads the answer.
func passSend(t *testing.T, method, url, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// tableCost is what usage costs on model as provider serves it, by the price table.
func tableCost(t *testing.T, provider, model string, u usage.Usage) float64 {
	t.Helper()
	p, ok := pricing.Lookup(provider, model)
	if !ok {
		t.Fatalf("no table price for %s/%s", provider, model)
	}
	return p.Cost(u)
}

// spendRows stops the server (its writer flushes) and lists key's rows, oldest first.
func spendRows(t *testing.T, e *spendEnv, key string) []store.SpendLog {
	t.Helper()
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	logs, _, err := e.store.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	if err != nil {
		t.Fatal(err)
	}
	for i, j := 0, len(logs)-1; i < j; i, j = i+1, j-1 {
		logs[i], logs[j] = logs[j], logs[i]
	}
	return logs
}

// TestPassThroughProviders: each provider route forwards the native
// request (method, path, query, body) with the gateway's credentials,
// whichever header the client's SDK put its virtual key in; the key never
// reaches the upstream; the answer comes back as sent and is booked at the
// table price of the model it names, from the provider's own usage fields.
func TestPassThroughProviders(t *testing.T) {
	f := newNativeFake(t)
	e := startPass(t, f)
	key := newKey(t, e, `{}`)
	u := usage.Usage{Prompt: 10, Completion: 20}
	chat := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	msg := `{"model":"claude-3-5-sonnet-20241022","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}`
	gem := `{"contents":[{"parts":[{"text":"hi"}]}]}`
	co := `{"model":"command-r","messages":[{"role":"user","content":"hi"}]}`
	tests := []struct {
		name, method, path, body string
		headers                  []string
		upPath, upQuery, upAuth  string // upAuth: "Header: value" the upstream must get
		cost                     float64
	}{
		{"openai bearer", "POST", "/openai/v1/chat/completions?trace=1", chat, []string{"Authorization", "Bearer " + key},
			"/v1/chat/completions", "trace=1", "Authorization: Bearer sk-upstream-openai", tableCost(t, "openai", "gpt-4o-mini", u)},
		{"openai base url without v1", "POST", "/openai/chat/completions", chat, []string{"Authorization", "Bearer " + key},
			"/v1/chat/completions", "", "Authorization: Bearer sk-upstream-openai", tableCost(t, "openai", "gpt-4o-mini", u)},
		{"openai GET, no model", "GET", "/openai/v1/models?limit=2", "", []string{"x-litellm-api-key", "Bearer " + key},
			"/v1/models", "limit=2", "Authorization: Bearer sk-upstream-openai", 0},
		{"anthropic x-api-key", "POST", "/anthropic/v1/messages", msg, []string{"x-api-key", key, "anthropic-version", "2023-06-01"},
			"/v1/messages", "", "X-Api-Key: sk-upstream-anthropic", tableCost(t, "anthropic", "claude-3-5-sonnet-20241022", u)},
		{"anthropic without anthropic-version", "POST", "/anthropic/v1/messages", msg, []string{"Authorization", "Bearer " + key},
			"/v1/messages", "", "Anthropic-Version: 2023-06-01", tableCost(t, "anthropic", "claude-3-5-sonnet-20241022", u)},
		{"gemini ?key=", "POST", "/gemini/v1beta/models/gemini-2.0-flash:generateContent?alt=json&key=" + key, gem, nil,
			"/v1beta/models/gemini-2.0-flash:generateContent", "alt=json", "X-Goog-Api-Key: sk-upstream-gemini", tableCost(t, "gemini", "gemini-2.0-flash", u)},
		{"gemini ?k%65y= (the name encoded)", "POST", "/gemini/v1beta/models/gemini-2.0-flash:generateContent?k%65y=" + key + "&x=a%20b", gem, nil,
			"/v1beta/models/gemini-2.0-flash:generateContent", "x=a%20b", "X-Goog-Api-Key: sk-upstream-gemini", tableCost(t, "gemini", "gemini-2.0-flash", u)},
		{"gemini x-goog-api-key", "POST", "/gemini/v1beta/models/gemini-2.0-flash:generateContent", gem, []string{"x-goog-api-key", key},
			"/v1beta/models/gemini-2.0-flash:generateContent", "", "X-Goog-Api-Key: sk-upstream-gemini", tableCost(t, "gemini", "gemini-2.0-flash", u)},
		{"cohere x-litellm-api-key", "POST", "/cohere/v2/chat", co, []string{"x-litellm-api-key", key},
			"/v2/chat", "", "Authorization: Bearer sk-upstream-cohere", tableCost(t, "cohere", "command-r", u)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := passSend(t, tt.method, e.url+tt.path, tt.body, tt.headers...)
			if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "native" {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			got := f.last(t)
			name, value, _ := strings.Cut(tt.upAuth, ": ")
			if got.Method != tt.method || got.Path != tt.upPath || got.Query != tt.upQuery || got.Body != tt.body || got.Header.Get(name) != value {
				t.Fatalf("upstream got %s %s ?%s %q %v", got.Method, got.Path, got.Query, got.Body, got.Header)
			}
			for k, vs := range got.Header {
				if strings.Contains(strings.Join(vs, " "), key) {
					t.Fatalf("the client's key reached the upstream in %s", k)
				}
			}
			if strings.Contains(got.Query, key) {
				t.Fatalf("the client's key reached the upstream in the query %q", got.Query)
			}
		})
	}
	rows := spendRows(t, e, key)
	if len(rows) != len(tests) {
		t.Fatalf("%d spend rows for %d calls: %+v", len(rows), len(tests), rows)
	}
	for i, r := range rows {
		if !near(r.Cost, tests[i].cost) || r.Status != 200 || r.CallType != "pass_through_endpoint" {
			t.Errorf("%s booked %+v, want cost %v", tests[i].name, r, tests[i].cost)
		}
		if tests[i].cost > 0 && (r.PromptTokens != 10 || r.CompletionTokens != 20) {
			t.Errorf("%s booked %d/%d tokens", tests[i].name, r.PromptTokens, r.CompletionTokens)
		}
	}
}

// TestPassThroughAzureRoutesStay: the Azure-style routes under
// /openai/deployments/ are still the gateway's own (a chat call on the
// model group), not passed through.
func TestPassThroughAzureRoutesStay(t *testing.T) {
	f := newNativeFake(t)
	e := startPass(t, f)
	key := newKey(t, e, `{}`)
	resp, body := passSend(t, "POST", e.url+"/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-02-01",
		`{"messages":[{"role":"user","content":"hi"}]}`, "api-key", key)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got := f.last(t); got.Path != "/v1/chat/completions" || !strings.Contains(got.Body, `"model":"gpt-4o-mini"`) {
		t.Fatalf("upstream got %s %s", got.Path, got.Body)
	}
	if rows := spendRows(t, e, key); len(rows) != 1 || rows[0].CallType != "acompletion" || rows[0].ModelGroup != "gpt-4o-mini" {
		t.Fatalf("booked %+v", rows)
	}
}

// readEvent reads one server-sent event (up to its blank line).
func readEvent(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var ev strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended after %q: %v", ev.String(), err)
		}
		if line == "\n" {
			return ev.String()
		}
		ev.WriteString(line)
	}
}

// TestPassThroughStreams: a stream's first event reaches the client while
// the upstream still holds the rest back; the whole stream is booked from
// its usage (OpenAI's usage chunk; Anthropic's message_start and
// message_delta); and a stream the client abandons is still booked, with
// status 499 and what it had reported.
func TestPassThroughStreams(t *testing.T) {
	f := newNativeFake(t)
	e := startPass(t, f)
	key := newKey(t, e, `{}`)
	open := func(ctx context.Context, path, body string, headers ...string) (*http.Response, *bufio.Reader) {
		req, _ := http.NewRequestWithContext(ctx, "POST", e.url+path, strings.NewReader(body))
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("%d %v", resp.StatusCode, resp.Header)
		}
		return resp, bufio.NewReader(resp.Body)
	}
	// 1. OpenAI: the first event before the upstream goes on.
	resp, r := open(context.Background(), "/openai/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer "+key)
	if ev := readEvent(t, r); !strings.Contains(ev, "hello there") {
		t.Fatalf("first event %q", ev)
	}
	close(f.release) // from here on streams run to their end
	rest, _ := io.ReadAll(r)
	resp.Body.Close()
	if !strings.Contains(string(rest), `"usage":{"prompt_tokens":10`) || !strings.Contains(string(rest), "[DONE]") {
		t.Fatalf("rest of the stream %q", rest)
	}
	// 2. Anthropic, whole.
	resp, r = open(context.Background(), "/anthropic/v1/messages", `{"model":"claude-3-5-sonnet-20241022","max_tokens":50,"stream":true,"messages":[]}`,
		"x-api-key", key)
	all, _ := io.ReadAll(r)
	resp.Body.Close()
	if !strings.Contains(string(all), "message_stop") {
		t.Fatalf("anthropic stream %q", all)
	}
	rows := spendRows(t, e, key)
	u := usage.Usage{Prompt: 10, Completion: 20}
	if len(rows) != 2 || !near(rows[0].Cost, tableCost(t, "openai", "gpt-4o-mini", u)) || !near(rows[1].Cost, tableCost(t, "anthropic", "claude-3-5-sonnet-20241022", u)) ||
		rows[1].PromptTokens != 10 || rows[1].CompletionTokens != 20 {
		t.Fatalf("streams booked %+v", rows)
	}
}

// TestPassThroughAbandonedStreamIsBooked: the client leaves after the
// first event; the call is still booked (499), from message_start's usage.
func TestPassThroughAbandonedStreamIsBooked(t *testing.T) {
	f := newNativeFake(t) // never released: the upstream holds the rest back
	e := startPass(t, f)
	key := newKey(t, e, `{}`)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/anthropic/v1/messages",
		strings.NewReader(`{"model":"claude-3-5-sonnet-20241022","max_tokens":50,"stream":true,"messages":[]}`))
	req.Header.Set("x-api-key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ev := readEvent(t, bufio.NewReader(resp.Body)); !strings.Contains(ev, "message_start") {
		t.Fatalf("first event %q", ev)
	}
	cancel()
	resp.Body.Close()
	rows := spendRows(t, e, key) // stopping waits for the handler to settle
	want := tableCost(t, "anthropic", "claude-3-5-sonnet-20241022", usage.Usage{Prompt: 10, Completion: 1})
	if len(rows) != 1 || rows[0].Status != 499 || rows[0].PromptTokens != 10 || !near(rows[0].Cost, want) {
		t.Fatalf("abandoned stream booked %+v, want cost %v", rows, want)
	}
}

// TestPassThroughIsGoverned: the key's rate limits (429), budget (400
// budget_exceeded) and model access (403) stop a call before the upstream.
func TestPassThroughIsGoverned(t *testing.T) {
	f := newNativeFake(t)
	e := startPass(t, f)
	chat := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	call := func(key string) (*http.Response, apiError) {
		resp, body := passSend(t, "POST", e.url+"/openai/v1/chat/completions", chat, "Authorization", "Bearer "+key)
		var ae apiError
		json.Unmarshal([]byte(body), &ae) // an answer leaves it empty
		return resp, ae
	}
	t.Run("rate limit", func(t *testing.T) {
		key := newKey(t, e, `{"rpm_limit": 1}`)
		if resp, _ := call(key); resp.StatusCode != 200 {
			t.Fatalf("first call: %d", resp.StatusCode)
		}
		before := len(f.requests())
		resp, e := call(key)
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !strings.Contains(e.Error.Message, "rpm") || len(f.requests()) != before {
			t.Fatalf("second call: %d %+v, upstream calls %d → %d", resp.StatusCode, e, before, len(f.requests()))
		}
	})
	t.Run("budget", func(t *testing.T) {
		key := newKey(t, e, `{"max_budget": 0.000001}`)
		if resp, _ := call(key); resp.StatusCode != 200 { // a fresh small key is served, as LiteLLM does
			t.Fatalf("first call: %d", resp.StatusCode)
		}
		before := len(f.requests())
		resp, e := call(key)
		if resp.StatusCode != 400 || e.Error.Type != "budget_exceeded" || len(f.requests()) != before {
			t.Fatalf("call past the budget: %d %+v, upstream calls %d → %d", resp.StatusCode, e, before, len(f.requests()))
		}
	})
	t.Run("model access", func(t *testing.T) {
		key := newKey(t, e, `{"models": ["gpt-4o-mini"]}`)
		before := len(f.requests())
		for _, c := range []struct{ path, body string }{
			{"/anthropic/v1/messages", `{"model":"claude-3-5-sonnet-20241022","max_tokens":5,"messages":[]}`},
			{"/gemini/v1beta/models/gemini-2.0-flash:generateContent", `{"contents":[]}`},
		} {
			resp, body := passSend(t, "POST", e.url+c.path, c.body, "Authorization", "Bearer "+key)
			if resp.StatusCode != 403 || !strings.Contains(body, "may not use model") {
				t.Fatalf("%s: %d %s", c.path, resp.StatusCode, body)
			}
		}
		long := `{"model":"` + strings.Repeat("m", 300) + `"}`
		if resp, body := passSend(t, "POST", e.url+"/cohere/v2/chat", long, "Authorization", "Bearer "+key); resp.StatusCode != 400 || !strings.Contains(body, "at most 256") {
			t.Fatalf("a 300-byte model name: %d %s", resp.StatusCode, body)
		}
		if resp, _ := call(key); resp.StatusCode != 200 || len(f.requests()) != before+1 {
			t.Fatalf("allowed model: %d; upstream calls %d → %d", resp.StatusCode, before, len(f.requests()))
		}
	})
	t.Run("no key", func(t *testing.T) {
		before := len(f.requests())
		for _, h := range [][]string{nil, {"Authorization", "Bearer sk-not-a-key"}} {
			resp, body := passSend(t, "POST", e.url+"/openai/v1/chat/completions", chat, h...)
			if resp.StatusCode != 401 || decodeError(t, []byte(body)).Error.Type != "authentication_error" {
				t.Fatalf("%v: %d %s", h, resp.StatusCode, body)
			}
		}
		if len(f.requests()) != before {
			t.Fatal("a call without a valid key reached the upstream")
		}
	})
}

// TestPassThroughUpstreamErrors: an unknown sub-path gets the provider's
// own JSON error, status and body as sent, booked as a row without cost;
// /vertex_ai/* and /bedrock/* say what they lack.
func TestPassThroughUpstreamErrors(t *testing.T) {
	f := newNativeFake(t)
	e := startPass(t, f)
	key := newKey(t, e, `{}`)
	resp, body := passSend(t, "POST", e.url+"/openai/v1/no/such/thing", `{"x":1}`, "Authorization", "Bearer "+key)
	if resp.StatusCode != 404 || body != `{"error":{"message":"Invalid URL (POST /v1/no/such/thing)","type":"invalid_request_error","param":null,"code":null}}` {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	resp, body = passSend(t, "POST", e.url+"/vertex_ai/v1/projects/p/locations/l/publishers/google/models/gemini:generateContent", `{}`, "Authorization", "Bearer "+key)
	if e := decodeError(t, []byte(body)); resp.StatusCode != 501 || e.Error.Code != "pass_through_not_configured" || !strings.Contains(e.Error.Message, "default_vertex_config") {
		t.Fatalf("vertex_ai: %d %s", resp.StatusCode, body)
	}
	if rows := spendRows(t, e, key); len(rows) != 1 || rows[0].Status != 404 || rows[0].Cost != 0 {
		t.Fatalf("booked %+v", rows)
	}
}

// TestPassThroughWithoutCredentials: a provider with neither a deployment
// nor its environment variable answers 501 naming both.
func TestPassThroughWithoutCredentials(t *testing.T) {
	t.Setenv("COHERE_API_KEY", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "")
	t.Setenv("AWS_CONFIG_FILE", "")
	t.Setenv("HOME", t.TempDir()) // no shared AWS files
	cfg, err := config.Parse("p.yaml", []byte("general_settings:\n  master_key: sk-1234\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	for path, want := range map[string]string{"/cohere/v2/chat": "COHERE_API_KEY", "/bedrock/model/m/converse": "AWS_ACCESS_KEY_ID"} {
		resp, body := passSend(t, "POST", e.url+path, `{"model":"command-r"}`, "Authorization", "Bearer sk-1234")
		if e := decodeError(t, []byte(body)); resp.StatusCode != 501 || e.Error.Code != "pass_through_not_configured" || !strings.Contains(e.Error.Message, want) {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
}

// TestCustomPassThroughEndpoints: general_settings.pass_through_endpoints
// with auth off is open to anyone and gets its configured headers; with
// auth on it needs a virtual key, which never goes upstream, forwards the
// client's other headers and the sub-path, and books cost_per_request. A
// reload swaps the endpoints.
func TestCustomPassThroughEndpoints(t *testing.T) {
	f := newNativeFake(t)
	e := startPass(t, f)
	key := newKey(t, e, `{}`)
	resp, body := passSend(t, "GET", e.url+"/custom/open?limit=1", "", "Authorization", "Bearer client-own-token")
	got := f.last(t)
	if resp.StatusCode != 200 || body != `{"object":"list","data":[]}` || got.Path != "/v1/models" || got.Query != "limit=1" ||
		got.Header.Get("X-Injected") != "injected-secret" || got.Header.Get("Authorization") != "" {
		t.Fatalf("open endpoint: %d %s; upstream got %s ?%s %v", resp.StatusCode, body, got.Path, got.Query, got.Header)
	}
	before := len(f.requests())
	if resp, _ := passSend(t, "POST", e.url+"/custom/paid/chat", `{"model":"command-r"}`); resp.StatusCode != 401 || len(f.requests()) != before {
		t.Fatalf("paid endpoint without a key: %d", resp.StatusCode)
	}
	resp, body = passSend(t, "POST", e.url+"/custom/paid/chat", `{"model":"command-r"}`, "x-api-key", key, "X-Trace", "t-1")
	got = f.last(t)
	if resp.StatusCode != 200 || got.Path != "/v2/chat" || got.Header.Get("Authorization") != "Bearer injected-secret" ||
		got.Header.Get("X-Api-Key") != "" || got.Header.Get("X-Trace") != "t-1" || got.Body != `{"model":"command-r"}` {
		t.Fatalf("paid endpoint: %d %s; upstream got %s %v", resp.StatusCode, body, got.Path, got.Header)
	}
	// cost_per_request is held before the call: a strict key whose budget
	// has room for one call is refused the second before the target.
	strict := newKey(t, e, `{"max_budget": 0.3, "metadata": {"budget_enforcement": "strict"}}`)
	if resp, body := passSend(t, "POST", e.url+"/custom/paid/chat", `{}`, "Authorization", "Bearer "+strict); resp.StatusCode != 200 {
		t.Fatalf("first call on a $0.30 key: %d %s", resp.StatusCode, body)
	}
	before = len(f.requests())
	if resp, body := passSend(t, "POST", e.url+"/custom/paid/chat", `{}`, "Authorization", "Bearer "+strict); resp.StatusCode != 400 ||
		!strings.Contains(body, "budget_exceeded") || len(f.requests()) != before {
		t.Fatalf("second call on a $0.30 key: %d %s", resp.StatusCode, body)
	}
	// A reload: /custom/open goes, /custom/new comes.
	cfg, err := config.Parse("p.yaml", []byte(strings.ReplaceAll(strings.Replace(passYAML, "/custom/open", "/custom/new", 1), "{{UP}}", f.url)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if resp, body := passSend(t, "GET", e.url+"/custom/open", ""); resp.StatusCode != 404 || !strings.Contains(body, "route_not_found") {
		t.Fatalf("old endpoint after reload: %d %s", resp.StatusCode, body)
	}
	if resp, _ := passSend(t, "GET", e.url+"/custom/new", ""); resp.StatusCode != 200 || f.last(t).Path != "/v1/models" {
		t.Fatalf("new endpoint after reload: %d", resp.StatusCode)
	}
	rows := spendRows(t, e, key)
	if len(rows) != 1 || !near(rows[0].Cost, 0.25) || rows[0].CallType != "pass_through_endpoint" {
		t.Fatalf("paid endpoint booked %+v", rows)
	}
}

// TestPassThroughToMockUpstream: `tollgate mock-upstream` serves Gemini's
// and Cohere's native APIs, whole and streamed; through the pass-through
// routes each call is booked from the usage the mock reported.
func TestPassThroughToMockUpstream(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	t.Cleanup(up.Close)
	t.Setenv("GEMINI_API_KEY", "sk-upstream-gemini")
	t.Setenv("GEMINI_API_BASE", up.URL+"/v1beta")
	t.Setenv("COHERE_API_KEY", "sk-upstream-cohere")
	t.Setenv("COHERE_API_BASE", up.URL)
	cfg, err := config.Parse("p.yaml", []byte("general_settings:\n  master_key: sk-1234\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{}`)
	gem := `{"contents":[{"role":"user","parts":[{"text":"one two three four five six"}]}]}`
	co := `{"model":"command-r","messages":[{"role":"user","content":"one two three four"}]}`
	calls := []struct {
		path, body, provider, model string
		stream                      bool
	}{
		{"/gemini/v1beta/models/gemini-2.0-flash:generateContent", gem, "gemini", "gemini-2.0-flash", false},
		{"/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", gem, "gemini", "gemini-2.0-flash", true},
		{"/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent", gem, "gemini", "gemini-2.0-flash", false},
		{"/cohere/v2/chat", co, "cohere", "command-r", false},
		{"/cohere/v2/chat", strings.Replace(co, `"messages"`, `"stream":true,"messages"`, 1), "cohere", "command-r", true},
		{"/cohere/v2/rerank", `{"model":"rerank-v3.5","query":"q","documents":["a","b"]}`, "cohere", "rerank-v3.5", false},
	}
	counted := make([]usage.Usage, len(calls)) // what the mock says it answered
	for i, c := range calls {
		before := mock.Stats()
		resp, body := passSend(t, "POST", e.url+c.path, c.body, "x-goog-api-key", key)
		if resp.StatusCode != 200 || c.stream != strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("%s: %d %s %s", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if got := mock.LastRequest(); got.Header.Get("X-Goog-Api-Key") == key || strings.Contains(got.Query, key) {
			t.Fatalf("%s: the client's key reached the mock", c.path)
		}
		after := mock.Stats()
		counted[i] = usage.Usage{Prompt: after.PromptTokens - before.PromptTokens, Completion: after.CompletionTokens - before.CompletionTokens}
	}
	rows := spendRows(t, e, key)
	if len(rows) != len(calls) {
		t.Fatalf("%d rows for %d calls: %+v", len(rows), len(calls), rows)
	}
	for i, r := range rows {
		c := calls[i]
		want := 0.0
		if p, ok := pricing.Lookup(c.provider, c.model); ok {
			u := usage.Usage{Prompt: r.PromptTokens, Completion: r.CompletionTokens}
			if strings.HasSuffix(c.path, "/rerank") {
				u.SearchUnits = 1 // two documents: one search unit
			}
			want = p.Cost(u)
		}
		if r.Status != 200 || !near(r.Cost, want) || r.UsageEstimated || r.PromptTokens != counted[i].Prompt || r.CompletionTokens != counted[i].Completion ||
			r.Cost <= 0 {
			t.Errorf("%s booked %+v, want %+v at %v", c.path, r, counted[i], want)
		}
	}
}

// TestPassThroughBedrockIsSigned: /bedrock/* goes to the Bedrock runtime
// with the bedrock deployment's AWS credentials, signed with SigV4 (the
// upstream can verify the signature over the path as the client encoded
// it, the query and the body), and is booked from Converse's usage at the
// table price of the model in its path.
func TestPassThroughBedrockIsSigned(t *testing.T) {
	f := newNativeFake(t)
	yaml := strings.Replace(passYAML, "general_settings:", `  - model_name: claude-bedrock
    litellm_params: {model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0, api_base: "{{UP}}", aws_access_key_id: AKIDTEST, aws_secret_access_key: secret-test, aws_session_token: token-test, aws_region_name: us-west-2}
general_settings:`, 1)
	cfg, err := config.Parse("p.yaml", []byte(strings.ReplaceAll(yaml, "{{UP}}", f.url)))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{}`)
	body := `{"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":50}}`
	resp, out := passSend(t, "POST", e.url+"/bedrock/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse?trace=1", body,
		"Authorization", "Bearer "+key, "Content-Type", "application/json")
	if resp.StatusCode != 200 || !strings.Contains(out, `"inputTokens":10`) {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	got := f.last(t)
	authz := got.Header.Get("Authorization")
	if got.RawPath != "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse" || got.Query != "trace=1" || got.Body != body ||
		!strings.HasPrefix(authz, "AWS4-HMAC-SHA256 Credential=AKIDTEST/") || !strings.Contains(authz, "/us-west-2/bedrock/aws4_request") ||
		got.Header.Get("X-Amz-Security-Token") != "token-test" || strings.Contains(authz, key) {
		t.Fatalf("upstream got %s ?%s %v", got.RawPath, got.Query, got.Header)
	}
	// The upstream's check: the same request signed again at the same time
	// gives the same signature.
	at, err := time.Parse("20060102T150405Z", got.Header.Get("X-Amz-Date"))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := http.NewRequest(got.Method, "http://"+got.Host+got.RawPath+"?"+got.Query, strings.NewReader(got.Body))
	for k, v := range got.Header {
		if k != "Authorization" && k != "X-Amz-Date" && k != "X-Amz-Security-Token" {
			again.Header[k] = v
		}
	}
	creds := config.AWSCredentials{AccessKeyID: "AKIDTEST", SecretAccessKey: "secret-test", SessionToken: "token-test", Region: "us-west-2"}
	if err := provider.SignAWS(context.Background(), again, []byte(got.Body), creds, "bedrock", at); err != nil {
		t.Fatal(err)
	}
	if again.Header.Get("Authorization") != authz {
		t.Fatalf("signature does not verify:\n got  %s\n want %s", authz, again.Header.Get("Authorization"))
	}
	// ConverseStream's binary event stream: usage from its metadata event.
	resp, out = passSend(t, "POST", e.url+"/bedrock/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream", body, "Authorization", "Bearer "+key)
	if resp.StatusCode != 200 || !strings.Contains(out, `"outputTokens":20`) {
		t.Fatalf("converse-stream: %d %q", resp.StatusCode, out)
	}
	rows := spendRows(t, e, key)
	want := tableCost(t, "bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", usage.Usage{Prompt: 10, Completion: 20})
	if len(rows) != 2 {
		t.Fatalf("booked %+v", rows)
	}
	for _, r := range rows {
		if !near(r.Cost, want) || r.PromptTokens != 10 || r.CompletionTokens != 20 || r.UsageEstimated {
			t.Fatalf("booked %+v, want cost %v", r, want)
		}
	}
}
