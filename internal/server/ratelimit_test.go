package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

func sendH(t testing.TB, url, key, body string) (*http.Response, string) {
	t.Helper()
	return postAs(t, url, "", body, "Authorization", "Bearer "+key)
}

func errMessage(t *testing.T, body string) (typ, msg string) {
	t.Helper()
	var e struct {
		Error struct{ Type, Message string }
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body is not JSON: %q", body)
	}
	return e.Error.Type, e.Error.Message
}

// TestKeyRateLimits: rpm, tpm, parallel and per-model limits on a key, a
// team's rpm, and the 429s and headers they produce.
func TestKeyRateLimits(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, "")
	_, out := e.post(t, "/key/generate", "sk-1234", `{"rpm_limit": 2, "key_alias": "limited"}`)
	key := out["key"].(string)
	for i := range 2 {
		resp, body := sendH(t, e.url+"/v1/chat/completions", key, chat3)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i+1, resp.StatusCode, body)
		}
		if got := resp.Header.Get("x-ratelimit-remaining-requests"); got != strconv.Itoa(1-i) {
			t.Errorf("request %d: x-ratelimit-remaining-requests = %q", i+1, got)
		}
		if got := resp.Header.Get("x-ratelimit-limit-requests"); got != "2" {
			t.Errorf("x-ratelimit-limit-requests = %q", got)
		}
	}
	up := e.mock.Stats().Requests
	resp, body := sendH(t, e.url+"/v1/chat/completions", key, chat3)
	typ, msg := errMessage(t, body)
	if resp.StatusCode != 429 || typ != "rate_limit_error" || !strings.Contains(msg, "key limited") || !strings.Contains(msg, "2 requests per minute (rpm_limit)") {
		t.Fatalf("third request: %d %s", resp.StatusCode, body)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 || ra > 61 {
		t.Errorf("Retry-After = %q", resp.Header.Get("Retry-After"))
	}
	if resp.Header.Get("x-ratelimit-remaining-requests") != "0" || resp.Header.Get("x-ratelimit-reset-requests") == "" {
		t.Errorf("429 headers: %v", resp.Header)
	}
	if e.mock.Stats().Requests != up {
		t.Error("a rate-limited request reached the upstream")
	}

	// tpm: the first request uses 3 completion tokens + its prompt, which
	// passes a limit of 4; the next is refused.
	_, out = e.post(t, "/key/generate", "sk-1234", `{"tpm_limit": 4}`)
	key = out["key"].(string)
	if resp, body := sendH(t, e.url+"/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
		t.Fatalf("tpm first: %d %s", resp.StatusCode, body)
	}
	if resp, body := sendH(t, e.url+"/v1/chat/completions", key, chat3); resp.StatusCode != 429 || !strings.Contains(body, "tpm_limit") {
		t.Fatalf("tpm second: %d %s", resp.StatusCode, body)
	}

	// model_rpm_limit applies to its model only.
	_, out = e.post(t, "/key/generate", "sk-1234", `{"model_rpm_limit": {"gpt-4": 1}}`)
	key = out["key"].(string)
	sendH(t, e.url+"/v1/chat/completions", key, chat3)
	if resp, body := sendH(t, e.url+"/v1/chat/completions", key, chat3); resp.StatusCode != 429 || !strings.Contains(body, "model_rpm_limit") || !strings.Contains(body, "on gpt-4") {
		t.Fatalf("model rpm: %d %s", resp.StatusCode, body)
	}

	// A team's rpm covers all its keys together.
	e.post(t, "/team/new", "sk-1234", `{"team_id": "t-rl", "team_alias": "rl-team", "rpm_limit": 1}`)
	_, a := e.post(t, "/key/generate", "sk-1234", `{"team_id": "t-rl"}`)
	_, b := e.post(t, "/key/generate", "sk-1234", `{"team_id": "t-rl"}`)
	sendH(t, e.url+"/v1/chat/completions", a["key"].(string), chat3)
	if resp, body := sendH(t, e.url+"/v1/chat/completions", b["key"].(string), chat3); resp.StatusCode != 429 || !strings.Contains(body, "team rl-team") {
		t.Fatalf("team rpm: %d %s", resp.StatusCode, body)
	}
}

