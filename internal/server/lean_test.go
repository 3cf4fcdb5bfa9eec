package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// leanPair serves one handler twice on loopback: by net/http alone
// (plain) and by the lean server in front of net/http (lean), configured
// as serveHTTP configures them.
type leanPair struct {
	plain, lean string
	gate        *connGate
	ls          *leanServer
	srv         *http.Server
}

func newLeanPair(t testing.TB, h http.Handler, opts ...func(*http.Server)) *leanPair {
	t.Helper()
	cfg := func() *http.Server {
		s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10,
			IdleTimeout: 2 * time.Minute, ErrorLog: log.New(io.Discard, "", 0),
			BaseContext: func(net.Listener) context.Context { return context.Background() }}
		for _, o := range opts {
			o(s)
		}
		return s
	}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plain := cfg()
	go func() { _ = plain.Serve(pln) }()
	t.Cleanup(func() { _ = plain.Close() })

	lln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gate := newConnGate(lln, -1, func() int64 { return -1 }, func(string, string) bool { return true }, func() {})
	srv := cfg()
	srv.ConnState = gate.connState
	ls := newLeanServer(srv, gate, func(p string) bool { return strings.HasPrefix(p, "/v1/") })
	go func() { _ = srv.Serve(ls.handoff) }()
	go func() { _ = ls.Serve() }()
	t.Cleanup(func() { ls.Close(); _ = srv.Close() })
	return &leanPair{plain: pln.Addr().String(), lean: lln.Addr().String(), gate: gate, ls: ls, srv: srv}
}

// leanSeen is what a handler saw of a request.
type leanSeen struct {
	Method, URL, RequestURI, Proto, Host, Path, RawQuery string
	ProtoMajor, ProtoMinor                               int
	Header                                               http.Header
	ContentLength                                        int64
	Close                                                bool
	Body                                                 string
	NoBody                                               bool
}

// diffHandler answers by path, and reports what it saw on got.
func diffHandler(got chan<- leanSeen) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := leanSeen{Method: r.Method, URL: r.URL.String(), RequestURI: r.RequestURI, Proto: r.Proto, Host: r.Host,
			Path: r.URL.Path, RawQuery: r.URL.RawQuery, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
			Header: r.Header.Clone(), ContentLength: r.ContentLength, Close: r.Close, NoBody: r.Body == http.NoBody}
		q := r.URL.Query()
		switch {
		case q.Get("read") == "none":
		case q.Get("read") != "":
			n, _ := strconv.Atoi(q.Get("read"))
			b := make([]byte, n)
			k, _ := io.ReadFull(r.Body, b)
			s.Body = string(b[:k])
		default:
			b, _ := io.ReadAll(r.Body)
			s.Body = string(b)
		}
		if q.Get("closebody") != "" {
			_ = r.Body.Close()
		}
		if got != nil {
			got <- s
		}
		h := w.Header()
		h.Set("X-Seen-Len", strconv.Itoa(len(s.Body)))
		if v := q.Get("ct"); v != "" {
			h.Set("Content-Type", v)
		}
		if q.Get("conn") == "close" {
			h.Set("Connection", "close")
		}
		if q.Get("inject") != "" {
			h.Set("X-Inject", "a\r\nX-Evil: 1")
			h["Bad Name"] = []string{"x"}
			h["X-Trim"] = []string{"  padded \t"}
		}
		if v := q.Get("cl"); v != "" {
			h.Set("Content-Length", v)
		}
		code := 200
		if v := q.Get("status"); v != "" {
			code, _ = strconv.Atoi(v)
		}
		if q.Get("early") != "" {
			h.Set("Early", "1")
			w.WriteHeader(103)
		}
		w.WriteHeader(code)
		h.Set("X-After-WriteHeader", "not sent") // the snapshot is at WriteHeader
		w.WriteHeader(500)                       // superfluous: ignored
		n := 0
		if v := q.Get("size"); v != "" {
			n, _ = strconv.Atoi(v)
		}
		chunk := q.Get("chunk") != ""
		for n > 0 {
			k := min(n, 700)
			_, _ = w.Write(bytes.Repeat([]byte{'a' + byte(n%26)}, k))
			if chunk {
				_ = http.NewResponseController(w).Flush()
			}
			n -= k
		}
		if q.Get("size") == "" {
			_, _ = fmt.Fprintf(w, `{"path":%q,"len":%d}`, r.URL.Path, len(s.Body))
		}
	})
}

