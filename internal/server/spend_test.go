package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
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
	return startSpendWith(t, st, mockOpts, "", extra, Options{})
}

// startSpendWith is startSpend with more model_list entries (YAML list
// items, {{UP}} for the mock's URL) and server options.
func startSpendWith(t *testing.T, st store.Store, mockOpts mockupstream.Options, models, extra string, opts Options) *spendEnv {
	t.Helper()
	return startConfigWith(t, st, mockOpts, strings.Replace(pricedConfig, "general_settings:", models+"general_settings:", 1)+extra, opts)
}

// startConfig serves yaml (upstream URLs written {{UP}}, pointing at a
// mock with mockOpts) on st, on a real listener.
func startConfig(t *testing.T, st store.Store, mockOpts mockupstream.Options, yaml string) *spendEnv {
	t.Helper()
	return startConfigWith(t, st, mockOpts, yaml, Options{})
}

// startConfigWith is startConfig with server options.
func startConfigWith(t *testing.T, st store.Store, mockOpts mockupstream.Options, yaml string, opts Options) *spendEnv {
	t.Helper()
	mock := mockupstream.New(mockOpts)
	up := httptest.NewServer(mock)
	t.Cleanup(up.Close)
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(yaml, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	opts.Store = st
	e := serveWith(t, cfg, opts)
	e.mock = mock
	return e
}

// sqliteStore opens a fresh SQLite store, a copy of a migrated template
// made once per test binary (storetest.OpenSQLite): the package's tests
// open hundreds of stores, and running every migration for each cost a
// large share of the package's CPU time.
func sqliteStore(t testing.TB) store.Store {
	t.Helper()
	return storetest.OpenSQLite(t, filepath.Join(t.TempDir(), "tollgate.db"))
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

func (e *spendEnv) post(t *testing.T, path, key, body string, headers ...string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
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
	t.Parallel()
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
	if total != 1 || logs[0].Status != 499 || logs[0].CompletionTokens < 2 || logs[0].Cost <= 0 || !logs[0].UsageEstimated {
		t.Fatalf("abandoned stream booked as %+v (total %d)", logs, total)
	}
	if k, _ := st.GetKey(context.Background(), sha(key)); k.Spend != logs[0].Cost {
		t.Fatalf("key spend %v, spend row %v", k.Spend, logs[0].Cost)
	}
}

// TestFailedRequestsReleaseTheirHold: a request that ends without an answer
// (the upstream fails, times out, or the client leaves first) costs nothing,
// writes one failure row without cost (TestUpstreamFailuresWriteOneFailureRow
// checks its fields) and leaves nothing held on its budgets.
func TestFailedRequestsReleaseTheirHold(t *testing.T) {
	t.Parallel()
	const models = `  - model_name: failing
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}", output_cost_per_token: 0.0001, extra_headers: {x-mock-status: "500"}}
  - model_name: hanging
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}", output_cost_per_token: 0.0001, timeout: 0.2, extra_headers: {x-mock-delay-ms: "30000"}}
`
	tests := []struct {
		name, model string
		leave       bool // the client goes away once the upstream has the request
		wantStatus  int
	}{
		{"upstream error", "failing", false, 500},
		{"upstream timeout", "hanging", false, 504},
		{"client gone", "slow", true, 0},
	}
	stores(t, func(t *testing.T, st store.Store) {
		e := startSpendWith(t, st, mockupstream.Options{}, models+mockModel("slow", "x-mock-delay-ms", "30000"), "", Options{})
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 1}`)
				key := out["key"].(string)
				before := e.mock.Stats().Requests
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions", strings.NewReader(strings.Replace(chat3, "gpt-4", tt.model, 1)))
				req.Header.Set("Authorization", "Bearer "+key)
				status := make(chan int, 1)
				go func() {
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						status <- 0
						return
					}
					resp.Body.Close()
					status <- resp.StatusCode
				}()
				if tt.leave {
					if _, ok := within(10*time.Second, func() bool { return e.mock.Stats().Requests > before }); !ok {
						t.Fatal("the request never reached the upstream")
					}
					cancel()
				}
				if got := <-status; got != tt.wantStatus {
					t.Fatalf("status %d, want %d", got, tt.wantStatus)
				}
				acct, _ := e.srv.book.Lookup(store.KindKey, sha(key))
				if _, ok := within(10*time.Second, func() bool { return acct != nil && acct.Reserved() == 0 }); !ok {
					t.Fatalf("hold not released: %v reserved", acct.Reserved())
				}
				e.srv.writer.Flush()
				logs, total, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
				k, _ := st.GetKey(context.Background(), sha(key))
				if total != 1 || logs[0].Cost != 0 || logs[0].Status < 400 || logs[0].ErrorInformation == nil || k.Spend != 0 || acct.Spent() != 0 {
					t.Fatalf("%d spend rows (%+v), stored spend %v, booked %v for a request that got no answer", total, logs, k.Spend, acct.Spent())
				}
			})
		}
	})
}

func TestStreamUsageIsBooked(t *testing.T) {
	// 40 words in 2 content chunks (plus the role and finish chunks).
	models := mockModel("long", "x-mock-completion-tokens", "40") +
		strings.Replace(mockModel("long-no-usage", "x-mock-completion-tokens", "40"), "}}\n", ", x-mock-no-usage: \"1\"}}\n", 1)
	tests := []struct {
		name, model      string
		maxTokens        int
		wantMin, wantMax int64 // completion tokens booked
		wantPrompt       int64
		wantEstimated    bool
	}{
		{"usage reported", "gpt-4", 3, 3, 3, 2, false},
		// Without usage the stream is estimated from what it carried: one
		// token per chunk would book 4 for 40 words.
		{"no usage", "long-no-usage", 0, 20, 120, 0, true},
	}
	st := sqliteStore(t)
	e := startSpendWith(t, st, mockupstream.Options{Chunks: 2}, models, "", Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
			key := out["key"].(string)
			body := fmt.Sprintf(`{"model":%q,"stream":true,"max_tokens":%d,"messages":[{"role":"user","content":"abcdefgh"}]}`, tt.model, tt.maxTokens)
			req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(strings.Replace(body, `"max_tokens":0,`, "", 1)))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b := new(strings.Builder)
			bufio.NewReader(resp.Body).WriteTo(b)
			resp.Body.Close()
			e.srv.writer.Flush()
			logs, _, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
			if len(logs) != 1 || logs[0].CompletionTokens < tt.wantMin || logs[0].CompletionTokens > tt.wantMax ||
				(tt.wantPrompt > 0 && logs[0].PromptTokens != tt.wantPrompt) || logs[0].UsageEstimated != tt.wantEstimated || logs[0].Cost <= 0 {
				t.Fatalf("streamed request booked as %+v", logs)
			}
		})
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
	deadline := time.Now().Add(60 * time.Second)
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
	deadline = time.Now().Add(30 * time.Second)
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

// TestHoldCoversEveryChoice: a request asking for several completions (n,
// best_of, a batch of prompts) holds what all of them can cost, so a key
// with $0.05 never spends more, however the output is multiplied.
func TestHoldCoversEveryChoice(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, path, body string
		wantServed       int
	}{
		{"chat n", "/v1/chat/completions", `{"model":"long","max_tokens":50,"n":8,"messages":[{"role":"user","content":"hi"}]}`, 1},
		{"completions best_of", "/v1/completions", `{"model":"long","max_tokens":50,"best_of":8,"prompt":"hi"}`, 1},
		{"completions prompt batch", "/v1/completions", `{"model":"long","max_tokens":50,"n":2,"prompt":["a","b","c","d"]}`, 1},
		// A worst case beyond what the ledger holds is held whole, never wrapped to a free hold.
		{"huge max_tokens", "/v1/chat/completions", `{"model":"long","max_tokens":1000000000000000,"messages":[{"role":"user","content":"hi"}]}`, 0},
	}
	// Strict holds the worst case: it never lets spend pass the budget.
	// Default holds at most what remains and may pass it by one request's
	// cost ($0.04 here); TestConcurrencyBoundByMode covers that mode.
	stores(t, func(t *testing.T, st store.Store) {
		e := startSpendWith(t, st, mockupstream.Options{}, mockModel("long", "x-mock-completion-tokens", "50"),
			"litellm_settings:\n  budget_enforcement: strict\n", Options{})
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 0.05}`)
				key := out["key"].(string)
				served := 0
				for range 10 {
					// 50 tokens × 8 completions × 1e-4 = $0.04 each
					resp, _ := e.post(t, tt.path, key, tt.body)
					if resp.StatusCode != 200 {
						break
					}
					served++
				}
				e.srv.writer.Flush()
				k, err := st.GetKey(context.Background(), sha(key))
				if err != nil {
					t.Fatal(err)
				}
				if served != tt.wantServed || k.Spend > 0.05+1e-12 {
					t.Fatalf("%d requests served, key spend $%v on a $0.05 budget", served, k.Spend)
				}
			})
		}
	})
}

