package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// BenchmarkChatHandler is one inference request through the whole handler
// (authentication, limits, budget hold, forward to the in-process demo
// upstream, settle, spend row, response headers) with a virtual key, as a
// whole answer and as a stream. Its allocations are the hot path's.
func BenchmarkChatHandler(b *testing.B) { benchChat(b, "") }

// BenchmarkChatHandlerTraced is BenchmarkChatHandler with every request
// traced (general_settings.otel) to a loopback OTLP/HTTP collector that
// discards what it gets: the cost of tracing on.
func BenchmarkChatHandlerTraced(b *testing.B) {
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer col.Close()
	benchChat(b, "  otel: {endpoint: \""+col.URL+"\"}\n")
}

// BenchmarkChatHandlerContent is BenchmarkChatHandler with the messages
// and answers kept on the spend rows, masked: what content logging costs.
func BenchmarkChatHandlerContent(b *testing.B) {
	benchChat(b, "  store_prompts_in_spend_logs: true\n")
}

// benchGateway serves the demo model behind a master key, with extra YAML
// appended after general_settings' master_key line (a running server, its
// spend writer on SQLite, stopped when the benchmark ends), and returns its
// handler and a key whose budget never binds.
func benchGateway(b *testing.B, extra string) (http.Handler, string) {
	b.Helper()
	h := benchServe(b, "model_list:\n  - model_name: demo\n    litellm_params: {model: demo/demo}\n    model_info: {id: demo}\ngeneral_settings:\n  master_key: sk-1234\n"+extra)
	req := httptest.NewRequest("POST", "/key/generate", strings.NewReader(`{"max_budget": 1000000}`))
	req.Header.Set("Authorization", "Bearer sk-1234")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out struct{ Key string }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 {
		b.Fatalf("/key/generate: %d %s", rec.Code, rec.Body)
	}
	return h, out.Key
}

// benchServe runs a server of the config text on SQLite (stopped when
// the benchmark ends) and returns its handler.
func benchServe(b *testing.B, yaml string) http.Handler {
	b.Helper()
	cfg, err := config.Parse("b.yaml", []byte(yaml))
	if err != nil {
		b.Fatal(err)
	}
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "tollgate.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	srv, err := New(cfg, Options{Logger: testLogger, Store: st})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, ln); close(done) }()
	b.Cleanup(func() { stop(); <-done })
	return srv.Handler()
}

// benchChat runs the chat benchmark with general settings added.
func benchChat(b *testing.B, general string) {
	h, key := benchGateway(b, general)
	for _, tt := range []struct{ name, body string }{
		{"whole", `{"model":"demo","messages":[{"role":"user","content":"hello there"}]}`},
		{"stream", `{"model":"demo","stream":true,"messages":[{"role":"user","content":"hello there"}]}`},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(tt.body))
				req.Header.Set("Authorization", "Bearer "+key)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
