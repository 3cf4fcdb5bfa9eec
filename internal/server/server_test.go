package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// newGateway starts the real gateway handler on loopback with the given YAML
// config; upstream URLs in it are written as {{UP}}.
func newGateway(t *testing.T, yaml, upstream string) *httptest.Server {
	t.Helper()
	yaml = strings.ReplaceAll(yaml, "{{UP}}", upstream)
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	srv, err := New(cfg, Options{Logger: testLogger})
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts
}

func post(t *testing.T, url, body string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := tryPost(url, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// tryPost is post for a goroutine other than the test's: it returns its
// error instead of failing the test.
func tryPost(url, body string, headers ...string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

func decodeError(t *testing.T, b []byte) apiError {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("not an OpenAI-shaped error: %s", b)
	}
	return e
}

const mockConfig = `
model_list:
  - model_name: gpt-4
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {{UP}}/v1
      api_key: sk-upstream-secret
`

func TestChatIsForwardedTransparently(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	gw := newGateway(t, mockConfig, up.URL)

	body := `{"model":"gpt-4","messages":[{"role":"user","content":"hi there"}],"temperature":0.3,"x_unknown":{"deep":[1,2,{"a":null}]},"logit_bias":{}}`
	resp, got := post(t, gw.URL+"/v1/chat/completions", body, "Authorization", "Bearer client-key", "X-Client-Header", "nope")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, got)
	}
	rec := mock.LastRequest()
	wantUp := strings.Replace(body, `"model":"gpt-4"`, `"model":"gpt-4o-mini"`, 1)
	if string(rec.Body) != wantUp {
		t.Errorf("upstream body\n got %s\nwant %s", rec.Body, wantUp)
	}
	if a := rec.Header.Get("Authorization"); a != "Bearer sk-upstream-secret" {
		t.Errorf("upstream Authorization = %q, want the deployment's key, never the client's", a)
	}
	if rec.Header.Get("X-Client-Header") != "" {
		t.Error("client headers must not reach the upstream")
	}
	if rec.Path != "/v1/chat/completions" {
		t.Errorf("upstream path = %q", rec.Path)
	}
	var out struct {
		Object string `json:"object"`
		Usage  struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(got, &out); err != nil || out.Object != "chat.completion" || out.Usage.PromptTokens == 0 {
		t.Fatalf("response not passed through: %s", got)
	}
	if resp.Header.Get("x-tollgate-call-id") == "" || resp.Header.Get("x-tollgate-model-id") == "" {
		t.Error("missing x-tollgate-call-id / x-tollgate-model-id headers")
	}
}

func TestResponseBodyReachesClientAsSent(t *testing.T) {
	const raw = "{\"id\":\"x\",  \"odd_field\": [1, 2],\n\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "yes")
		io.WriteString(w, raw)
	}))
	defer up.Close()
	gw := newGateway(t, mockConfig, up.URL)
	resp, got := post(t, gw.URL+"/chat/completions", `{"model":"gpt-4","messages":[]}`)
	if string(got) != raw {
		t.Fatalf("body changed:\n got %q\nwant %q", got, raw)
	}
	if resp.Header.Get("X-Upstream") != "yes" {
		t.Error("upstream response header lost")
	}
}

// sse reads server-sent events from r, one data payload per call.
func sse(r *bufio.Reader) (string, error) {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			return strings.TrimSpace(d), nil
		}
	}
}

