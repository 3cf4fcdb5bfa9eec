package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// Output tokens cost 1e-4 each and input tokens nothing, so a request with
// max_tokens 3 (which the mock fills exactly) costs 3e-4 at worst and in fact.
const pricedConfig = `
model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0.0001}
  - model_name: broken
    litellm_params: {model: openai/x, api_base: "http://127.0.0.1:1", input_cost_per_token: 0, output_cost_per_token: 0.0001}
general_settings:
  master_key: sk-1234
`

type spendEnv struct {
	url   string
	mock  *mockupstream.Server
	store store.Store
	srv   *Server
	stop  func() error
}

func startSpend(t *testing.T, st store.Store, mockOpts mockupstream.Options, extra string) *spendEnv {
	t.Helper()
	return startConfig(t, st, mockOpts, pricedConfig+extra)
}

// startConfig serves yaml (upstream URLs written {{UP}}, pointing at a
// mock with mockOpts) on st, on a real listener.
func startConfig(t *testing.T, st store.Store, mockOpts mockupstream.Options, yaml string) *spendEnv {
	t.Helper()
	mock := mockupstream.New(mockOpts)
	up := httptest.NewServer(mock)
	t.Cleanup(up.Close)
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(yaml, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: testLogger, Store: st})
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
	return &spendEnv{url: "http://" + ln.Addr().String(), mock: mock, store: st, srv: srv, stop: stop}
}

func sqliteStore(t *testing.T) store.Store {
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func stores(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, sqliteStore(t)) })
	t.Run("postgres", func(t *testing.T) {
		pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
		if pg == "" {
			t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run")
		}
		fn(t, storetest.OpenPostgres(t, pg))
	})
}

func (e *spendEnv) post(t *testing.T, path, key, body string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp, out
}

const chat3 = `{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"one two three four"}]}`

// TestConcurrentRequestsNeverOverspend: 200 requests at once against a key
// whose budget covers 50; at most 50 succeed and spend never passes the budget.
func TestConcurrentRequestsNeverOverspend(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		e := startSpend(t, st, mockupstream.Options{Delay: 20 * time.Millisecond}, "")
		_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 0.015}`) // 50 × 3e-4
		key := out["key"].(string)
		var ok, refused atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				resp, out := e.post(t, "/v1/chat/completions", key, chat3)
				switch {
				case resp.StatusCode == 200:
					ok.Add(1)
				case resp.StatusCode == 400 && out["error"].(map[string]any)["type"] == "budget_exceeded":
					refused.Add(1)
				default:
					t.Errorf("unexpected %d %v", resp.StatusCode, out)
				}
			}()
		}
		close(start)
		wg.Wait()
		if ok.Load() > 50 || ok.Load()+refused.Load() != 200 {
			t.Fatalf("%d succeeded, %d refused: at most 50 may succeed", ok.Load(), refused.Load())
		}
		if ok.Load() < 50 {
			t.Errorf("only %d of the 50 affordable requests succeeded", ok.Load())
		}
		if err := e.stop(); err != nil {
			t.Fatal(err)
		}
		k, err := st.GetKey(context.Background(), sha(key))
		if err != nil {
			t.Fatal(err)
		}
		if k.Spend > 0.015+1e-12 {
			t.Fatalf("spend %v exceeds max_budget 0.015", k.Spend)
		}
		logs, total, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
		if int64(total) != ok.Load() || int64(e.mock.Stats().Requests) != ok.Load() {
			t.Fatalf("spend logs %d, upstream requests %d, successes %d: all three must agree", total, e.mock.Stats().Requests, ok.Load())
		}
		if logs[0].CompletionTokens != 3 || logs[0].Cost != 0.0003 || logs[0].Status != 200 {
			t.Fatalf("spend log row %+v", logs[0])
		}
	})
}

func TestBudgetErrorsHeadersAndRelease(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, "")
	_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 0.0003, "team_id": "core-infra"}`)
	key := out["key"].(string)
	// A failed request releases its hold: the unreachable model costs nothing.
	if resp, _ := e.post(t, "/v1/chat/completions", key, strings.Replace(chat3, "gpt-4", "broken", 1)); resp.StatusCode != 502 {
		t.Fatalf("broken upstream: %d", resp.StatusCode)
	}
	resp, _ := e.post(t, "/v1/chat/completions", key, chat3)
	if resp.StatusCode != 200 {
		t.Fatalf("the budget was not released by the failed request: %d", resp.StatusCode)
	}
	if c, _ := strconv.ParseFloat(resp.Header.Get("x-tollgate-response-cost"), 64); c != 0.0003 {
		t.Errorf("x-tollgate-response-cost = %q", resp.Header.Get("x-tollgate-response-cost"))
	}
	if s, _ := strconv.ParseFloat(resp.Header.Get("x-tollgate-key-spend"), 64); s != 0.0003 {
		t.Errorf("x-tollgate-key-spend = %q", resp.Header.Get("x-tollgate-key-spend"))
	}
	resp, out = e.post(t, "/v1/chat/completions", key, chat3)
	msg, _ := out["error"].(map[string]any)["message"].(string)
	if resp.StatusCode != 400 || out["error"].(map[string]any)["type"] != "budget_exceeded" ||
		!strings.Contains(msg, "key "+sha(key)) || !strings.Contains(msg, "spend $0.0003") || !strings.Contains(msg, "max budget $0.0003") {
		t.Fatalf("over budget: %d %v", resp.StatusCode, out)
	}
}

