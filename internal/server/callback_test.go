package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// receiver is a logging service's fake: it records every POST it gets and
// answers with the statuses given, in turn (200 once they run out).
type receiver struct {
	mu       sync.Mutex
	bodies   [][]byte
	headers  []http.Header
	statuses []int
	hang     chan struct{} // when set, every request waits for it to close
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rc.hang != nil {
		select {
		case <-rc.hang:
		case <-r.Context().Done():
		}
		return
	}
	b, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.bodies = append(rc.bodies, b)
	rc.headers = append(rc.headers, r.Header.Clone())
	code := 200
	if len(rc.statuses) > 0 {
		code, rc.statuses = rc.statuses[0], rc.statuses[1:]
	}
	rc.mu.Unlock()
	w.WriteHeader(code)
}

func (rc *receiver) posts() [][]byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([][]byte(nil), rc.bodies...)
}

// payloads decodes every JSON-array POST received.
func (rc *receiver) payloads(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, b := range rc.posts() {
		var batch []map[string]any
		if err := json.Unmarshal(b, &batch); err != nil {
			t.Fatalf("a POST is not a JSON array of payloads: %v: %s", err, b)
		}
		out = append(out, batch...)
	}
	return out
}

// servedGateway runs a server built from yaml through Serve (so its
// actors run) and returns its URL and a stop that ends Serve and waits.
func servedGateway(t *testing.T, yaml string, q callback.QueueOptions, vars map[string]string, st ...store.Store) (string, func()) {
	t.Helper()
	for k, v := range vars {
		yaml = strings.ReplaceAll(yaml, "{{"+k+"}}", v)
	}
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	opts := Options{Logger: testLogger, CallbackQueue: q}
	if len(st) > 0 {
		opts.Store = st[0]
	}
	srv, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Error("Serve did not return within 60 s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

const callbackConfig = `
general_settings:
  master_key: sk-master
model_list:
  - model_name: gpt-4
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {{UP}}/v1
      api_key: sk-upstream-secret
  - model_name: broken
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {{BAD}}/v1
      api_key: sk-upstream-secret
`

// upstreams for the callback tests: a mock that answers, and one that
// refuses every request with a 400 (not retried).
func callbackUpstreams(t *testing.T) map[string]string {
	t.Helper()
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{NoRecord: true}))
	t.Cleanup(up.Close)
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		io.WriteString(w, `{"error":{"message":"bad request upstream","type":"invalid_request_error"}}`)
	}))
	t.Cleanup(bad.Close)
	return map[string]string{"UP": up.URL, "BAD": bad.URL}
}

func chat(t *testing.T, base, model string, headers ...string) int {
	t.Helper()
	resp, _ := post(t, base+"/v1/chat/completions", `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}],"user":"end-user-1"}`,
		append([]string{"Authorization", "Bearer sk-master"}, headers...)...)
	return resp.StatusCode
}

func waitFor(t *testing.T, what string, check func() bool) {
	t.Helper()
	if _, ok := within(60*time.Second, check); !ok {
		t.Fatalf("gave up after 60 s waiting for %s", what)
	}
}