// leanAnswer is a response as a client sees it, minus Date.
type leanAnswer struct {
	Status           string
	Header           http.Header
	Body             string
	ContentLength    int64
	TransferEncoding []string
	Close            bool
	Err              string
}

func readAnswer(br *bufio.Reader) leanAnswer {
	resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
	if err != nil {
		return leanAnswer{Err: err.Error()}
	}
	b, err := io.ReadAll(resp.Body)
	a := leanAnswer{Status: resp.Status, Header: resp.Header, Body: string(b), ContentLength: resp.ContentLength,
		TransferEncoding: resp.TransferEncoding, Close: resp.Close}
	if err != nil {
		a.Err = err.Error()
	}
	delete(a.Header, "Date")
	return a
}

// exchangeRaw writes raw on a new connection to addr and reads n answers.
func exchangeRaw(t *testing.T, addr, raw string, n int) []leanAnswer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []leanAnswer
	for range n {
		out = append(out, readAnswer(br))
	}
	return out
}

// leanAskOnce dials addr, sends one POST of {} to path and reads the
// answer; the connection stays open (closed when the test ends) and its
// reader is returned for what comes after.
func leanAskOnce(t *testing.T, addr, path string) (*bufio.Reader, leanAnswer) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	_, _ = io.WriteString(c, leanPost(path, "", "{}"))
	return br, readAnswer(br)
}

func leanPost(path string, headers string, body string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: gw.test\r\n" + headers + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// TestLeanDifferential: for requests in the lean subset, the handler sees
// the same Request through the lean server as through net/http alone, and
// the client gets the same answers (status, headers as a set but Date,
// body, framing, keep-alive), each sent twice on one connection.
func TestLeanDifferential(t *testing.T) {
	got := make(chan leanSeen, 16)
	p := newLeanPair(t, diffHandler(got))
	big := strings.Repeat("x", 300<<10)
	cases := []struct {
		name, raw string
		n         int
	}{
		{"chat", leanPost("/v1/chat/completions", "Content-Type: application/json\r\nAuthorization: Bearer sk-1\r\n", `{"model":"m"}`), 2},
		{"lowercase and repeated headers", leanPost("/v1/x?a=1&b=%20", "content-type: application/json\r\nx-stainless-os: Linux\r\nX-Multi: 1\r\nx-multi: 2\r\nX-Custom-Thing:  spaced \t\r\nAccept-Encoding: gzip\r\n", `{}`), 2},
		{"empty body", leanPost("/v1/embeddings", "", ""), 2},
		{"percent path", leanPost("/v1/a%2Fb/c:gen@x", "", "{}"), 2},
		{"unread body", leanPost("/v1/x?read=none", "", strings.Repeat("y", 100<<10)), 2},
		{"partly read body", leanPost("/v1/x?read=10", "", strings.Repeat("z", 50<<10)), 2},
		{"unread body past 256 KiB", leanPost("/v1/x?read=none", "", big), 1},
		{"body closed early", leanPost("/v1/x?read=5&closebody=1", "", strings.Repeat("w", 1000)), 2},
		{"connection close asked", leanPost("/v1/x", "Connection: close\r\n", "{}"), 1},
		{"connection close answered", leanPost("/v1/x?conn=close", "", "{}"), 1},
		{"keep-alive asked", leanPost("/v1/x", "Connection: Keep-Alive\r\n", "{}"), 2},
		{"sniffed", leanPost("/v1/x?size=100", "", "{}"), 2},
		{"typed", leanPost("/v1/x?ct=text/event-stream&size=3000", "", "{}"), 2},
		{"exactly 2048", leanPost("/v1/x?size=2048", "", "{}"), 2},
		{"2049 chunked", leanPost("/v1/x?size=2049", "", "{}"), 2},
		{"large", leanPost("/v1/x?size=100000", "", "{}"), 2},
		{"flushed", leanPost("/v1/x?size=3000&chunk=1", "", "{}"), 2},
		{"handler content-length", leanPost("/v1/x?size=10&cl=10", "", "{}"), 2},
		{"handler content-length short", leanPost("/v1/x?size=5&cl=10", "", "{}"), 1},
		{"no content", leanPost("/v1/x?status=204&size=0", "", "{}"), 2},
		{"not modified", leanPost("/v1/x?status=304&ct=text/plain", "", "{}"), 2},
		{"teapot", leanPost("/v1/x?status=418", "", "{}"), 2},
		{"odd status", leanPost("/v1/x?status=599", "", "{}"), 2},
		{"early hints", leanPost("/v1/x?early=1", "", "{}"), 2},
		{"header injection", leanPost("/v1/x?inject=1", "", "{}"), 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			if tc.n == 2 {
				raw += tc.raw
			}
			want := exchangeRaw(t, p.plain, raw, tc.n)
			wantSeen := drain(got, tc.n)
			gotA := exchangeRaw(t, p.lean, raw, tc.n)
			gotSeen := drain(got, tc.n)
			if !reflect.DeepEqual(gotSeen, wantSeen) {
				t.Errorf("the handler saw\n%+v\nthrough the lean server, and through net/http\n%+v", gotSeen, wantSeen)
			}
			for i := range want {
				if !reflect.DeepEqual(gotA[i], want[i]) {
					t.Errorf("leanAnswer %d: lean\n%+v\nnet/http\n%+v", i, gotA[i], want[i])
				}
			}
		})
	}
}

