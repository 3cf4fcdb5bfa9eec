package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store"
)

// failingUpstream is an OpenAI-compatible upstream that fails as its
// x-fail header says - "503" and "400" answer that status with an error
// that quotes the prompt back (as some providers do), "hang" never
// answers - and answers anything else. It counts the requests it got.
func failingUpstream(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		_ = json.Unmarshal(body, &req)
		prompt := ""
		if len(req.Messages) > 0 {
			prompt = req.Messages[0].Content
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.Header.Get("x-fail") {
		case "503", "400":
			status := 503
			if r.Header.Get("x-fail") == "400" {
				status = 400
			}
			w.WriteHeader(status)
			b, _ := json.Marshal(map[string]any{"error": map[string]any{
				"message": "could not handle: " + prompt, "type": "upstream_trouble", "code": "overloaded_now"}})
			w.Write(b)
		case "hang":
			<-r.Context().Done()
		default:
			w.Write([]byte(`{"id":"chatcmpl-ok","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`))
		}
	}))
	t.Cleanup(up.Close)
	return up, &hits
}

// The prompt every request sends: no failure row may hold it.
const failPrompt = "secret-prompt-words-7f3a"

// TestUpstreamFailuresWriteOneFailureRow: every way a call that reached an
// upstream can end without an answer - an upstream 5xx after its retries,
// a 4xx, a timeout, a connection refused, a fallback that fails too, a
// client that leaves before the first byte (whole and streamed) - writes
// exactly one spend row: status failure, spend 0, the key's, user's and
// team's ids, the deployment that failed, LiteLLM's error_information
// without the prompt or the raw key; the key's spend stays 0 and its hold
// is released. A success next to them has status success and no
// error_information.
func TestUpstreamFailuresWriteOneFailureRow(t *testing.T) {
	t.Parallel()
	up, hits := failingUpstream(t)
	yaml := strings.ReplaceAll(`
model_list:
  - model_name: ok
    litellm_params: {model: openai/m, api_base: "{{F}}", input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
  - model_name: down
    litellm_params: {model: openai/m, api_base: "{{F}}", output_cost_per_token: 0.0001, extra_headers: {x-fail: "503"}}
    model_info: {id: down-1}
  - model_name: refuses
    litellm_params: {model: openai/m, api_base: "{{F}}", output_cost_per_token: 0.0001, extra_headers: {x-fail: "400"}}
  - model_name: hangs
    litellm_params: {model: openai/m, api_base: "{{F}}", output_cost_per_token: 0.0001, timeout: 0.2, extra_headers: {x-fail: "hang"}}
  - model_name: unreachable
    litellm_params: {model: openai/m, api_base: "http://127.0.0.1:1", output_cost_per_token: 0.0001}
  - model_name: first
    litellm_params: {model: openai/m, api_base: "{{F}}", output_cost_per_token: 0.0001, extra_headers: {x-fail: "503"}}
  - model_name: second
    litellm_params: {model: openai/m, api_base: "{{F}}", output_cost_per_token: 0.0001, extra_headers: {x-fail: "400"}}
    model_info: {id: second-1}
  - model_name: slow
    litellm_params: {model: openai/m, api_base: "{{F}}", output_cost_per_token: 0.0001, extra_headers: {x-fail: "hang"}}
router_settings:
  num_retries: 2
  retry_after: 0
  fallbacks: [{first: [second]}]
general_settings:
  master_key: sk-1234
`, "{{F}}", up.URL)
	tests := []struct {
		name, model  string
		stream       bool
		leave        bool  // the client goes away once the upstream has the request
		wantStatus   int   // the client's; 0: it left
		wantRow      int   // the row's http_status
		wantHits     int64 // upstream requests
		wantClass    string
		wantProvider string
		wantModelID  string
	}{
		{"upstream 5xx after retries", "down", false, false, 503, 503, 3, "ServiceUnavailableError", "openai", "down-1"},
		{"upstream 4xx", "refuses", false, false, 400, 400, 1, "BadRequestError", "openai", ""},
		{"timeout", "hangs", false, false, 504, 504, 3, "Timeout", "openai", ""},
		{"connection refused", "unreachable", false, false, 502, 502, 0, "APIConnectionError", "openai", ""},
		{"fallback fails too", "first", false, false, 400, 400, 4, "BadRequestError", "openai", "second-1"},
		{"client gone", "slow", false, true, 0, 499, 1, "client_disconnected", "openai", ""},
		{"client gone mid-stream request", "slow", true, true, 0, 499, 1, "client_disconnected", "openai", ""},
	}
	stores(t, func(t *testing.T, st store.Store) {
		cfg, err := config.Parse("t.yaml", []byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		e := serveWith(t, cfg, Options{Store: st})
		e.post(t, "/team/new", "sk-1234", `{"team_id": "team-f"}`)
		e.post(t, "/user/new", "sk-1234", `{"user_id": "user-f"}`)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 1, "user_id": "user-f", "team_id": "team-f"}`)
				key, _ := out["key"].(string)
				if key == "" {
					t.Fatalf("key/generate: %v", out)
				}
				before := hits.Load()
				body := `{"model":"` + tt.model + `","max_tokens":3,"user":"end-f","messages":[{"role":"user","content":"` + failPrompt + `"}]`
				if tt.stream {
					body += `,"stream":true`
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions", strings.NewReader(body+"}"))
				req.Header.Set("Authorization", "Bearer "+key)
				status := make(chan int, 1)
				go func() {
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						status <- 0
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status <- resp.StatusCode
				}()
				if tt.leave {
					if _, ok := within(10*time.Second, func() bool { return hits.Load() > before }); !ok {
						t.Fatal("the request never reached the upstream")
					}
					cancel()
				}
				if got := <-status; got != tt.wantStatus {
					t.Fatalf("client status %d, want %d", got, tt.wantStatus)
				}
				if got := hits.Load() - before; got != tt.wantHits {
					t.Fatalf("%d upstream requests, want %d", got, tt.wantHits)
				}
				acct, _ := e.srv.book.Lookup(store.KindKey, sha(key))
				var rows []map[string]any
				if _, ok := within(10*time.Second, func() bool {
					e.srv.writer.Flush()
					rows = nil
					e.get(t, "/spend/logs?api_key="+sha(key), "sk-1234", &rows)
					return len(rows) > 0 && acct != nil && acct.Reserved() == 0
				}); !ok {
					t.Fatalf("no spend row or hold not released: rows %v", rows)
				}
				if len(rows) != 1 {
					t.Fatalf("%d spend rows, want 1: %v", len(rows), rows)
				}
				r := rows[0]
				md, _ := r["metadata"].(map[string]any)
				info, _ := md["error_information"].(map[string]any)
				if r["status"] != "failure" || md["status"] != "failure" || r["spend"] != 0.0 || r["http_status"] != float64(tt.wantRow) ||
					r["user"] != "user-f" || r["team_id"] != "team-f" || r["end_user"] != "end-f" || r["api_key"] != sha(key) {
					t.Fatalf("failure row %v", r)
				}
				if tt.wantModelID != "" && r["model_id"] != tt.wantModelID {
					t.Fatalf("model_id %v, want %s", r["model_id"], tt.wantModelID)
				}
				if info == nil || info["error_code"] != strconv.Itoa(tt.wantRow) || info["error_class"] != tt.wantClass ||
					info["llm_provider"] != tt.wantProvider || info["error_message"] == "" {
					t.Fatalf("error_information %v", info)
				}
				raw, _ := json.Marshal(r)
				if strings.Contains(string(raw), failPrompt) || strings.Contains(string(raw), key) {
					t.Fatalf("the row holds the prompt or the raw key: %s", raw)
				}
				k, _ := st.GetKey(context.Background(), sha(key))
				if k.Spend != 0 || acct.Spent() != 0 {
					t.Fatalf("stored spend %v, booked %v for a failed request", k.Spend, acct.Spent())
				}
				// The status filter finds it, and success does not.
				var failed, ok []map[string]any
				e.get(t, "/spend/logs?status=failure&api_key="+sha(key), "sk-1234", &failed)
				e.get(t, "/spend/logs?status=success&api_key="+sha(key), "sk-1234", &ok)
				if len(failed) != 1 || len(ok) != 0 {
					t.Fatalf("status filter: %d failure, %d success rows", len(failed), len(ok))
				}
			})
		}
		t.Run("success", func(t *testing.T) {
			_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 1}`)
			key := out["key"].(string)
			resp, _ := e.post(t, "/v1/chat/completions", key, `{"model":"ok","messages":[{"role":"user","content":"hi"}]}`)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			e.srv.writer.Flush()
			var rows []map[string]any
			e.get(t, "/spend/logs?api_key="+sha(key), "sk-1234", &rows)
			if len(rows) != 1 || rows[0]["status"] != "success" || rows[0]["spend"].(float64) <= 0 {
				t.Fatalf("success rows %v", rows)
			}
			if _, has := rows[0]["metadata"].(map[string]any)["error_information"]; has {
				t.Fatalf("a success row has error_information: %v", rows[0])
			}
		})
	})
}

