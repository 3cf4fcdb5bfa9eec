package server

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

// TestCacheEntryKeepsNoUpstreamHead: an answer kept in the local cache
// keeps its Content-Type, a few bytes the cache counts; it must not keep
// the rest of the upstream's header block alive with it.
func TestCacheEntryKeepsNoUpstreamHead(t *testing.T) {
	pad := strings.Repeat("p", 256<<10)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Padding", pad)
		io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`)
	}))
	t.Cleanup(up.Close)
	cfg, err := config.Parse("t.yaml", []byte(`
model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o-mini, api_base: "`+up.URL+`", input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
general_settings:
  master_key: sk-1234
`+cacheOn))
	if err != nil {
		t.Fatal(err)
	}
	e := serveWith(t, cfg, Options{Store: sqliteStore(t)})
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	const n = 24
	ask := func(i int) {
		resp, _ := storing(t, e, "/v1/chat/completions", "sk-1234", fmt.Sprintf(`{"model":"gpt-4","messages":[{"role":"user","content":"question %d"}]}`, i))
		if resp.StatusCode != 200 || isHit(resp) {
			t.Fatalf("answer %d: %d hit=%v", i, resp.StatusCode, isHit(resp))
		}
	}
	ask(-1) // warm up: connections, pools
	before := heap()
	for i := range n {
		ask(i)
	}
	after := heap()
	grew := int64(after) - int64(before)
	t.Logf("heap grew %d KiB over %d cached answers (their heads: %d KiB)", grew>>10, n, n*len(pad)>>10)
	if grew > int64(n*len(pad)/4) {
		t.Fatalf("heap grew %d KiB for %d cached answers whose counted size is a few KiB: each keeps its upstream head (%d KiB) alive", grew>>10, n, len(pad)>>10)
	}
}
