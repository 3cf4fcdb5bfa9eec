package server

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestLiteLLMHeadersAndSpendLogs: an answer carries LiteLLM's x-litellm-*
// headers beside Tollgate's, with the same values; /spend/logs answers
// LiteLLM's shape, finds the row by the upstream answer's id (whole and
// streamed) and by Tollgate's call id, and summarises by day.
func TestLiteLLMHeadersAndSpendLogs(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, pricedConfig)
	key := newKey(t, e, `{"max_budget": 5, "tpm_limit": 100000, "rpm_limit": 1000}`)
	up := strings.TrimSuffix(e.srv.cfg.Load().Deployments[0].APIBase, "/")

	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, out)
	}
	h := resp.Header
	for _, name := range []string{"call-id", "model-id", "attempted-retries", "attempted-fallbacks", "response-cost", "key-spend"} {
		tg, ll := h.Get("x-tollgate-"+name), h.Get("x-litellm-"+name)
		if tg == "" || tg != ll {
			t.Errorf("x-tollgate-%s %q, x-litellm-%s %q: both set, the same", name, tg, name, ll)
		}
	}
	want := map[string]string{"x-litellm-version": Version, "x-litellm-model-group": "gpt-4", "x-litellm-model-api-base": up,
		"x-litellm-key-tpm-limit": "100000", "x-litellm-key-rpm-limit": "1000", "x-litellm-key-max-budget": "5", "x-litellm-response-cost": "0.0003"}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"x-litellm-response-duration-ms", "x-litellm-overhead-duration-ms"} {
		if _, err := strconv.ParseInt(h.Get(k), 10, 64); err != nil {
			t.Errorf("%s: %q is not a number of milliseconds", k, h.Get(k))
		}
	}
	if h.Get("x-litellm-model-region") != "" {
		t.Errorf("a deployment without a region sent x-litellm-model-region %q", h.Get("x-litellm-model-region"))
	}
	wholeID, wholeCall := out["id"].(string), h.Get("x-tollgate-call-id")
	if !strings.HasPrefix(wholeID, "chatcmpl-") {
		t.Fatalf("answer id %q", wholeID)
	}

	// The master key has no key limits: LiteLLM leaves them out.
	resp, _ = e.post(t, "/v1/chat/completions", "sk-1234", `{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`)
	for _, k := range []string{"x-litellm-key-tpm-limit", "x-litellm-key-rpm-limit", "x-litellm-key-max-budget"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("master key: %s %q, want none", k, v)
		}
	}

	// A stream: its id is the first chunk's.
	req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4","max_tokens":3,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	sresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	streamCall := sresp.Header.Get("x-litellm-call-id")
	if streamCall == "" || streamCall != sresp.Header.Get("x-tollgate-call-id") || sresp.Header.Get("x-litellm-model-id") == "" ||
		sresp.Header.Get("x-litellm-key-spend") != "0.0003" || sresp.Header.Get("x-tollgate-key-spend") != "0.0003" || sresp.Header.Get("x-litellm-response-cost") != "" {
		t.Errorf("stream headers: %v", sresp.Header)
	}
	first, _ := bufio.NewReader(sresp.Body).ReadString('\n')
	_, _ = io.Copy(io.Discard, sresp.Body)
	sresp.Body.Close()
	var chunk struct{ ID string }
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(first), "data: ")), &chunk); err != nil || chunk.ID == "" {
		t.Fatalf("first chunk %q: %v", first, err)
	}

	find := func(id string) []map[string]any {
		t.Helper()
		var rows []map[string]any
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			rows = nil
			if code := e.get(t, "/spend/logs?request_id="+url.QueryEscape(id), "sk-1234", &rows); code != 200 {
				t.Fatalf("/spend/logs: %d", code)
			}
			if len(rows) > 0 {
				break
			}
		}
		return rows
	}
	for _, tt := range []struct{ query, wantID, wantCall string }{
		{wholeID, wholeID, wholeCall},
		{wholeCall, wholeID, wholeCall},
		{chunk.ID, chunk.ID, streamCall},
		{streamCall, chunk.ID, streamCall},
	} {
		rows := find(tt.query)
		if len(rows) != 1 {
			t.Fatalf("request_id=%s: %d rows", tt.query, len(rows))
		}
		r := rows[0]
		for _, f := range []string{"request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens", "startTime", "endTime",
			"model", "model_id", "model_group", "api_base", "user", "team_id", "end_user", "metadata", "cache_hit", "request_tags"} {
			if _, ok := r[f]; !ok {
				t.Errorf("row lacks LiteLLM's field %s: %v", f, r)
			}
		}
		if r["request_id"] != tt.wantID || r["call_id"] != tt.wantCall || r["call_type"] != "acompletion" || r["api_key"] != sha(key) ||
			r["model"] != "gpt-4o-mini" || r["model_group"] != "gpt-4" || r["api_base"] != up || r["spend"] != 0.0003 || r["status"] != "success" {
			t.Errorf("request_id=%s: row %v", tt.query, r)
		}
	}

	today := time.Now().UTC().Format(time.DateOnly)
	var summary []map[string]any
	if code := e.get(t, "/spend/logs?start_date="+today+"&end_date="+today+"&api_key="+key, "sk-1234", &summary); code != 200 || len(summary) != 1 {
		t.Fatalf("summary: %d %v", code, summary)
	}
	if s := summary[0]; s["startTime"] != today || s["spend"].(float64) < 0.0006-1e-12 || s[sha(key)] != s["spend"] || s["models"].(map[string]any)["gpt-4"] != s["spend"] {
		t.Errorf("summary %v", s)
	}
	var rows []map[string]any
	if code := e.get(t, "/spend/logs?start_date="+today+"&end_date="+today+"&api_key="+key+"&summarize=false", "sk-1234", &rows); code != 200 || len(rows) != 2 || rows[0]["request_id"] == nil {
		t.Errorf("summarize=false: %d %v", code, rows)
	}
	var bad map[string]map[string]any
	if code := e.get(t, "/spend/logs?start_date="+today+"&end_date="+today+"&summarize=perhaps", "sk-1234", &bad); code != 400 || bad["error"]["param"] != "summarize" {
		t.Errorf("summarize=perhaps: %d %v", code, bad)
	}
}

