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
	do, stop := startChatServer(b, governed)
	defer stop()
	b.ReportAllocs()
	for b.Loop() {
		do()
	}
}

// startChatServer starts the server of BenchmarkChatHandlerPlain (or
// Governed) and one keep-alive connection to it; do makes one request on
// it and reads its answer, allocating nothing itself.
func startChatServer(tb testing.TB, governed bool) (do func(), stop func()) {
	var cleanup []func()
	stop = func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	ok := false
	defer func() {
		if !ok {
			stop()
		}
	}()
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	cleanup = append(cleanup, up.Close)
	yaml := `model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: "` + up.URL + `", input_cost_per_token: 0.000001, output_cost_per_token: 0.00001}
`
	if governed {
		yaml += "general_settings:\n  master_key: sk-bench-master\n"
	}
	cfg, err := config.Parse("b.yaml", []byte(yaml))
	if err != nil {
		tb.Fatal(err)
	}
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(tb.TempDir(), "tollgate.db"))
	if err != nil {
		tb.Fatal(err)
	}
	cleanup = append(cleanup, func() { st.Close() })
	srv, err := New(cfg, Options{Logger: slog.New(jsonlog.New(io.Discard)), Store: st})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, ln); close(done) }()
	cleanup = append(cleanup, func() { cancel(); <-done })
	// One keep-alive connection to the lean server, written and read by
	// hand so that the client allocates nothing: what is counted is the
	// gateway's (and the mock's, a constant).
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	cleanup = append(cleanup, func() { conn.Close() })
	const body = `{"model":"gpt-4","max_tokens":8,"messages":[{"role":"user","content":"Say hello to the benchmark."}]}`
	auth := ""
	if governed {
		auth = "Authorization: Bearer " + benchKey(tb, srv) + "\r\n"
	}
	req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n" + auth + "Content-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	br := bufio.NewReaderSize(conn, 64<<10)
	skip := make([]byte, 64<<10)
	do = func() {
		if _, err := conn.Write(req); err != nil {
			tb.Fatal(err)
		}
		status, err := br.ReadSlice('\n')
		if err != nil || !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
			tb.Fatalf("status line %q: %v", status, err)
		}
		n := -1
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				tb.Fatal(err)
			}
			if len(line) <= 2 {
				break
			}
			if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
				n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
		}
		if n < 0 {
			tb.Fatal("no Content-Length")
		}
		if _, err := io.ReadFull(br, skip[:n]); err != nil {
			tb.Fatal(err)
		}
	}
	ok = true
	return do, stop
}

// benchKey makes the governed scenario's virtual key on srv.
func benchKey(b testing.TB, srv *Server) string {
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