// TestOutputMultipliersAreChecked: n and best_of that are not positive
// integers are a 400 naming the field, and nothing reaches the upstream.
func TestOutputMultipliersAreChecked(t *testing.T) {
	tests := []struct{ name, body, param string }{
		{"n zero", `{"model":"gpt-4","n":0,"messages":[]}`, "n"},
		{"n string", `{"model":"gpt-4","n":"8","messages":[]}`, "n"},
		{"best_of negative", `{"model":"gpt-4","best_of":-2,"prompt":"x"}`, "best_of"},
		{"n fraction", `{"model":"gpt-4","n":1.5,"messages":[]}`, "n"},
	}
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, out := e.post(t, "/v1/chat/completions", "sk-1234", tt.body)
			errObj, _ := out["error"].(map[string]any)
			if resp.StatusCode != 400 || errObj["param"] != tt.param {
				t.Fatalf("%d %v", resp.StatusCode, out)
			}
		})
	}
	if n := e.mock.Stats().Requests; n != 0 {
		t.Fatalf("%d bad requests reached the upstream", n)
	}
}

// TestUpstreamUsageIsValidated: usage an upstream reports is never booked
// below zero nor above what the request's hold allowed; a clamp logs an
// alarm, and the spend row keeps both what was reported and what was booked.
func TestUpstreamUsageIsValidated(t *testing.T) {
	const spacedImage = `{"model": "MODEL", "max_tokens": 3, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]}`
	const fileRef = `{"model":"MODEL","max_tokens":3,"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-abc123"}},{"type":"text","text":"summarise"}]}]}`
	const image = `{"model":"MODEL","max_tokens":3,"messages":[{"role":"user","content":[{"type":"text","text":"what is it?"},{"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"high"}}]}]}`
	tests := []struct {
		name, usage, body                  string
		wantPrompt, wantCompletion         int64
		wantReportedPrompt, wantReportedCo int64
		wantCost                           float64
		wantClamped                        bool
	}{
		// max_tokens 3 at 1e-4: the hold allowed $0.0003 of output.
		{"absurd", `{"prompt_tokens":5,"completion_tokens":100000000}`, chat3, 5, 3, 5, 100000000, 0.0003, true},
		{"negative", `{"prompt_tokens":-7,"completion_tokens":-1000000}`, chat3, 0, 0, -7, -1000000, 0, true},
		// gpt-4o-mini bills one high-detail image up to 48,169 tokens: true usage, booked whole.
		{"mini-image", `{"prompt_tokens":36835,"completion_tokens":3}`, image, 36835, 3, 36835, 3, 0.0003, false},
		// Python SDKs send "type": "image" with a space; still an image.
		{"spaced-image", `{"prompt_tokens":1500,"completion_tokens":3}`, spacedImage, 1500, 3, 1500, 3, 0.0003, false},
		// A file referenced by id can be as long as the model's context window.
		{"file-reference", `{"prompt_tokens":90000,"completion_tokens":3}`, fileRef, 90000, 3, 90000, 3, 0.0003, false},
	}
	stores(t, func(t *testing.T, st store.Store) {
		models := ""
		for _, tt := range tests {
			models += mockModel(tt.name, "x-mock-usage", tt.usage)
		}
		e := startSpendWith(t, st, mockupstream.Options{}, models, "", Options{})
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 1}`)
				key := out["key"].(string)
				if resp, _ := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
					t.Fatal("honest request refused")
				}
				body := strings.Replace(strings.Replace(tt.body, "gpt-4", tt.name, 1), "MODEL", tt.name, 1)
				resp, _ := e.post(t, "/v1/chat/completions", key, body)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				id := resp.Header.Get("x-tollgate-call-id")
				e.srv.writer.Flush()
				k, err := st.GetKey(context.Background(), sha(key))
				if err != nil {
					t.Fatal(err)
				}
				if want := 0.0003 + tt.wantCost; math.Abs(k.Spend-want) > 1e-12 {
					t.Errorf("key spend $%v, want $%v", k.Spend, want)
				}
				logs, _, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{RequestID: id})
				if len(logs) != 1 {
					t.Fatalf("%d spend rows for %s", len(logs), id)
				}
				l := logs[0]
				if l.PromptTokens != tt.wantPrompt || l.CompletionTokens != tt.wantCompletion || math.Abs(l.Cost-tt.wantCost) > 1e-12 ||
					l.ReportedPromptTokens != tt.wantReportedPrompt || l.ReportedCompletionTokens != tt.wantReportedCo || l.UsageClamped != tt.wantClamped || l.UsageEstimated {
					t.Errorf("spend row %+v", l)
				}
				if n := len(loggedLines("upstream usage out of bounds", id)); (n == 1) != tt.wantClamped || n > 1 {
					t.Errorf("%d alarm lines for %s", n, id)
				}
			})
		}
		resp, err := http.Get(e.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b := new(strings.Builder)
		bufio.NewReader(resp.Body).WriteTo(b)
		resp.Body.Close()
		if want := `tollgate_usage_adjusted_total{adjustment="clamped",provider="openai"} 2`; !strings.Contains(b.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	})
}

// TestAnswerWithoutUsageIsBooked: a 200 that reports no usage is charged an
// estimate and flagged; a 200 that is not JSON is a 502, booked as a
// failure that costs nothing and releases its hold.
func TestAnswerWithoutUsageIsBooked(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, header, value string
		wantStatus          int
		wantCost            bool
	}{
		{"no-usage", "x-mock-no-usage", "1", 200, true},
		{"not-json", "x-mock-raw-body", `{"choices":[{"message":`, 502, false},
	}
	stores(t, func(t *testing.T, st store.Store) {
		models := ""
		for _, tt := range tests {
			models += mockModel(tt.name, tt.header, tt.value)
		}
		e := startSpendWith(t, st, mockupstream.Options{}, models, "", Options{})
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 0.0003}`)
				key := out["key"].(string)
				resp, body := e.post(t, "/v1/chat/completions", key, strings.Replace(chat3, "gpt-4", tt.name, 1))
				if resp.StatusCode != tt.wantStatus {
					t.Fatalf("status %d %v", resp.StatusCode, body)
				}
				id := resp.Header.Get("x-tollgate-call-id")
				e.srv.writer.Flush()
				logs, _, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{RequestID: id})
				if len(logs) != 1 {
					t.Fatalf("%d spend rows for an answered request", len(logs))
				}
				l := logs[0]
				k, _ := st.GetKey(context.Background(), sha(key))
				switch {
				case tt.wantCost && (l.Cost <= 0 || l.CompletionTokens != 3 || l.PromptTokens <= 0 || !l.UsageEstimated || l.Status != 200 || k.Spend != l.Cost):
					t.Errorf("estimated row %+v, key spend %v", l, k.Spend)
				case !tt.wantCost && (l.Cost != 0 || l.Status != 502 || k.Spend != 0):
					t.Errorf("failure row %+v, key spend %v", l, k.Spend)
				}
				if !tt.wantCost { // the hold was released: the whole budget is left
					if resp, _ := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
						t.Errorf("after a failed answer the budget is still held: %d", resp.StatusCode)
					}
				}
			})
		}
	})
}