func TestStreamFirstChunkArrivesBeforeUpstreamFinishes(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"first\"}}]}\n\n")
		w.(http.Flusher).Flush()
		<-release // the upstream has not finished until the client saw chunk one
		io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"second\"}}]}\n\ndata: [DONE]\n\n")
	}))
	defer up.Close()
	defer close(release)
	gw := newGateway(t, mockConfig, up.URL)

	req, _ := http.NewRequest("POST", gw.URL+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4","stream":true,"messages":[]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan string, 1)
	go func() {
		d, _ := sse(bufio.NewReader(resp.Body))
		got <- d
	}()
	select {
	case d := <-got:
		if !strings.Contains(d, "first") {
			t.Fatalf("first event = %q", d)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("first chunk did not reach the client while the upstream was still streaming")
	}
}

// TestStreamHeadersBeforeLateFirstEvent: an upstream that sends its
// headers and thinks before its first event: the client has its status and
// headers before that event (the gateway sends them with the first event
// when it comes with them, and alone when it is late), then the event.
func TestStreamHeadersBeforeLateFirstEvent(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select { // no event until the client has the headers
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"late\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	}))
	defer up.Close()
	gw := newGateway(t, mockConfig, up.URL)

	got := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest("POST", gw.URL+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4","stream":true,"messages":[]}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			resp = nil
		}
		got <- resp
	}()
	var resp *http.Response
	select {
	case resp = <-got:
	case <-time.After(time.Minute):
		close(release)
		t.Fatal("no headers a minute into a stream whose first event is held back")
		return
	}
	close(release)
	if resp == nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if d, err := sse(bufio.NewReader(resp.Body)); err != nil || !strings.Contains(d, "late") {
		t.Fatalf("first event %q, %v", d, err)
	}
}

func TestStreamUsageChunk(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{Chunks: 3})
	up := httptest.NewServer(mock)
	defer up.Close()
	gw := newGateway(t, mockConfig, up.URL)
	tests := []struct {
		name      string
		body      string
		wantUsage bool
	}{
		{"gateway asks, client does not see it", `{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"a b c"}]}`, false},
		{"client asks, client sees it", `{"model":"gpt-4","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := post(t, gw.URL+"/v1/chat/completions", tt.body)
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("status %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			var usageChunks, done int
			r := bufio.NewReader(strings.NewReader(string(b)))
			for {
				d, err := sse(r)
				if err != nil {
					break
				}
				if d == "[DONE]" {
					done++
				} else if strings.Contains(d, `"usage":{`) {
					usageChunks++
				}
			}
			if done != 1 {
				t.Errorf("[DONE] seen %d times", done)
			}
			if (usageChunks == 1) != tt.wantUsage {
				t.Errorf("usage chunks = %d, want present=%v", usageChunks, tt.wantUsage)
			}
			if !strings.Contains(string(mock.LastRequest().Body), `"include_usage":true`) {
				t.Errorf("gateway did not ask the upstream for usage: %s", mock.LastRequest().Body)
			}
		})
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	cancelled := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(cancelled)
	}))
	defer up.Close()
	gw := newGateway(t, mockConfig, up.URL)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", gw.URL+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4","stream":true,"messages":[]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sse(bufio.NewReader(resp.Body)); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-cancelled:
	case <-time.After(60 * time.Second):
		t.Fatal("upstream request was not cancelled after the client went away")
	}
}

func TestUpstreamErrorsKeepStatusAndBody(t *testing.T) {
	const errBody = `{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit"}}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(429)
		io.WriteString(w, errBody)
	}))
	defer up.Close()
	gw := newGateway(t, mockConfig, up.URL)
	for _, stream := range []string{"false", "true"} {
		resp, got := post(t, gw.URL+"/v1/chat/completions", `{"model":"gpt-4","stream":`+stream+`,"messages":[]}`)
		if resp.StatusCode != 429 || string(got) != errBody {
			t.Errorf("stream=%s: got %d %s, want 429 %s", stream, resp.StatusCode, got, errBody)
		}
	}
}

func TestUnreachableAndSlowUpstreams(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now

	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // as a real upstream does; until then Go cannot see the client leave
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	}))
	defer slow.Close()

	cfg := `
model_list:
  - model_name: dead
    litellm_params: {model: openai/x, api_base: ` + dead + `}
  - model_name: slow
    litellm_params: {model: openai/x, api_base: ` + slow.URL + `, timeout: 0.2}
  - model_name: slow-stream
    litellm_params: {model: openai/x, api_base: ` + slow.URL + `, timeout: 60, stream_timeout: 0.2}
`
	gw := newGateway(t, cfg, "")
	tests := []struct {
		model, stream string
		status        int
		typ           string
	}{
		{"dead", "false", 502, "api_error"},
		{"slow", "false", 504, "timeout_error"},
		{"slow-stream", "true", 504, "timeout_error"},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			resp, b := post(t, gw.URL+"/v1/chat/completions", `{"model":"`+tt.model+`","stream":`+tt.stream+`,"messages":[]}`)
			e := decodeError(t, b)
			if resp.StatusCode != tt.status || e.Error.Type != tt.typ {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, b, tt.status, tt.typ)
			}
		})
	}
}

func TestBadRequestsNeverReachUpstream(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	gw := newGateway(t, mockConfig+"general_settings:\n  max_request_size_mb: 0.001\n", up.URL)
	big := `{"model":"gpt-4","messages":[{"role":"user","content":"` + strings.Repeat("x", 2000) + `"}]}`
	tests := []struct {
		name, body string
		status     int
		param      string
	}{
		{"malformed JSON", `{"model":"gpt-4","messages":[}`, 400, ""},
		{"not an object", `["gpt-4"]`, 400, ""},
		{"missing model", `{"messages":[]}`, 400, "model"},
		{"null model", `{"model":null}`, 400, "model"},
		{"model not a string", `{"model":4}`, 400, "model"},
		{"stream not a bool", `{"model":"gpt-4","stream":"yes"}`, 400, "stream"},
		{"negative max_tokens", `{"model":"gpt-4","max_tokens":-1}`, 400, "max_tokens"},
		{"user not a string", `{"model":"gpt-4","user":5}`, 400, "user"},
		{"unknown model", `{"model":"gpt-9","messages":[]}`, 404, "model"},
		{"oversize body", big, 413, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := post(t, gw.URL+"/v1/chat/completions", tt.body)
			e := decodeError(t, b)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if tt.param != "" && (e.Error.Param == nil || *e.Error.Param != tt.param) {
				t.Errorf("param = %v, want %q", e.Error.Param, tt.param)
			}
		})
	}
	if n := mock.Stats().Requests; n != 0 {
		t.Fatalf("upstream saw %d requests; bad input must never reach it", n)
	}
}

