package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// tinyReadListener hands out real loopback connections whose reads
// return at most max bytes: every byte boundary of a request becomes a
// read boundary on the server's side.
type tinyReadListener struct {
	net.Listener
	max int
}

func (l tinyReadListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tinyReadConn{Conn: c, max: l.max}, nil
}

type tinyReadConn struct {
	net.Conn
	max int
}

func (c *tinyReadConn) Read(p []byte) (int, error) {
	if len(p) > c.max {
		p = p[:c.max]
	}
	return c.Conn.Read(p)
}

// newLeanOn serves h by the lean server (in front of net/http) on ln, as
// newLeanPair does; it returns the address and the lean server.
func newLeanOn(t testing.TB, h http.Handler, ln net.Listener, opts ...func(*http.Server)) (string, *leanServer) {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10,
		IdleTimeout: 2 * time.Minute, ErrorLog: log.New(io.Discard, "", 0),
		BaseContext: func(net.Listener) context.Context { return context.Background() }}
	for _, o := range opts {
		o(srv)
	}
	gate := newConnGate(ln, -1, func() int64 { return -1 }, func(string, string) bool { return true }, func() {})
	srv.ConnState = gate.connState
	ls := newLeanServer(srv, gate, func(p string) bool { return strings.HasPrefix(p, "/v1/") })
	go func() { _ = srv.Serve(ls.handoff) }()
	go func() { _ = ls.Serve() }()
	t.Cleanup(func() { ls.Close(); _ = srv.Close() })
	return ln.Addr().String(), ls
}

// answersAll writes raw to addr, half-closes, and reads every answer
// until the server closes the connection.
func answersAll(t *testing.T, addr, raw string) []leanAnswer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Minute))
	go func() {
		_, _ = io.WriteString(c, raw)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	br := bufio.NewReader(c)
	var out []leanAnswer
	for {
		if _, err := br.Peek(1); err != nil {
			return out
		}
		a := readAnswer(br)
		out = append(out, a)
		if a.Err != "" {
			return out
		}
	}
}

// TestProbeLeanHeadByteAtATime: a 64 KiB head that arrives a byte a read
// (a slow client, or a slowloris that paces its segments) is answered
// by the lean server as net/http answers it, within a ReadHeaderTimeout
// (the product's is 10 s). The lean server rescanned the whole buffer for
// CRLFCRLF and bare LFs at every read: quadratic, ~20 s of CPU for such
// a head, so the header timeout closed the connection unanswered while
// one core burned (net/http: 0.2 s).
func TestProbeLeanHeadByteAtATime(t *testing.T) {
	head := "POST /v1/x HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("a:\r\n", 16000) + "Content-Length: 2\r\n\r\n{}"
	// 3 s: net/http needs ~0.2 s (~0.5 s under -race) for this head, the
	// old lean scan ~8 s on an idle machine.
	const rht = 3 * time.Second
	var want, got []leanAnswer
	for _, lean := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tiny := tinyReadListener{Listener: ln, max: 1}
		if !lean {
			srv := &http.Server{Handler: diffHandler(nil), ReadHeaderTimeout: rht, MaxHeaderBytes: 64 << 10,
				ErrorLog: log.New(io.Discard, "", 0)}
			go func() { _ = srv.Serve(tiny) }()
			t.Cleanup(func() { _ = srv.Close() })
			want = answersAll(t, ln.Addr().String(), head)
			continue
		}
		addr, _ := newLeanOn(t, diffHandler(nil), tiny, func(s *http.Server) { s.ReadHeaderTimeout = rht })
		got = answersAll(t, addr, head)
	}
	if len(want) != 1 || want[0].Status != "200 OK" {
		t.Fatalf("net/http: %+v", want)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("lean %+v, net/http %+v", got, want)
	}
}

// TestProbeLeanRouteCacheBounded: the route cache is keyed by paths the
// client chooses, before any authentication; long ones must not be kept
// (4,096 paths of 60 KiB each pinned 240 MiB for the process's life).
func TestProbeLeanRouteCacheBounded(t *testing.T) {
	p := newLeanPair(t, diffHandler(nil))
	c, err := net.Dial("tcp", p.lean)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	const n = 64
	go func() {
		for i := range n {
			path := fmt.Sprintf("/v1/%d/%s", i, strings.Repeat("p", 30<<10))
			_, _ = io.WriteString(c, leanPost(path, "", ""))
		}
	}()
	br := bufio.NewReader(c)
	for i := range n {
		if a := readAnswer(br); a.Status != "200 OK" {
			t.Fatalf("request %d: %+v", i, a)
		}
	}
	kept := 0
	p.ls.routes.Range(func(k, _ any) bool { kept += len(k.(string)); return true })
	if kept > 64<<10 {
		t.Errorf("the route cache holds %d bytes of client-chosen paths after %d requests", kept, n)
	}
}