func drain(ch chan leanSeen, n int) []leanSeen {
	var out []leanSeen
	for range n {
		select {
		case s := <-ch:
			out = append(out, s)
		case <-time.After(time.Minute):
			return out
		}
	}
	return out
}

// rawAll writes raw to addr (after first, a valid request whose leanAnswer is
// read and dropped) and returns every byte answered until the server
// closes the connection.
func rawAll(t *testing.T, addr, first, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	if first != "" {
		_, _ = io.WriteString(c, first)
		if a := readAnswer(br); a.Status != "200 OK" {
			t.Fatalf("the first request: %+v", a)
		}
	}
	_, _ = io.WriteString(c, raw)
	if cw, ok := c.(*net.TCPConn); ok {
		_ = cw.CloseWrite()
	}
	b, _ := io.ReadAll(br)
	// Date varies: compare without it.
	var lines []string
	for _, l := range strings.Split(string(b), "\r\n") {
		if !strings.HasPrefix(l, "Date: ") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\r\n")
}

// malformed are requests outside the lean subset: each is handed to
// net/http, which must leanAnswer it exactly as it does alone.
var malformed = []struct{ name, raw string }{
	{"CL and TE", "POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
	{"two CLs", "POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"},
	{"two equal CLs", "POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}"},
	{"CL with sign", "POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\n{}"},
	{"CL with inner space", "POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n{}"},
	{"CL hex", "POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x2\r\n\r\n{}"},
	{"obs-fold", "POST /v1/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\nContent-Length: 2\r\n\r\n{}"},
	{"space before colon", "POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length : 2\r\n\r\n{}"},
	{"bare LF", "POST /v1/x HTTP/1.1\nHost: a\nContent-Length: 2\n\n{}"},
	{"bare LF in a header", "POST /v1/x HTTP/1.1\r\nHost: a\r\nX-A: b\nContent-Length: 2\r\n\r\n{}"},
	{"bare CR", "POST /v1/x HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\nContent-Length: 2\r\n\r\n{}"},
	{"NUL", "POST /v1/x HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\nContent-Length: 2\r\n\r\n{}"},
	{"absolute-form", "POST http://a/v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"},
	{"HTTP/1.0", "POST /v1/x HTTP/1.0\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"},
	{"lowercase method", "post /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"},
	{"GET", "GET /v1/x HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"other route", "POST /other HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"},
	{"no host", "POST /v1/x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"},
	{"two hosts", "POST /v1/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}"},
	{"no CL", "POST /v1/x HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"huge head", "POST /v1/x HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 70<<10) + "\r\nContent-Length: 2\r\n\r\n{}"},
	{"expect", "POST /v1/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}"},
	{"upgrade h2c", "POST /v1/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 2\r\n\r\n{}"},
	{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
	{"chunked", "POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"},
	{"truncated head", "POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-"},
	{"bad host", "POST /v1/x HTTP/1.1\r\nHost: a b\r\nContent-Length: 2\r\n\r\n{}"},
	{"fragment", "POST /v1/x#f HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"},
	{"space in target", "POST /v1/x y HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"},
	{"connection other", "POST /v1/x HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nContent-Length: 2\r\n\r\n{}"},
}

// TestLeanHandsOffMalformed: every request outside the subset is answered
// byte for byte (Date aside) as net/http alone answers it, as the first
// request of a connection and after a lean request on it.
func TestLeanHandsOffMalformed(t *testing.T) {
	p := newLeanPair(t, diffHandler(nil))
	first := leanPost("/v1/chat/completions", "", "{}")
	for _, tc := range malformed {
		for _, mid := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/mid=%v", tc.name, mid), func(t *testing.T) {
				f := ""
				if mid {
					f = first
				}
				want := rawAll(t, p.plain, f, tc.raw)
				got := rawAll(t, p.lean, f, tc.raw)
				if mid && tc.name == "huge head" {
					// net/http alone does not apply MaxHeaderBytes to a
					// head read on a reused connection (its read limit is
					// reset before a peek that already buffered the
					// head): handed off, the head is a new connection's
					// first and gets the 431 the limit promises.
					want = rawAll(t, p.plain, "", tc.raw)
				}
				if got != want {
					t.Errorf("lean:\n%q\nnet/http:\n%q", got, want)
				}
			})
		}
	}
}

