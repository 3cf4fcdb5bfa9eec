package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

// TestChunkedAnswersKeepTheirBytes: whole answers of unknown length
// (chunked, as gzip-encoded upstream answers arrive) are read through a
// pooled scratch buffer (gateway.readLimited). Concurrent requests, each
// answered with its own prompt, must each get their own answer, and the
// response cache's entries, replayed after many more answers went through
// the scratch, must still be the answers they were stored from.
func TestChunkedAnswersKeepTheirBytes(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &req); err != nil || len(req.Messages) == 0 {
			http.Error(w, "bad request", 400)
			return
		}
		content, _ := json.Marshal(req.Messages[0].Content)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		w.(http.Flusher).Flush() // no Content-Length: chunked
		fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}`, content)
	}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(`model_list:
  - model_name: demo
    litellm_params: {model: openai/gpt-4o, api_base: "`+up.URL+`/v1"}
litellm_settings:
  cache: true
`))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	prompt := func(i int) string { // lengths from 20 bytes to ≈ 40 KB, past the 32 KiB scratch
		return fmt.Sprintf("prompt-%d-", i) + strings.Repeat(string(rune('a'+i%26)), (i*977)%(40<<10))
	}
	ask := func(i int) error {
		body, _ := json.Marshal(map[string]any{"model": "demo", "messages": []map[string]string{{"role": "user", "content": prompt(i)}}})
		resp, b, err := tryPost(ts.URL+"/v1/chat/completions", string(body))
		if err != nil {
			return err
		}
		var out struct {
			Choices []struct{ Message struct{ Content string } }
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &out) != nil || len(out.Choices) != 1 {
			return fmt.Errorf("request %d: %d %.200s", i, resp.StatusCode, b)
		}
		if got := out.Choices[0].Message.Content; got != prompt(i) {
			return fmt.Errorf("request %d answered with another's bytes: %.60q (%d bytes, want %d)", i, got, len(got), len(prompt(i)))
		}
		return nil
	}
	run := func(from, to int) {
		var wg sync.WaitGroup
		errs := make(chan error, to-from)
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := from + g; i < to; i += 4 {
					if err := ask(i); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	run(0, 120)   // misses: every answer read through the scratch
	run(0, 120)   // hits: the cache's entries after 120 more reads
	run(120, 160) // and new misses after the hits
}