// TestRefusalsWriteNoRow: requests refused before any upstream call - an
// unknown key, a spent budget, a rate limit - write no spend row, call no
// upstream and change no spend.
func TestRefusalsWriteNoRow(t *testing.T) {
	up, hits := failingUpstream(t)
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(`
model_list:
  - model_name: ok
    litellm_params: {model: openai/m, api_base: "{{F}}", input_cost_per_token: 0.01, output_cost_per_token: 0.01}
general_settings:
  master_key: sk-1234
`, "{{F}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	stores(t, func(t *testing.T, st store.Store) {
		e := serveWith(t, cfg, Options{Store: st})
		_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 0.000001}`)
		spent := out["key"].(string)
		_, out = e.post(t, "/key/generate", "sk-1234", `{"rpm_limit": 1}`)
		limited := out["key"].(string)
		chat := `{"model":"ok","messages":[{"role":"user","content":"hi"}]}`
		// Spend the small budget, and the rate limit's one request.
		for _, k := range []string{spent, limited} {
			if resp, _ := e.post(t, "/v1/chat/completions", k, chat); resp.StatusCode != 200 {
				t.Fatalf("first request: %d", resp.StatusCode)
			}
		}
		e.srv.writer.Flush()
		var all []map[string]any
		e.get(t, "/spend/logs", "sk-1234", &all)
		before, hitsBefore := len(all), hits.Load()
		keyBefore, _ := st.GetKey(context.Background(), sha(spent))
		tests := []struct {
			name, key  string
			wantStatus int
		}{
			{"unknown key", "sk-not-a-key", 401},
			{"budget spent", spent, 400},
			{"rate limited", limited, 429},
		}
		for _, tt := range tests {
			if resp, _ := e.post(t, "/v1/chat/completions", tt.key, chat); resp.StatusCode != tt.wantStatus {
				t.Fatalf("%s: status %d, want %d", tt.name, resp.StatusCode, tt.wantStatus)
			}
		}
		e.srv.writer.Flush()
		all = nil
		e.get(t, "/spend/logs", "sk-1234", &all)
		keyAfter, _ := st.GetKey(context.Background(), sha(spent))
		if len(all) != before || hits.Load() != hitsBefore || keyAfter.Spend != keyBefore.Spend {
			t.Fatalf("refusals wrote %d rows, made %d upstream calls, changed spend %v -> %v",
				len(all)-before, hits.Load()-hitsBefore, keyBefore.Spend, keyAfter.Spend)
		}
	})
}

// TestPassThroughUnreachableWritesAFailureRow: a pass-through call whose
// upstream cannot be reached writes one failure row without cost, as a
// chat call does.
func TestPassThroughUnreachableWritesAFailureRow(t *testing.T) {
	t.Setenv("COHERE_API_KEY", "sk-upstream-cohere")
	t.Setenv("COHERE_API_BASE", "http://127.0.0.1:1")
	cfg, err := config.Parse("p.yaml", []byte("general_settings:\n  master_key: sk-1234\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{"max_budget": 1}`)
	resp, body := passSend(t, "POST", e.url+"/cohere/v2/chat", `{"model":"command-r","messages":[{"role":"user","content":"`+failPrompt+`"}]}`, "Authorization", "Bearer "+key)
	if resp.StatusCode != 502 {
		t.Fatalf("status %d %s, want 502", resp.StatusCode, body)
	}
	rows := spendRows(t, e, key)
	if len(rows) != 1 || rows[0].Status != 502 || rows[0].Cost != 0 || rows[0].ErrorInformation == nil ||
		rows[0].ErrorInformation.ErrorClass != "APIConnectionError" || strings.Contains(rows[0].ErrorInformation.ErrorMessage, failPrompt) {
		t.Fatalf("rows %+v", rows)
	}
	if k, _ := e.store.GetKey(context.Background(), sha(key)); k.Spend != 0 {
		t.Fatalf("key spend %v", k.Spend)
	}
}

// TestDisableErrorLogs: with general_settings.disable_error_logs (LiteLLM's)
// a failed call writes no row; an answered one still does.
func TestDisableErrorLogs(t *testing.T) {
	up, _ := failingUpstream(t)
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(`
model_list:
  - model_name: ok
    litellm_params: {model: openai/m, api_base: "{{F}}", output_cost_per_token: 0.0001}
  - model_name: refuses
    litellm_params: {model: openai/m, api_base: "{{F}}", output_cost_per_token: 0.0001, extra_headers: {x-fail: "400"}}
general_settings:
  master_key: sk-1234
  disable_error_logs: true
`, "{{F}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	e := serveWith(t, cfg, Options{Store: st})
	key := newKey(t, e, `{"max_budget": 1}`)
	for model, want := range map[string]int{"refuses": 400, "ok": 200} {
		if resp, _ := e.post(t, "/v1/chat/completions", key, `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != want {
			t.Fatalf("%s: status %d, want %d", model, resp.StatusCode, want)
		}
	}
	e.srv.writer.Flush()
	logs, total, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	if total != 1 || logs[0].ModelGroup != "ok" || logs[0].Status != 200 {
		t.Fatalf("rows %+v, want the answered call's only", logs)
	}
}