// mockModel is a model_list entry priced as gpt-4 whose deployment sends the
// mock a knob header, so that it misbehaves for this model only.
func mockModel(name, header, value string) string {
	return fmt.Sprintf("  - model_name: %s\n    litellm_params: {model: openai/gpt-4o-mini, api_base: \"{{UP}}\", input_cost_per_token: 0, output_cost_per_token: 0.0001, extra_headers: {%s: %s}}\n",
		name, header, strconv.Quote(value))
}

// loggedLines are the log lines of this test binary holding every one of subs.
func loggedLines(subs ...string) []string {
	testLog.mu.Lock()
	defer testLog.mu.Unlock()
	var out []string
	for _, line := range strings.Split(testLog.buf.String(), "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// TestShutdownTimeoutBooksCutStreams: a shutdown whose --shutdown-timeout
// cuts requests in flight still books what they produced: the spend writer
// closes only after the last handler has settled. A stream cut mid-way is
// charged its chunks; a request cut before its answer costs nothing.
func TestShutdownTimeoutBooksCutStreams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		stream     bool
		wantRow    bool
	}{
		{"stream", `{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"a b c d e f g h i j k l m n o p q r s t"}]}`, true, true},
		{"waiting", `{"model":"slow","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`, false, false},
	}
	stores(t, func(t *testing.T, st store.Store) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := startSpendWith(t, st, mockupstream.Options{Chunks: 20, ChunkDelay: 100 * time.Millisecond},
					mockModel("slow", "x-mock-delay-ms", "60000"), "", Options{ShutdownTimeout: 100 * time.Millisecond})
				_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
				key := out["key"].(string)
				req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(tt.body))
				req.Header.Set("Authorization", "Bearer "+key)
				got := make(chan int, 1)
				go func() {
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						got <- 0
						return
					}
					defer resp.Body.Close()
					r := bufio.NewReader(resp.Body)
					seen := 0
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							break
						}
						if strings.HasPrefix(line, "data: {") {
							if seen++; seen == 3 {
								got <- seen // mid-stream: now shut down
							}
						}
					}
				}()
				if tt.stream {
					<-got
				} else if _, ok := within(10*time.Second, func() bool { return e.mock.Stats().Requests == 1 }); !ok {
					t.Fatal("the request never reached the upstream")
				}
				e.stop() // the shutdown timeout passes with the request still in flight
				logs, total, err := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
				if err != nil {
					t.Fatal(err)
				}
				k, err := st.GetKey(context.Background(), sha(key))
				if err != nil {
					t.Fatal(err)
				}
				if !tt.wantRow {
					// One failure row without cost.
					if total != 1 || logs[0].Cost != 0 || logs[0].Status != 499 || k.Spend != 0 {
						t.Fatalf("a request cut before its answer was charged: %+v, key spend %v", logs, k.Spend)
					}
					return
				}
				if total != 1 || logs[0].CompletionTokens < 2 || logs[0].Cost <= 0 || !logs[0].UsageEstimated {
					t.Fatalf("stream cut by the shutdown timeout booked as %+v (total %d)", logs, total)
				}
				if math.Abs(k.Spend-logs[0].Cost) > 1e-12 {
					t.Fatalf("key spend %v, spend row %v", k.Spend, logs[0].Cost)
				}
			})
		}
	})
}