// TestGenericAPICallbackGetsLiteLLMPayloadsInBatches: a callback_settings
// webhook gets LiteLLM's standard logging payloads, three to a POST, with
// its configured headers (os.environ/ resolved).
func TestGenericAPICallbackGetsLiteLLMPayloadsInBatches(t *testing.T) {
	t.Setenv("TG_TEST_HOOK_TOKEN", "hook-secret")
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	vars := callbackUpstreams(t)
	vars["HOOK"] = hs.URL
	base, _ := servedGateway(t, callbackConfig+`
litellm_settings:
  callbacks: ["my_hook"]
callback_settings:
  my_hook:
    callback_type: generic_api
    endpoint: {{HOOK}}/ingest
    headers:
      Authorization: os.environ/TG_TEST_HOOK_TOKEN
`, callback.QueueOptions{BatchCount: 3, FlushInterval: time.Hour}, vars, sqliteStore(t)) // a store: the requests are priced

	for i := 0; i < 3; i++ {
		if code := chat(t, base, "gpt-4", "x-litellm-tags", "team-a, batch"); code != 200 {
			t.Fatalf("request %d: status %d", i, code)
		}
	}
	waitFor(t, "one batch of three payloads", func() bool { return len(hook.posts()) >= 1 })
	posts := hook.posts()
	if len(posts) != 1 {
		t.Fatalf("got %d POSTs, want the three payloads in one", len(posts))
	}
	got := hook.payloads(t)
	if len(got) != 3 {
		t.Fatalf("got %d payloads in the batch, want 3", len(got))
	}
	if a := hook.headers[0].Get("Authorization"); a != "hook-secret" {
		t.Errorf("Authorization = %q, want the header from os.environ/TG_TEST_HOOK_TOKEN", a)
	}
	if ct := hook.headers[0].Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	sum := sha256.Sum256([]byte("sk-master"))
	ids := map[string]bool{}
	for _, p := range got {
		ids[p["id"].(string)] = true
		md, _ := p["metadata"].(map[string]any)
		tags, _ := p["request_tags"].([]any)
		if p["call_type"] != "acompletion" || p["model_group"] != "gpt-4" || p["status"] != "success" ||
			p["prompt_tokens"].(float64) <= 0 || p["response_cost"] == nil || p["end_user"] != "end-user-1" ||
			md["user_api_key_hash"] != hex.EncodeToString(sum[:]) || len(tags) != 2 || tags[0] != "team-a" || tags[1] != "batch" {
			t.Errorf("payload not LiteLLM-shaped as expected: %v", p)
		}
		if c, ok := p["response_cost"].(float64); !ok || c <= 0 {
			t.Errorf("response_cost = %v, want the booked cost", p["response_cost"])
		}
	}
	if len(ids) != 3 || ids[""] {
		t.Errorf("payload ids = %v, want three distinct call ids", ids)
	}
}

// TestGenericAPICallbackRetriesAServerError: a receiver that answers 500
// and then 200 gets the same batch twice, and the payload counts as sent
// once; a 400 is not retried and counts as failed.
func TestGenericAPICallbackRetriesAServerError(t *testing.T) {
	flaky := &receiver{statuses: []int{500}}
	fs := httptest.NewServer(flaky)
	defer fs.Close()
	refusing := &receiver{statuses: []int{400, 400, 400}}
	rs := httptest.NewServer(refusing)
	defer rs.Close()
	vars := callbackUpstreams(t)
	vars["FLAKY"], vars["REFUSING"] = fs.URL, rs.URL
	base, _ := servedGateway(t, callbackConfig+`
litellm_settings:
  callbacks: ["flaky", "refusing"]
callback_settings:
  flaky: {callback_type: generic_api, endpoint: "{{FLAKY}}"}
  refusing: {callback_type: generic_api, endpoint: "{{REFUSING}}"}
`, callback.QueueOptions{BatchCount: 1, BackoffBase: 10 * time.Millisecond}, vars)

	if code := chat(t, base, "gpt-4"); code != 200 {
		t.Fatalf("status %d", code)
	}
	waitFor(t, "the flaky receiver's retry", func() bool { return len(flaky.posts()) >= 2 })
	waitFor(t, "the metrics to count the delivery and the refusal", func() bool {
		fams := scrape(t, base, "sk-master")
		sent, _ := value(fams, "tollgate_callback_sent_total", "sink", "flaky")
		failed, _ := value(fams, "tollgate_callback_failed_total", "sink", "refusing")
		return sent == 1 && failed == 1
	})
	posts := flaky.posts()
	if len(posts) != 2 || !bytes.Equal(posts[0], posts[1]) {
		t.Fatalf("flaky receiver got %d POSTs, want the same batch twice", len(posts))
	}
	if n := len(refusing.posts()); n != 1 {
		t.Errorf("a 400 was tried %d times, want once (not retried)", n)
	}
}

