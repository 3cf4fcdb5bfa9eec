package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/jsonlog"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// BenchmarkChatHandlerPlain is one request of `tollgate bench`'s plain
// scenario through the running server (its lean HTTP/1.1 server, one
// keep-alive connection): no virtual keys, an OpenAI
// deployment on a loopback mock upstream (the lean upstream client), the
// spend row on SQLite's writer, the request line logged as `serve` logs it
// (jsonlog, to io.Discard). Its allocs/op are the plain path's (plus the
// mock upstream's, a constant).
func BenchmarkChatHandlerPlain(b *testing.B) { benchChatServer(b, false) }

// BenchmarkChatHandlerGoverned is BenchmarkChatHandlerPlain with the
// bench's governed scenario: a master key, and every request made with the
// virtual key `tollgate bench` makes (a budget, rpm, tpm and parallel
// limits that never bind, a user). The difference of the two is
// governance's allocations a request.
func BenchmarkChatHandlerGoverned(b *testing.B) { benchChatServer(b, true) }

func benchChatServer(b *testing.B, governed bool) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	yaml := `model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: "` + up.URL + `", input_cost_per_token: 0.000001, output_cost_per_token: 0.00001}
`
	if governed {
		yaml += "general_settings:\n  master_key: sk-bench-master\n"
	}
	cfg, err := config.Parse("b.yaml", []byte(yaml))
	if err != nil {
		b.Fatal(err)
	}
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "tollgate.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	srv, err := New(cfg, Options{Logger: slog.New(jsonlog.New(io.Discard)), Store: st})
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
	defer func() { stop(); <-done }()
	// One keep-alive connection to the lean server, written and read by
	// hand so that the client allocates nothing: what the benchmark counts
	// is the gateway's (and the mock's, a constant).
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	const body = `{"model":"gpt-4","max_tokens":8,"messages":[{"role":"user","content":"Say hello to the benchmark."}]}`
	auth := ""
	if governed {
		auth = "Authorization: Bearer " + benchKey(b, srv) + "\r\n"
	}
	req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n" + auth + "Content-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	br := bufio.NewReaderSize(conn, 64<<10)
	skip := make([]byte, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		status, err := br.ReadSlice('\n')
		if err != nil || !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
			b.Fatalf("status line %q: %v", status, err)
		}
		n := -1
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) <= 2 {
				break
			}
			if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
				n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
		}
		if n < 0 {
			b.Fatal("no Content-Length")
		}
		if _, err := io.ReadFull(br, skip[:n]); err != nil {
			b.Fatal(err)
		}
	}
}

// benchKey makes the governed scenario's virtual key on srv.
func benchKey(b *testing.B, srv *Server) string {
	req := httptest.NewRequest("POST", "/key/generate", strings.NewReader(`{"max_budget": 1000000, "rpm_limit": 100000000, "tpm_limit": 10000000000, "max_parallel_requests": 100000, "user_id": "bench-user"}`))
	req.Header.Set("Authorization", "Bearer sk-bench-master")
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	var out struct{ Key string }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 || out.Key == "" {
		b.Fatalf("/key/generate: %d %s", rec.Code, rec.Body)
	}
	return out.Key
}