func TestParallelLimit(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{Delay: 300 * time.Millisecond}, "")
	_, out := e.post(t, "/key/generate", "sk-1234", `{"max_parallel_requests": 2}`)
	key := out["key"].(string)
	var ok, limited atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := sendH(t, e.url+"/v1/chat/completions", key, chat3)
			switch resp.StatusCode {
			case 200:
				ok.Add(1)
			case 429:
				limited.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 2 || limited.Load() != 4 {
		t.Fatalf("6 concurrent requests with 2 slots: %d ok, %d limited", ok.Load(), limited.Load())
	}
	// Slots come back when requests finish.
	if resp, body := sendH(t, e.url+"/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
		t.Fatalf("after the others finished: %d %s", resp.StatusCode, body)
	}
}

// TestEndUserRateLimit: a customer's rpm_limit covers every key it calls through.
func TestEndUserRateLimit(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, "")
	e.post(t, "/customer/new", "sk-1234", `{"user_id": "cust-rl", "rpm_limit": 1}`)
	_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
	key := out["key"].(string)
	withUser := `{"model":"gpt-4","user":"cust-rl","messages":[{"role":"user","content":"hi"}]}`
	if resp, body := sendH(t, e.url+"/v1/chat/completions", key, withUser); resp.StatusCode != 200 {
		t.Fatalf("first: %d %s", resp.StatusCode, body)
	}
	if resp, body := sendH(t, e.url+"/v1/chat/completions", key, withUser); resp.StatusCode != 429 || !strings.Contains(body, "end user cust-rl") {
		t.Fatalf("second: %d %s", resp.StatusCode, body)
	}
	if resp, _ := sendH(t, e.url+"/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
		t.Fatal("a request for no end user was limited by the end user's rpm")
	}
}