// TestSuccessAndFailureCallbacksGetTheirOwn: success_callback sinks get
// successes only, failure_callback sinks failures only, callbacks both.
func TestSuccessAndFailureCallbacksGetTheirOwn(t *testing.T) {
	ok, bad, all := &receiver{}, &receiver{}, &receiver{}
	oks, bads, alls := httptest.NewServer(ok), httptest.NewServer(bad), httptest.NewServer(all)
	defer oks.Close()
	defer bads.Close()
	defer alls.Close()
	vars := callbackUpstreams(t)
	vars["OK"], vars["BADHOOK"], vars["ALL"] = oks.URL, bads.URL, alls.URL
	base, _ := servedGateway(t, callbackConfig+`
litellm_settings:
  success_callback: ["ok_hook"]
  failure_callback: ["bad_hook"]
  callbacks: ["all_hook"]
callback_settings:
  ok_hook: {callback_type: generic_api, endpoint: "{{OK}}"}
  bad_hook: {callback_type: generic_api, endpoint: "{{BADHOOK}}"}
  all_hook: {callback_type: generic_api, endpoint: "{{ALL}}"}
`, callback.QueueOptions{BatchCount: 1}, vars)

	if code := chat(t, base, "gpt-4"); code != 200 {
		t.Fatalf("success: status %d", code)
	}
	if code := chat(t, base, "broken"); code != 400 {
		t.Fatalf("failure: status %d, want the upstream's 400", code)
	}
	if code := chat(t, base, "gpt-4"); code != 200 {
		t.Fatalf("success: status %d", code)
	}
	waitFor(t, "every hook's payloads", func() bool {
		return len(ok.posts()) >= 2 && len(bad.posts()) >= 1 && len(all.posts()) >= 3
	})
	for _, p := range ok.payloads(t) {
		if p["status"] != "success" {
			t.Errorf("success_callback got a %v payload", p["status"])
		}
	}
	fails := bad.payloads(t)
	for _, p := range fails {
		info, _ := p["error_information"].(map[string]any)
		if p["status"] != "failure" || info["error_code"] != "400" || p["error_str"] == nil {
			t.Errorf("failure_callback payload = %v", p)
		}
	}
	fams := scrape(t, base, "sk-master")
	for sink, want := range map[string]float64{"ok_hook": 2, "bad_hook": 1, "all_hook": 3} {
		if got, _ := value(fams, "tollgate_callback_queued_total", "sink", sink); got != want {
			t.Errorf("%s took %v payloads, want %v", sink, got, want)
		}
	}
}

// TestCallbackSinkDownOrHangingNeverDelaysRequests: a webhook that never
// answers and one nobody listens on cost the requests nothing; with a tiny
// queue the payloads they cannot hold are dropped and counted.
func TestCallbackSinkDownOrHangingNeverDelaysRequests(t *testing.T) {
	t.Parallel() // its own gateway, sinks and metrics registry (waitBound)
	hang := &receiver{hang: make(chan struct{})}
	hs := httptest.NewServer(hang)
	defer hs.Close()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + dead.Addr().String()
	dead.Close()
	vars := callbackUpstreams(t)
	vars["HANG"], vars["DEAD"] = hs.URL, deadURL
	base, stop := servedGateway(t, callbackConfig+`
litellm_settings:
  callbacks: ["hanging", "down"]
callback_settings:
  hanging: {callback_type: generic_api, endpoint: "{{HANG}}"}
  down: {callback_type: generic_api, endpoint: "{{DEAD}}"}
`, callback.QueueOptions{Size: 2, BatchCount: 1, SendTimeout: time.Minute, BackoffBase: time.Minute}, vars)
	defer stop()
	defer close(hang.hang) // before stop: the flush at shutdown is not held up

	const n = 20
	start := time.Now()
	for i := 0; i < n; i++ {
		if code := chat(t, base, "gpt-4"); code != 200 {
			t.Fatalf("request %d: status %d", i, code)
		}
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("%d requests took %v with the sinks down", n, took)
	}
	fams := scrape(t, base, "sk-master")
	for _, sink := range []string{"hanging", "down"} {
		queued, _ := value(fams, "tollgate_callback_queued_total", "sink", sink)
		dropped, _ := value(fams, "tollgate_callback_dropped_total", "sink", sink)
		depth, _ := value(fams, "tollgate_callback_queue_depth", "sink", sink)
		if dropped < n-2 || queued+dropped != n || depth > 2 {
			t.Errorf("%s: queued %v dropped %v depth %v; want at most 2 held and the rest of %d dropped", sink, queued, dropped, depth, n)
		}
	}
	waitFor(t, "the hanging sink's lag to show", func() bool {
		lag, ok := value(scrape(t, base, "sk-master"), "tollgate_callback_lag_seconds", "sink", "hanging")
		return ok && lag > 0
	})
}