func TestRelaxedJSONFromLiteLLMDocs(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	gw := newGateway(t, mockConfig, up.URL)
	// The shape of seed 000's over-budget example: a trailing comma.
	resp, b := post(t, gw.URL+"/chat/completions", "{\"model\": \"gpt-4\",\n\"messages\": [{\"role\": \"user\",\"content\": \"respond in 50 lines\"}],\n}")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if !json.Valid(mock.LastRequest().Body) {
		t.Fatalf("upstream received invalid JSON: %s", mock.LastRequest().Body)
	}
}

func TestOtherEndpoints(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	gw := newGateway(t, mockConfig+`  - model_name: embed
    litellm_params: {model: openai/text-embedding-3-small, api_base: {{UP}}}
`, up.URL)
	tests := []struct {
		name, path, body, want, upstreamPath string
	}{
		{"completions", "/v1/completions", `{"model":"gpt-4","prompt":"hi"}`, `"text_completion"`, "/v1/completions"},
		{"embeddings", "/v1/embeddings", `{"model":"embed","input":"hi"}`, `"embedding"`, "/v1/embeddings"},
		{"embeddings without /v1", "/embeddings", `{"model":"embed","input":["a","b"]}`, `"embedding"`, "/v1/embeddings"},
		{"azure-style ingress", "/openai/deployments/gpt-4/chat/completions", `{"messages":[]}`, `"chat.completion"`, "/v1/chat/completions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := post(t, gw.URL+tt.path, tt.body)
			if resp.StatusCode != 200 || !strings.Contains(string(b), tt.want) {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if p := mock.LastRequest().Path; p != tt.upstreamPath {
				t.Errorf("upstream path %q, want %q", p, tt.upstreamPath)
			}
		})
	}
}

func TestModelsAndHealth(t *testing.T) {
	gw := newGateway(t, mockConfig+`  - model_name: other
    litellm_params: {model: openai/y, api_base: {{UP}}}
router_settings:
  model_group_alias: {gpt-3.5-turbo: gpt-4}
`, "http://127.0.0.1:1")
	resp, err := http.Get(gw.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	if got := strings.Join(ids, ","); list.Object != "list" || got != "gpt-3.5-turbo,gpt-4,other" {
		t.Fatalf("models = %q (%s)", got, list.Object)
	}
	for _, p := range []string{"/health/liveliness", "/health/liveness", "/health/readiness"} {
		resp, err := http.Get(gw.URL + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, err, resp.StatusCode)
		}
		resp.Body.Close()
	}
}

func TestDemoModelAnswersWithoutNetwork(t *testing.T) {
	srv, err := New(config.Default(), Options{Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(srv.Handler())
	defer gw.Close()
	resp, b := post(t, gw.URL+"/v1/chat/completions", `{"model":"demo","messages":[{"role":"user","content":"Hello!"}]}`)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"assistant"`) {
		t.Fatalf("non-stream: %d %s", resp.StatusCode, b)
	}
	resp, b = post(t, gw.URL+"/v1/chat/completions", `{"model":"demo","stream":true,"messages":[{"role":"user","content":"Hello!"}]}`)
	if resp.StatusCode != 200 || !strings.HasSuffix(strings.TrimSpace(string(b)), "data: [DONE]") {
		t.Fatalf("stream: %d %s", resp.StatusCode, b)
	}
}

func TestMasterKeyRequired(t *testing.T) {
	gw := newGateway(t, `
model_list:
  - model_name: demo
    litellm_params: {model: demo/demo}
general_settings:
  master_key: sk-1234
`, "")
	tests := []struct {
		name    string
		headers []string
		status  int
	}{
		{"no key", nil, 401},
		{"wrong key", []string{"Authorization", "Bearer sk-wrong"}, 401},
		{"bearer", []string{"Authorization", "Bearer sk-1234"}, 200},
		{"x-api-key", []string{"x-api-key", "sk-1234"}, 200},
		{"api-key", []string{"api-key", "sk-1234"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := post(t, gw.URL+"/v1/chat/completions", `{"model":"demo","messages":[]}`, tt.headers...)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if tt.status == 401 && decodeError(t, b).Error.Type != "authentication_error" {
				t.Errorf("401 type: %s", b)
			}
		})
	}
}

func TestGracefulShutdownFinishesStreams(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{Chunks: 10, ChunkDelay: 30 * time.Millisecond})
	up := httptest.NewServer(mock)
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(mockConfig, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()

	url := "http://" + ln.Addr().String()
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4","stream":true,"messages":[]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	if _, err := sse(r); err != nil { // the stream is under way
		t.Fatal(err)
	}
	stop() // SIGTERM
	var events []string
	for {
		d, err := sse(r)
		if err != nil {
			break
		}
		events = append(events, d)
	}
	resp.Body.Close()
	if len(events) == 0 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream cut by shutdown: last events %v", events)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve returned %v, want nil after a graceful shutdown", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Serve did not return after shutdown")
	}
	if _, err := http.Post(url+"/health/liveness", "", nil); err == nil {
		t.Error("listener still accepts connections after shutdown")
	}
}