// agwSeed is seed 001's rate-limit config, pointed at the mock upstream.
func agwSeed(t *testing.T, file, upstream string) *config.Config {
	t.Helper()
	t.Setenv("OPENAI_API_KEY", "sk-upstream")
	data, err := os.ReadFile("../config/testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	yaml := strings.TrimRight(string(data), "\n") + "\n      hostOverride: \"" + upstream + "\"\n"
	cfg, err := config.Parse(file, []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func serveCfg(t testing.TB, cfg *config.Config, opts Options) string {
	t.Helper()
	url, _ := serveSrv(t, cfg, opts)
	return url
}

// serveSrv is serveCfg returning the server too.
func serveSrv(t testing.TB, cfg *config.Config, opts Options) (string, *Server) {
	t.Helper()
	url, srv, _ := serveStop(t, cfg, opts)
	return url, srv
}

// serveStop is serveSrv returning a graceful stop too, which returns once
// the server has stopped; it runs at most once (the test's cleanup runs it
// if the test did not).
func serveStop(t testing.TB, cfg *config.Config, opts Options) (string, *Server, func()) {
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
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	once := sync.OnceFunc(func() { stop(); <-done })
	t.Cleanup(once)
	return "http://" + ln.Addr().String(), srv, once
}

// TestSeed001TokenBucket walks seed 001's steps: with a gateway-wide bucket
// of 10 tokens, the first "Tell me a short story" is answered and the
// repeat is refused; with tokenize: true, a prompt larger than what is left
// is refused before it reaches the model.
func TestSeed001TokenBucket(t *testing.T) {
	story := `{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Tell me a short story"}]}`
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()

	url := serveCfg(t, agwSeed(t, "agw_ratelimit.yaml", up.URL), Options{Store: sqliteStore(t)})
	resp, body := sendH(t, url+"/v1/chat/completions", "sk-alice-abc123def456", story)
	if resp.StatusCode != 200 || !strings.Contains(body, `"usage"`) {
		t.Fatalf("step 2: %d %s", resp.StatusCode, body)
	}
	resp, body = sendH(t, url+"/v1/chat/completions", "sk-bob-xyz789uvw012", story) // gateway-wide: another key too
	if _, msg := errMessage(t, body); resp.StatusCode != 429 || !strings.Contains(msg, "rate limit exceeded") {
		t.Fatalf("step 3: %d %s", resp.StatusCode, body)
	}
	if mock.Stats().Requests != 1 {
		t.Fatalf("upstream saw %d requests, want 1", mock.Stats().Requests)
	}

	mock2 := mockupstream.New(mockupstream.Options{})
	up2 := httptest.NewServer(mock2)
	defer up2.Close()
	url = serveCfg(t, agwSeed(t, "agw_tokenize.yaml", up2.URL), Options{Store: sqliteStore(t)})
	long := `{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Tell me a long story about dragons, castles, knights and the sea"}]}`
	if resp, body := sendH(t, url+"/v1/chat/completions", "sk-alice-abc123def456", long); resp.StatusCode != 429 {
		t.Fatalf("tokenize: a prompt over the bucket was not refused at once: %d %s", resp.StatusCode, body)
	}
	if mock2.Stats().Requests != 0 {
		t.Fatal("tokenize: the refused prompt reached the upstream")
	}
	if resp, body := sendH(t, url+"/v1/chat/completions", "sk-alice-abc123def456", `{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Hi"}]}`); resp.StatusCode != 200 {
		t.Fatalf("tokenize: a prompt within the bucket: %d %s", resp.StatusCode, body)
	}
}

// TestTwoGatewaysShareRedisLimits: two gateways on one Redis and one store
// with a 10-rpm key let exactly 10 requests through, together.
func TestTwoGatewaysShareRedisLimits(t *testing.T) {
	r := replicas(t, 2, rigSpec{name: "test", redis: true}, mockConfig+"general_settings:\n  master_key: sk-1234\n  redis_url: {{REDIS}}\n", Options{})
	a, b := r.urls[0], r.urls[1]
	if code, body := send(t, a+"/key/generate", "sk-1234", `{"key": "sk-shared-rpm", "rpm_limit": 10}`); code != 200 {
		t.Fatal(code, body)
	}
	chat := `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`
	// B learns of the key through the store (A's write is already there).
	knows := func() bool {
		req, _ := http.NewRequest("GET", b+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer sk-shared-rpm")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	if _, ok := within(30*time.Second, knows); !ok {
		t.Fatal("B does not know the key")
	}
	var passed, limited atomic.Int64
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := []string{a, b}[i%2]
			for range 5 {
				switch code, _ := send(t, url+"/v1/chat/completions", "sk-shared-rpm", chat); code {
				case 200:
					passed.Add(1)
				case 429:
					limited.Add(1)
				default:
					t.Errorf("status %d", code)
				}
			}
		}()
	}
	wg.Wait()
	if passed.Load() != 10 || limited.Load() != 20 {
		t.Fatalf("two gateways passed %d and limited %d of 30 requests for a shared 10 rpm", passed.Load(), limited.Load())
	}
}

// TestRedisOutageFallsBackToLocalLimits: with Redis gone, requests are still
// served (and limited by the replica's own counters); none fails for it.
func TestRedisOutageFallsBackToLocalLimits(t *testing.T) {
	m := miniredis.RunT(t)
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(mockConfig, "{{UP}}", up.URL)+
		"general_settings:\n  master_key: sk-1234\n  redis_url: redis://"+m.Addr()+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	url := serveCfg(t, cfg, Options{Store: sqliteStore(t)})
	send(t, url+"/key/generate", "sk-1234", `{"key": "sk-fallback", "rpm_limit": 3}`)
	chat := `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`
	if code, body := send(t, url+"/v1/chat/completions", "sk-fallback", chat); code != 200 {
		t.Fatal(code, body)
	}
	if len(m.Keys()) == 0 {
		t.Fatal("the admission left nothing in Redis")
	}
	m.Close()
	for i := range 3 {
		code, body := send(t, url+"/v1/chat/completions", "sk-fallback", chat)
		if i < 3 && code != 200 {
			t.Fatalf("request %d with Redis down: %d %s", i, code, body)
		}
	}
	if code, _ := send(t, url+"/v1/chat/completions", "sk-fallback", chat); code != 429 {
		t.Fatalf("the local fallback does not enforce rpm 3: %d", code)
	}
}