// TestLeanServesTheSubset: a keep-alive client's POSTs are served by the
// lean server (not handed off: the handler's ResponseWriter is the lean
// one) on one connection, counted once by the gate.
func TestLeanServesTheSubset(t *testing.T) {
	types := make(chan string, 10)
	p := newLeanPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		types <- fmt.Sprintf("%T", w)
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	reused := 0
	for i := range 5 {
		trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
			if ci.Reused {
				reused++
			}
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "POST", "http://"+p.lean+"/v1/chat/completions", strings.NewReader(`{"i":`+strconv.Itoa(i)+`}`))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok" {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
		if ty := <-types; ty != "*server.leanResponse" {
			t.Fatalf("request %d served by %s, not the lean server", i, ty)
		}
	}
	if reused != 4 {
		t.Errorf("%d of 4 requests reused the connection", reused)
	}
	if n, _ := p.gate.Open(); n != 1 {
		t.Errorf("the gate counts %d connections open, want 1", n)
	}
}

// TestLeanPipelined: requests sent in one write are answered in order,
// and a request handed off after lean ones is answered by net/http on the
// same connection.
func TestLeanPipelined(t *testing.T) {
	got := make(chan leanSeen, 8)
	p := newLeanPair(t, diffHandler(got))
	raw := leanPost("/v1/a", "", `{"n":1}`) + leanPost("/v1/b?read=none", "", strings.Repeat("q", 5000)) + leanPost("/v1/c", "", `{"n":3}`) +
		"GET /v1/d HTTP/1.1\r\nHost: a\r\n\r\n"
	answers := exchangeRaw(t, p.lean, raw, 4)
	want := exchangeRaw(t, p.plain, raw, 4)
	for i := range answers {
		if !reflect.DeepEqual(answers[i], want[i]) {
			t.Errorf("leanAnswer %d: lean %+v net/http %+v", i, answers[i], want[i])
		}
	}
	s := drain(got, 8)
	if len(s) != 8 || s[0].Path != "/v1/a" || s[1].Path != "/v1/b" || s[2].Path != "/v1/c" || s[3].Method != "GET" {
		t.Errorf("the handler saw %+v", s)
	}
}