// TestBudgetsSurviveRestart: a key's model_max_budget, a member's
// max_budget_in_team and the budget a
// custom_auth hook gives a key it alone knows are kept in the store like
// every other budget: exhausted, they still refuse after a restart on the
// same database, and after Redis has lost its copy of the shared budgets.
func TestBudgetsSurviveRestart(t *testing.T) {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"allow": true, "models": []string{"gpt-4"}, "max_budget": 0.0003})
	}))
	defer hook.Close()
	tests := []struct {
		name, extra string
		key         func(t *testing.T, e *spendEnv) string
		wantKind    string
	}{
		{"model_max_budget", "", func(t *testing.T, e *spendEnv) string {
			_, out := e.post(t, "/key/generate", "sk-1234", `{"model_max_budget": {"gpt-4": 0.0003}}`)
			return out["key"].(string)
		}, "key_model"},
		{"max_budget_in_team", "", func(t *testing.T, e *spendEnv) string {
			team := "t-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			e.post(t, "/team/new", "sk-1234", `{"team_id": "`+team+`", "members_with_roles": [{"user_id": "`+team+`-u"}]}`)
			e.post(t, "/team/member_update", "sk-1234", `{"team_id": "`+team+`", "user_id": "`+team+`-u", "max_budget_in_team": 0.0003}`)
			_, out := e.post(t, "/key/generate", "sk-1234", `{"user_id": "`+team+`-u", "team_id": "`+team+`"}`)
			return out["key"].(string)
		}, "team_member"},
		{"custom_auth", "  custom_auth:\n    mode: replace\n    webhook: {url: " + hook.URL + "}\n", func(t *testing.T, e *spendEnv) string {
			return "sk-hook-only-key-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		}, "key"},
		{"team membership budget", "", func(t *testing.T, e *spendEnv) string {
			for _, c := range [][2]string{
				{"/budget/new", `{"budget_id": "member-b", "max_budget": 0.0003}`},
				{"/user/new", `{"user_id": "ann"}`},
				{"/team/new", `{"team_id": "squad", "members_with_roles": [{"user_id": "ann", "role": "user", "budget_id": "member-b"}]}`},
			} {
				if resp, out := e.post(t, c[0], "sk-1234", c[1]); resp.StatusCode != 200 {
					t.Fatalf("%s: %d %v", c[0], resp.StatusCode, out)
				}
			}
			_, out := e.post(t, "/key/generate", "sk-1234", `{"user_id": "ann", "team_id": "squad"}`)
			return out["key"].(string)
		}, "team_member"},
		{"organization", "", func(t *testing.T, e *spendEnv) string {
			for _, c := range [][2]string{
				{"/organization/new", `{"organization_id": "acme", "organization_alias": "Acme", "max_budget": 0.0003}`},
				{"/team/new", `{"team_id": "acme-eng", "organization_id": "acme"}`},
			} {
				if resp, out := e.post(t, c[0], "sk-1234", c[1]); resp.StatusCode != 200 {
					t.Fatalf("%s: %d %v", c[0], resp.StatusCode, out)
				}
			}
			_, out := e.post(t, "/key/generate", "sk-1234", `{"team_id": "acme-eng"}`)
			return out["key"].(string)
		}, "organization"},
	}
	redisURL := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	for _, shared := range []bool{false, true} {
		t.Run(map[bool]string{false: "local", true: "redis"}[shared], func(t *testing.T) {
			if shared && redisURL == "" {
				t.Skip("TOLLGATE_TEST_REDIS_URL is not set")
			}
			stores(t, func(t *testing.T, st store.Store) {
				for _, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						extra, opts := tt.extra, Options{}
						if shared {
							extra += "  redis_url: " + redisURL + "\n"
							opts.RedisPrefix = "restart-" + strconv.FormatInt(time.Now().UnixNano(), 36)
						}
						e := startSpendWith(t, st, mockupstream.Options{}, "", extra, opts)
						key := tt.key(t, e)
						if resp, out := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
							t.Fatalf("first request: %d %v", resp.StatusCode, out)
						}
						if resp, _ := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != 400 {
							t.Fatalf("spent budget before the restart: %d", resp.StatusCode)
						}
						if err := e.stop(); err != nil {
							t.Fatal(err)
						}
						// A new gateway on the same database (and, shared, a Redis
						// that has lost the budgets: a new prefix).
						opts.RedisPrefix += "-after"
						e = startSpendWith(t, st, mockupstream.Options{}, "", extra, opts)
						resp, out := e.post(t, "/v1/chat/completions", key, chat3)
						errObj, _ := out["error"].(map[string]any)
						msg, _ := errObj["message"].(string)
						if resp.StatusCode != 400 || !strings.Contains(msg, "Budget has been exceeded for "+tt.wantKind+" ") {
							t.Fatalf("after the restart: %d %v", resp.StatusCode, out)
						}
					})
				}
			})
		})
	}
}