// TestProbeLeanEveryReadBoundary: pipelined sequences — lean requests
// with bodies read in part, not at all, or closed early, CRLFs between
// requests, then a request handed to net/http mid keep-alive — read by
// the lean server one byte a read (every byte boundary is a read
// boundary) get the answers net/http alone gives: the bytes handed off
// are exactly the next request's.
func TestProbeLeanEveryReadBoundary(t *testing.T) {
	p := newLeanPair(t, diffHandler(nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tiny, _ := newLeanOn(t, diffHandler(nil), tinyReadListener{Listener: ln, max: 1})
	seqs := []string{
		leanPost("/v1/a?read=2", "", "abcdef") + leanPost("/v1/b", "x-lower: 1\r\n", "{}") + "GET /v1/c HTTP/1.1\r\nHost: a\r\n\r\n",
		leanPost("/v1/a?read=none", "", "abc") + "\r\n" + leanPost("/other", "", "xyz") + leanPost("/v1/d", "", "1"),
		leanPost("/v1/a?read=1&closebody=1", "", "hello") + "POST /v1/e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		leanPost("/v1/a", "", "") + "\r\n\r\n" + leanPost("/v1/b?size=3000", "", "zz") + "POST /v1/x HTTP/1.0\r\nHost: a\r\nContent-Length: 1\r\n\r\nq",
		leanPost("/v1/a", "", "{}") + "POST /v1/b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde" + leanPost("/v1/c", "", ""),
	}
	for i, raw := range seqs {
		want := answersAll(t, p.plain, raw)
		t.Logf("sequence %d: %d answers, last %q", i, len(want), want[len(want)-1].Status)
		if got := answersAll(t, tiny, raw); !reflect.DeepEqual(got, want) {
			t.Errorf("sequence %d a byte a read:\nlean     %+v\nnet/http %+v", i, got, want)
		}
		if got := answersAll(t, p.lean, raw); !reflect.DeepEqual(got, want) {
			t.Errorf("sequence %d:\nlean     %+v\nnet/http %+v", i, got, want)
		}
	}
}

// TestProbeLeanTrailers: trailers as net/http writes them — a declared
// name RFC 9110 forbids in trailers (Content-Type, Host, ...) is not sent
// as one, and a trailer value's CR/LF cannot split the answer.
func TestProbeLeanTrailers(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "Content-Type, X-T, Authorization")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, "hi")
		http.NewResponseController(w).Flush()
		w.Header().Set("X-T", "v\r\nX-Evil: 1")
		w.Header().Set("Authorization", "secret")
		w.Header().Set(http.TrailerPrefix+"X-P", "p")
	})
	p := newLeanPair(t, h)
	trailers := func(addr string) []string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		_, _ = io.WriteString(c, leanPost("/v1/x", "Connection: close\r\n", "{}"))
		b, _ := io.ReadAll(c)
		_, tail, ok := strings.Cut(string(b), "\r\n0\r\n")
		if !ok {
			t.Fatalf("no last chunk in %q", b)
		}
		lines := strings.Split(tail, "\r\n")
		slices.Sort(lines)
		return lines
	}
	want, got := trailers(p.plain), trailers(p.lean)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("trailers: lean %q, net/http %q", got, want)
	}
}

// TestProbeLeanSmugglingShapes: edge forms of Content-Length, Host, the
// target and the version, each alone and after a lean request on the same
// connection, followed by a lean request: the same answers as net/http's
// alone (so both frame the bytes the same way).
func TestProbeLeanSmugglingShapes(t *testing.T) {
	p := newLeanPair(t, diffHandler(nil))
	next := leanPost("/v1/next", "", "{}")
	shapes := []string{
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\nabcdefg",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 000000000000000002\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000000000002\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551617\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length:\t2 \t\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2,2\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 2\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-encoding: identity\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer_Encoding: chunked\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: u@a\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost:\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: \t a:1 \t\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nX-A: \tb\tc\t\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nX-A: \xff\xfe\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/%zz HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/../v1/x?a=%2F&b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/chat%2Fcompletions HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/x?# HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"POST * HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"POST //a/v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/x HTTP/1.10\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/x HTTP/01.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/x http/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"POSt /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"POST\t/v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/x HTTP/1.1 \r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}\r\n\r\n\r\n",
	}
	for i, raw := range shapes {
		for _, first := range []string{"", leanPost("/v1/first", "", "{}")} {
			want := answersAll(t, p.plain, first+raw+next)
			if got := answersAll(t, p.lean, first+raw+next); !reflect.DeepEqual(got, want) {
				t.Errorf("shape %d %q (after a request: %v):\nlean     %+v\nnet/http %+v", i, raw, first != "", got, want)
			}
		}
	}
}