// TestLeanStreamFlushes: a flushed write reaches the client while the
// handler still runs, chunked.
func TestLeanStreamFlushes(t *testing.T) {
	release := make(chan struct{})
	p := newLeanPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("flush: %v", err)
		}
		select {
		case <-release:
		case <-time.After(time.Minute):
		}
		_, _ = io.WriteString(w, "data: 2\n\n")
	}))
	c, err := net.Dial("tcp", p.lean)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	_, _ = io.WriteString(c, leanPost("/v1/chat/completions", "", "{}"))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: 1\n" {
		t.Fatalf("%q %v", line, err)
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("framing %v", resp.TransferEncoding)
	}
	close(release)
}

// TestLeanClientGone: the request's context is cancelled when the client
// closes its connection, while the handler waits (mid-request) and after
// it has flushed part of a stream (mid-stream).
func TestLeanClientGone(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			started, cancelled := make(chan struct{}), make(chan error, 1)
			p := newLeanPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				if stream {
					_, _ = io.WriteString(w, "data: 1\n\n")
					_ = http.NewResponseController(w).Flush()
				}
				close(started)
				select {
				case <-r.Context().Done():
					cancelled <- context.Cause(r.Context())
				case <-time.After(time.Minute):
					cancelled <- errors.New("not cancelled within a minute")
				}
			}))
			c, err := net.Dial("tcp", p.lean)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(c, leanPost("/v1/chat/completions", "", `{"model":"m"}`))
			<-started
			c.Close()
			if err := <-cancelled; !errors.Is(err, context.Canceled) {
				t.Fatalf("the handler's context: %v", err)
			}
		})
	}
}

// TestLeanShutdown: a graceful shutdown closes idle lean connections at
// once, lets a request in flight finish (its leanAnswer says Connection:
// close), and returns once it has.
func TestLeanShutdown(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	p := newLeanPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/v1/slow" {
			close(started)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	}))
	ibr, a := leanAskOnce(t, p.lean, "/v1/fast")
	if a.Body != "done" {
		t.Fatalf("%+v", a)
	}
	busy, err := net.Dial("tcp", p.lean)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_ = busy.SetDeadline(time.Now().Add(time.Minute))
	_, _ = io.WriteString(busy, leanPost("/v1/slow", "", "{}"))
	<-started
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() { done <- p.ls.Shutdown(ctx) }()
	if _, err := ibr.ReadByte(); err != io.EOF {
		t.Fatalf("the idle connection: %v, want EOF", err)
	}
	select {
	case err := <-done:
		t.Fatalf("shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	a = readAnswer(bufio.NewReader(busy))
	if a.Body != "done" || !a.Close {
		t.Fatalf("the request in flight: %+v", a)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestLeanIdleTimeout: a lean connection idle past IdleTimeout is closed.
func TestLeanIdleTimeout(t *testing.T) {
	p := newLeanPair(t, diffHandler(nil), func(s *http.Server) { s.IdleTimeout = 50 * time.Millisecond })
	br, a := leanAskOnce(t, p.lean, "/v1/x")
	if a.Status != "200 OK" {
		t.Fatalf("%+v", a)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the idle timeout: %v, want EOF", err)
	}
}

// statuses is the status codes of the answers in b, in order.
func statuses(b []byte) []string {
	var out []string
	br := bufio.NewReader(bytes.NewReader(b))
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
		if err != nil {
			return out
		}
		out = append(out, resp.Status)
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return append(out, "cut")
		}
	}
}

func sendAll(t *testing.T, addr string, raw []byte) []byte {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	_, _ = c.Write(raw)
	_ = c.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(c)
	return b
}

// FuzzLeanVsNetHTTP: any bytes get the same statuses, in the same order,
// from the lean server (with its hand-off) as from net/http alone.
func FuzzLeanVsNetHTTP(f *testing.F) {
	for _, tc := range malformed {
		f.Add([]byte(tc.raw))
	}
	f.Add([]byte(leanPost("/v1/chat/completions", "", "{}") + leanPost("/v1/x?read=none", "", "abc")))
	f.Add([]byte(leanPost("/v1/x", "X-A: 1\r\n", "{}") + "POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n"))
	p := newLeanPair(f, diffHandler(nil))
	f.Fuzz(func(t *testing.T, raw []byte) {
		want := statuses(sendAll(t, p.plain, raw))
		got := statuses(sendAll(t, p.lean, raw))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("lean %v, net/http %v for %q", got, want, raw)
		}
	})
}