// TestSpendLogsByRole: /spend/logs shows an admin or viewer every row, and
// an internal user (viewer or not) only her own user's, whatever she asks.
func TestSpendLogsByRole(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, pricedConfig)
	keys := map[string]string{}
	for _, role := range []string{"proxy_admin_viewer", "internal_user", "internal_user_viewer"} {
		if resp, out := e.post(t, "/user/new", "sk-1234", `{"user_id": "u-`+role+`", "user_role": "`+role+`"}`); resp.StatusCode != 200 {
			t.Fatalf("/user/new %s: %d %v", role, resp.StatusCode, out)
		}
		keys[role] = newKey(t, e, `{"user_id": "u-`+role+`"}`)
		if resp, out := e.post(t, "/v1/chat/completions", keys[role], `{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", role, resp.StatusCode, out)
		}
	}
	var rows []map[string]any
	for deadline := time.Now().Add(10 * time.Second); len(rows) < 3 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		rows = nil
		e.get(t, "/spend/logs", "sk-1234", &rows)
	}
	if len(rows) != 3 {
		t.Fatalf("the master key sees %d rows, want 3", len(rows))
	}
	tests := []struct {
		role, query string
		want        []string // the users of the rows seen
	}{
		{"proxy_admin_viewer", "", []string{"u-internal_user", "u-internal_user_viewer", "u-proxy_admin_viewer"}},
		{"internal_user", "", []string{"u-internal_user"}},
		{"internal_user", "?user_id=u-internal_user_viewer", []string{"u-internal_user"}},
		{"internal_user_viewer", "", []string{"u-internal_user_viewer"}},
	}
	for _, tt := range tests {
		var got []map[string]any
		if code := e.get(t, "/spend/logs"+tt.query, keys[tt.role], &got); code != 200 {
			t.Fatalf("%s: %d", tt.role, code)
		}
		var users []string
		for _, r := range got {
			users = append(users, r["user"].(string))
		}
		sort.Strings(users)
		if !slices.Equal(users, tt.want) {
			t.Errorf("%s%s sees %v, want %v", tt.role, tt.query, users, tt.want)
		}
	}
	var bad map[string]map[string]any
	if code := e.get(t, "/spend/logs?start_date=yesterday", "sk-1234", &bad); code != 400 || bad["error"]["param"] != "start_date" {
		t.Errorf("a bad date: %d %v", code, bad)
	}
}