// TestProbeLeanHeaderTimeout: a head that never completes — on a new
// connection, or after a lean request on a keep-alive one (where the idle
// timeout is 2 minutes) — is cut at ReadHeaderTimeout, without an answer,
// as net/http cuts it; trickling bytes does not extend it.
func TestProbeLeanHeaderTimeout(t *testing.T) {
	p := newLeanPair(t, diffHandler(nil), func(s *http.Server) { s.ReadHeaderTimeout = 300 * time.Millisecond })
	for _, first := range []string{"", leanPost("/v1/first", "", "{}")} {
		c, err := net.Dial("tcp", p.lean)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		br := bufio.NewReader(c)
		if first != "" {
			_, _ = io.WriteString(c, first)
			if a := readAnswer(br); a.Status != "200 OK" {
				t.Fatalf("first: %+v", a)
			}
		}
		closed := make(chan error, 1)
		go func() { _, err := br.ReadByte(); closed <- err }()
		tick := time.NewTicker(50 * time.Millisecond)
		head := "POST /v1/x HTTP/1.1\r\nHost: a\r\nX-Slow: " + strings.Repeat("s", 1<<20)
		var got error
	trickle:
		for i := 0; ; i++ {
			select {
			case got = <-closed:
				break trickle
			case <-tick.C:
				_, _ = io.WriteString(c, head[i:i+1])
			}
		}
		tick.Stop()
		if got == nil || isTimeout(got) {
			t.Errorf("after %q: the trickled head got %v, want the connection closed unanswered", first, got)
		}
		c.Close()
	}
}

// TestProbeLeanIdleBufferShrinks: a connection whose request had a large
// head does not keep its grown read buffer (68 KiB) while idle: 200 idle
// keep-alive connections after 60 KiB heads hold well under 6 MiB.
func TestProbeLeanIdleBufferShrinks(t *testing.T) {
	p := newLeanPair(t, diffHandler(nil))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n = 200
	req := leanPost("/v1/x", "X-Big: "+strings.Repeat("b", 60<<10)+"\r\n", "{}")
	for i := range n {
		c, err := net.Dial("tcp", p.lean)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		_, _ = io.WriteString(c, req)
		if a := readAnswer(bufio.NewReader(c)); a.Status != "200 OK" {
			t.Fatalf("request %d: %+v", i, a)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 6<<20 {
		t.Errorf("%d idle connections hold %d KiB of heap", n, grew>>10)
	}
}

// TestProbeLeanEscapedPathRoute: eligibility is decided on the path the
// mux routes by. /v1/chat%2Fcompletions decodes to an inference path but
// the mux matches its escaped form and sends it to the "/" fallback,
// which the lean server leaves to net/http (Server.leanRoute).
func TestProbeLeanEscapedPathRoute(t *testing.T) {
	types := make(chan string, 4)
	mux := http.NewServeMux()
	record := func(w http.ResponseWriter, r *http.Request) { types <- r.Pattern + " " + fmt.Sprintf("%T", w) }
	mux.HandleFunc("POST /v1/chat/completions", record)
	mux.HandleFunc("/", record)
	p := newLeanPair(t, mux)
	p.ls.eligible = func(path string) bool {
		_, pattern := mux.Handler(&http.Request{Method: http.MethodPost, URL: &url.URL{Path: path}, Host: "gateway"})
		return pattern != "/"
	}
	for _, path := range []string{"/v1/chat/completions", "/v1/chat%2Fcompletions"} {
		if a := exchangeRaw(t, p.lean, leanPost(path, "", "{}"), 1); a[0].Status != "200 OK" {
			t.Fatalf("%s: %+v", path, a[0])
		}
		got := <-types
		if lean := strings.HasSuffix(got, "leanResponse"); lean != strings.HasPrefix(got, "POST /v1/chat/completions ") {
			t.Errorf("%s: served as %q: the lean server serves exactly the inference patterns", path, got)
		}
	}
}
