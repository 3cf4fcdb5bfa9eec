package server

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// startCachedGuarded serves guardConfig with the local response cache on.
func startCachedGuarded(t *testing.T) (*spendEnv, *recordingUpstream) {
	t.Helper()
	up := &recordingUpstream{reply: "ok"}
	ts := httptest.NewServer(up)
	t.Cleanup(ts.Close)
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(guardConfig, "{{UP}}", ts.URL)+"litellm_settings:\n  cache: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	return serveWith(t, cfg, Options{Store: &rowRecorder{Store: sqliteStore(t)}}), up
}

// TestCacheNeverServesAMaskedPrompt: two prompts that differ only in the
// e-mail the PII guardrail masks read alike once masked; the second must
// not get the first one's answer (with the first one's e-mail restored
// into it), so a masked call is neither read from nor kept in the cache.
func TestCacheNeverServesAMaskedPrompt(t *testing.T) {
	e, up := startCachedGuarded(t)
	key := e.newKey(t, `{}`)
	up.setReply("I will write to <EMAIL_ADDRESS>.")
	for i, mail := range []string{"jane@example.com", "bob@example.org"} {
		resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"gpt-4","messages":[{"role":"user","content":"mail `+mail+`"}]}`)
		if resp.StatusCode != 200 {
			t.Fatalf("chat %d: %d %v", i, resp.StatusCode, out)
		}
		msg := out["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string)
		if msg != "I will write to "+mail+"." {
			t.Errorf("answer %d = %q, want the caller's own e-mail", i, msg)
		}
		if h := resp.Header.Get("x-tollgate-cache-hit"); h != "" {
			t.Errorf("request %d was a cache hit (%q)", i, h)
		}
	}
	if n := len(up.received()); n != 2 {
		t.Errorf("upstream got %d requests, want 2 (no cache for masked prompts)", n)
	}
}

// TestCacheKeyNamesTheGuardrails: an answer kept for a call that ran one
// set of guardrails is not served to a call that runs another (here, a
// post_call filter the first call did not run), and a post_call block is
// never kept.
func TestCacheKeyNamesTheGuardrails(t *testing.T) {
	e, up := startCachedGuarded(t)
	key := e.newKey(t, `{}`)
	up.setReply("a forbidden-answer here")
	plain := `{"model":"gpt-4","messages":[{"role":"user","content":"hello there"}]}`
	filtered := `{"model":"gpt-4","guardrails":["answer-filter"],"messages":[{"role":"user","content":"hello there"}]}`
	if resp, out := e.post(t, "/v1/chat/completions", key, plain); resp.StatusCode != 200 {
		t.Fatalf("plain: %d %v", resp.StatusCode, out)
	}
	// The same prompt asked with the post_call filter: not the cached
	// answer, but the upstream's, which the filter blocks.
	resp, out := e.post(t, "/v1/chat/completions", key, filtered)
	if resp.StatusCode != 400 {
		t.Fatalf("filtered: %d %v (a cached answer bypassed the post_call guardrail?)", resp.StatusCode, out)
	}
	// Asked again: the blocked answer was not kept either.
	if resp, _ := e.post(t, "/v1/chat/completions", key, filtered); resp.StatusCode != 400 {
		t.Fatalf("filtered again: %d", resp.StatusCode)
	}
	if n := len(up.received()); n != 3 {
		t.Errorf("upstream got %d requests, want 3", n)
	}
	// The plain prompt is still a hit.
	if resp, _ := e.post(t, "/v1/chat/completions", key, plain); resp.Header.Get("x-tollgate-cache-hit") != "true" {
		t.Errorf("plain again: not a hit")
	}
}

// TestRequestLogNamesGuardrailsAndCacheHits: the request log line says
// what each guardrail did (names and actions, never the text found) and
// whether the cache answered.
func TestRequestLogNamesGuardrailsAndCacheHits(t *testing.T) {
	up := &recordingUpstream{reply: "ok"}
	ts := httptest.NewServer(up)
	t.Cleanup(ts.Close)
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(guardConfig, "{{UP}}", ts.URL)+"litellm_settings:\n  cache: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	var buf logBuf
	e := serveWith(t, cfg, Options{Store: &rowRecorder{Store: sqliteStore(t)}, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	key := e.newKey(t, `{}`)
	if resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"gpt-4","messages":[{"role":"user","content":"mail jane@example.com"}]}`); resp.StatusCode != 200 {
		t.Fatalf("masked chat: %d %v", resp.StatusCode, out)
	}
	plain := `{"model":"gpt-4","messages":[{"role":"user","content":"hello there"}]}`
	e.post(t, "/v1/chat/completions", key, plain)
	if _, ok := within(30*time.Second, func() bool {
		resp, _ := e.post(t, "/v1/chat/completions", key, plain)
		return resp.Header.Get("x-tollgate-cache-hit") == "true"
	}); !ok {
		t.Fatal("the plain prompt was never a cache hit")
	}
	var masked, hit bool
	if _, ok := within(30*time.Second, func() bool {
		buf.mu.Lock()
		log := buf.buf.String()
		buf.mu.Unlock()
		masked, hit = false, false
		for _, line := range strings.Split(log, "\n") {
			if !strings.Contains(line, `"msg":"request"`) {
				continue
			}
			if strings.Contains(line, "jane@example.com") {
				t.Fatalf("the request line holds the masked text: %s", line)
			}
			masked = masked || strings.Contains(line, `"guardrails":"pii-mask:masked"`)
			hit = hit || strings.Contains(line, `"cache_hit":true`)
		}
		return masked && hit
	}); !ok {
		t.Errorf("request lines: guardrail outcome logged %v, cache hit logged %v", masked, hit)
	}
}
