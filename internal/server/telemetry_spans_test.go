package server

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// TestLangfuseOneSpanPerCallEveryEnding: Langfuse is a LiteLLM
// callback; with callbacks: ["langfuse"] and content logging on, every way
// a call can end (client gone mid-stream, a shutdown whose timeout cuts a
// stream, retry, fallback, upstream error) gives Langfuse exactly one
// request span for the call.
func TestLangfuseOneSpanPerCallEveryEnding(t *testing.T) {
	cases := map[string]func(t *testing.T, url, key string, stop func()){
		"upstream 400":       func(t *testing.T, url, key string, _ func()) { moneyChat(t, url, key, "bad", false) },
		"retry then success": func(t *testing.T, url, key string, _ func()) { moneyChat(t, url, key, "flaky", true) },
		"fallback":           func(t *testing.T, url, key string, _ func()) { moneyChat(t, url, key, "down", true) },
		"timeout":            func(t *testing.T, url, key string, _ func()) { moneyChat(t, url, key, "hang", false) },
		"client gone mid-stream": func(t *testing.T, url, key string, _ func()) {
			body, _ := readChunks(t, url, key, 3)
			body.Close()
		},
		"shutdown mid-stream": func(t *testing.T, url, key string, stop func()) {
			body, done := readChunks(t, url, key, 3)
			defer body.Close()
			stop()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Error("the stream did not end within 60 s of the shutdown")
			}
		},
	}
	for name, how := range cases {
		t.Run(name, func(t *testing.T) {
			lf := &otlpSink{}
			lfs := httptest.NewServer(lf)
			defer lfs.Close()
			t.Setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-1")
			t.Setenv("LANGFUSE_SECRET_KEY", "sk-lf-2")
			t.Setenv("LANGFUSE_HOST", lfs.URL)
			up := httptest.NewServer(&moneyUpstream{})
			defer up.Close()
			yaml := strings.ReplaceAll(moneyConfig, "{{UP}}", up.URL) + "  store_prompts_in_spend_logs: true\nlitellm_settings:\n  callbacks: [\"langfuse\"]\n"
			cfg, err := config.Parse("m.yaml", []byte(yaml))
			if err != nil {
				t.Fatal(err)
			}
			e := serveWith(t, cfg, Options{Store: sqliteStore(t), ShutdownTimeout: 300 * time.Millisecond})
			_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
			key, _ := out["key"].(string)
			stop := func() { _ = e.stop() }
			how(t, e.url, key, stop)
			stop()
			var calls []string
			for _, s := range requestSpans(lf) {
				if attrString(s, "http.request.method") != "" || attrString(s, "tollgate.call_id") != "" {
					calls = append(calls, attrString(s, "tollgate.call_id"))
				}
			}
			// The /key/generate request is not traced; the one call is.
			if len(calls) != 1 {
				t.Errorf("%d request spans at Langfuse for one call (call ids %v), want 1", len(calls), calls)
			}
		})
	}
}