// TestModelSpendFollowsTheKey: a key's model_max_budget spend is shown as
// its model_spend, and moves with the key when it is regenerated: the new
// key is refused like the old one.
func TestModelSpendFollowsTheKey(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		e := startSpend(t, st, mockupstream.Options{}, "")
		_, out := e.post(t, "/key/generate", "sk-1234", `{"model_max_budget": {"gpt-4": 0.0003}}`)
		key := out["key"].(string)
		if resp, _ := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
			t.Fatal("first request refused")
		}
		e.srv.writer.Flush()
		k, err := st.GetKey(context.Background(), sha(key))
		if err != nil || k.ModelSpend["gpt-4"] != 0.0003 {
			t.Fatalf("model_spend %v (%v)", k, err)
		}
		resp, out := e.post(t, "/key/regenerate", "sk-1234", `{"key": "`+key+`"}`)
		if resp.StatusCode != 200 {
			t.Fatalf("regenerate: %d %v", resp.StatusCode, out)
		}
		fresh := out["key"].(string)
		if resp, _ := e.post(t, "/v1/chat/completions", fresh, chat3); resp.StatusCode != 400 {
			t.Fatalf("the regenerated key escaped its model budget: %d", resp.StatusCode)
		}
		if k, err := st.GetKey(context.Background(), sha(fresh)); err != nil || k.ModelSpend["gpt-4"] != 0.0003 {
			t.Fatalf("model_spend after regenerate %v (%v)", k, err)
		}
	})
}