func TestAbandonedStreamIsCharged(t *testing.T) {
	st := sqliteStore(t)
	e := startSpend(t, st, mockupstream.Options{Chunks: 20, ChunkDelay: 200 * time.Millisecond}, "")
	_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
	key := out["key"].(string)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"a b c d e f g h i j k l"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	for seen := 0; seen < 3; {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") {
			seen++
		}
	}
	cancel() // the client walks away mid-stream
	resp.Body.Close()
	e.stop()
	logs, total, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	if total != 1 || logs[0].Status != 499 || logs[0].CompletionTokens < 2 || logs[0].Cost <= 0 {
		t.Fatalf("abandoned stream booked as %+v (total %d)", logs, total)
	}
}

func TestStreamUsageIsBooked(t *testing.T) {
	st := sqliteStore(t)
	e := startSpend(t, st, mockupstream.Options{Chunks: 2}, "")
	_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
	key := out["key"].(string)
	req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4","stream":true,"max_tokens":3,"messages":[{"role":"user","content":"abcdefgh"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b := new(strings.Builder)
	bufio.NewReader(resp.Body).WriteTo(b)
	resp.Body.Close()
	e.stop()
	logs, _, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	if len(logs) != 1 || logs[0].PromptTokens != 2 || logs[0].CompletionTokens != 3 || logs[0].Cost != 0.0003 {
		t.Fatalf("streamed request booked as %+v", logs)
	}
}

// TestGracefulStopLosesNoSpend: stop the gateway while requests are in
// flight; every request the upstream served has its spend-log row.
func TestGracefulStopLosesNoSpend(t *testing.T) {
	st := sqliteStore(t)
	e := startSpend(t, st, mockupstream.Options{Delay: 30 * time.Millisecond}, "")
	_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
	key := out["key"].(string)
	var wg sync.WaitGroup
	var served atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(chat3))
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return // the listener closed
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return
				}
				served.Add(1)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	_, total, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{})
	if up := e.mock.Stats().Requests; int64(total) != up || up == 0 {
		t.Fatalf("spend logs %d, upstream served %d (client saw %d)", total, up, served.Load())
	}
}

func sha(raw string) string { return config.HashKey(raw) }

// TestBudgetDurationResets: a key whose budget covers one request per 2 s
// period is refused when spent and served again after budget_reset_at, which
// /key/info shows moving forward.
func TestBudgetDurationResets(t *testing.T) {
	st := sqliteStore(t)
	e := startSpend(t, st, mockupstream.Options{}, "")
	_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 0.0003, "budget_duration": "2s"}`)
	key := out["key"].(string)
	first, err := time.Parse(time.RFC3339, out["budget_reset_at"].(string))
	if err != nil || time.Until(first) > 2*time.Second {
		t.Fatalf("budget_reset_at %v (%v)", out["budget_reset_at"], err)
	}
	if resp, _ := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
		t.Fatal("first request refused")
	}
	resp, out := e.post(t, "/v1/chat/completions", key, chat3)
	if resp.StatusCode != 400 || !strings.Contains(out["error"].(map[string]any)["message"].(string), "budget resets at") {
		t.Fatalf("spent key: %d %v", resp.StatusCode, out)
	}
	deadline := time.Now().Add(6 * time.Second)
	for {
		resp, _ := e.post(t, "/v1/chat/completions", key, chat3)
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("budget never reset")
		}
		time.Sleep(100 * time.Millisecond)
	}
	deadline = time.Now().Add(3 * time.Second)
	for {
		req, _ := http.NewRequest("GET", e.url+"/key/info?key="+key, nil)
		req.Header.Set("Authorization", "Bearer sk-1234")
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var info map[string]any
		json.NewDecoder(r.Body).Decode(&info)
		r.Body.Close()
		at, _ := time.Parse(time.RFC3339, info["info"].(map[string]any)["budget_reset_at"].(string))
		if at.After(first) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/key/info still shows budget_reset_at %v", at)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