// TestShutdownFlushesQueuedPayloads: payloads queued when Serve's context
// ends are delivered before Serve returns.
func TestShutdownFlushesQueuedPayloads(t *testing.T) {
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	vars := callbackUpstreams(t)
	vars["HOOK"] = hs.URL
	t.Setenv("GENERIC_LOGGER_ENDPOINT", hs.URL+"/env")
	base, stop := servedGateway(t, callbackConfig+`
litellm_settings:
  success_callback: ["generic_api"]
`, callback.QueueOptions{FlushInterval: time.Hour}, vars)
	for i := 0; i < 4; i++ {
		if code := chat(t, base, "gpt-4"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if n := len(hook.posts()); n != 0 {
		t.Fatalf("%d POSTs before the flush interval or a full batch", n)
	}
	stop()
	if got := len(hook.payloads(t)); got != 4 {
		t.Fatalf("after shutdown the receiver has %d payloads, want the 4 queued", got)
	}
}

// TestDatadogCallbackSendsToTheLogsIntake: the datadog callback posts
// gzipped JSON arrays of log entries shaped as LiteLLM's, with DD-API-KEY.
func TestDatadogCallbackSendsToTheLogsIntake(t *testing.T) {
	var mu sync.Mutex
	var entries []map[string]any
	var paths, keys []string
	intake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			t.Errorf("intake body not gzip: %v", err)
			w.WriteHeader(400)
			return
		}
		var batch []map[string]any
		if err := json.NewDecoder(zr).Decode(&batch); err != nil {
			t.Errorf("intake body not a JSON array: %v", err)
		}
		mu.Lock()
		entries = append(entries, batch...)
		paths = append(paths, r.URL.Path)
		keys = append(keys, r.Header.Get("DD-API-KEY"))
		mu.Unlock()
		w.WriteHeader(202)
	}))
	defer intake.Close()
	t.Setenv("DD_API_KEY", "dd-test-key")
	t.Setenv("DD_SITE", "us5.datadoghq.com")
	t.Setenv("DD_BASE_URL", intake.URL)
	t.Setenv("DD_ENV", "test")
	t.Setenv("DD_SERVICE", "")
	t.Setenv("DD_SOURCE", "")
	base, _ := servedGateway(t, callbackConfig+`
litellm_settings:
  callbacks: ["datadog"]
`, callback.QueueOptions{BatchCount: 2, FlushInterval: time.Hour}, callbackUpstreams(t))
	chat(t, base, "gpt-4", "x-litellm-tags", "dd-tag")
	chat(t, base, "broken")
	waitFor(t, "the intake's batch", func() bool { mu.Lock(); defer mu.Unlock(); return len(entries) >= 2 })
	mu.Lock()
	defer mu.Unlock()
	if paths[0] != "/api/v2/logs" || keys[0] != "dd-test-key" {
		t.Errorf("intake got path %q DD-API-KEY %q", paths[0], keys[0])
	}
	statuses := map[string]bool{}
	for _, e := range entries {
		statuses[e["status"].(string)] = true
		if e["ddsource"] != "litellm" || e["service"] != "litellm-server" || !strings.Contains(e["ddtags"].(string), "env:test") {
			t.Errorf("entry = %v", e)
		}
		var msg map[string]any
		if err := json.Unmarshal([]byte(e["message"].(string)), &msg); err != nil || msg["id"] == "" || msg["model_group"] == nil {
			t.Errorf("message is not the payload's JSON: %v", e["message"])
		}
		if msg["status"] == "success" && !strings.Contains(e["ddtags"].(string), "request_tag:dd-tag") {
			t.Errorf("ddtags %q lack the request tag", e["ddtags"])
		}
	}
	if !statuses["info"] || !statuses["error"] {
		t.Errorf("entry statuses %v, want info and error", statuses)
	}
}

// TestUnservedCallbacksAreWarned: a callback Tollgate does not serve, or a
// custom Python one, is named in a startup warning of server.New; the
// names served elsewhere (prometheus, the tracer's) are not.
func TestUnservedCallbacksAreWarned(t *testing.T) {
	t.Setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-test") // the tracer's langfuse exporter needs its keys
	t.Setenv("LANGFUSE_SECRET_KEY", "sk-lf-test")
	cfg, err := config.Parse("test.yaml", []byte(`
model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o-mini, api_key: x}
litellm_settings:
  success_callback: ["lunary", "prometheus", "otel", "langfuse"]
  callbacks: ["custom_callbacks.proxy_handler_instance"]
`))
	if err != nil {
		t.Fatal(err)
	}
	var buf logBuf
	srv, err := New(cfg, Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if srv.callbacks != nil {
		t.Errorf("a dispatcher was built with nothing to serve here: %v", srv.callbacks.Names())
	}
	buf.mu.Lock()
	log := buf.buf.String()
	buf.mu.Unlock()
	var warned []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, "callback") {
			warned = append(warned, line)
		}
	}
	joined := strings.Join(warned, "\n")
	if len(warned) != 2 || !strings.Contains(joined, `\"lunary\" is not served`) || !strings.Contains(joined, `\"custom_callbacks.proxy_handler_instance\" is a custom Python callback`) {
		t.Errorf("callback warnings:\n%s", joined)
	}
}
