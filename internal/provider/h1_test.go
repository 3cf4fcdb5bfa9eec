package provider

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawServer serves canned HTTP/1.1 responses on loopback: for each request
// read, answer returns the bytes to write and whether to close after them.
type rawServer struct {
	addr     string
	accepted atomic.Int64
	requests atomic.Int64
}

// serveLoopback listens on loopback and runs serve on each connection
// accepted (in its own goroutine, the connection closed after it); the
// test's cleanup closes the listener and every connection and waits for
// the goroutines. It returns the address.
func serveLoopback(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newRawServer(t *testing.T, answer func(req *http.Request) (string, bool)) *rawServer {
	t.Helper()
	s := &rawServer{}
	s.addr = serveLoopback(t, func(c net.Conn) {
		s.accepted.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			s.requests.Add(1)
			out, closeAfter := answer(req)
			if _, err := io.WriteString(c, out); err != nil || closeAfter {
				return
			}
		}
	})
	return s
}

func (s *rawServer) url(path string) string { return "http://" + s.addr + path }

func netHTTPTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	return tr
}

func (t *h1Transport) idleCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nidle
}

type shape struct {
	name   string
	method string
	resp   string
	close  bool // the server closes after the response
	reuse  bool // the lean path pools the connection afterwards
}

func responseShapes() []shape {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	var chunks strings.Builder
	for i := 0; i < 64; i++ {
		part := big[i*4096 : i*4096+4096-i]
		fmt.Fprintf(&chunks, "%x\r\n%s\r\n", len(part), part)
	}
	long := strings.Repeat("v", 10000)
	return []shape{
		{name: "length", resp: "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello", reuse: true},
		{name: "length0", resp: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", reuse: true},
		{name: "lengthdup", resp: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", reuse: true},
		{name: "chunked", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", reuse: true},
		{name: "chunkedext", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n", reuse: true},
		{name: "trailers", resp: "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: abc\r\nx-other: 1\r\n\r\n", reuse: true},
		{name: "chunkedempty", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", reuse: true},
		{name: "chunkedbig", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks.String() + "0\r\n\r\n", reuse: true},
		{name: "big", resp: "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big, reuse: true},
		{name: "toclose", resp: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close", close: true},
		{name: "toclose-empty", resp: "HTTP/1.1 200 OK\r\n\r\n", close: true},
		{name: "connclose", resp: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi", close: true},
		{name: "http10", resp: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", close: true},
		{name: "204", resp: "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n", reuse: true},
		{name: "304", resp: "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\nContent-Length: 10\r\n\r\n", reuse: true},
		{name: "head", method: http.MethodHead, resp: "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", reuse: true},
		{name: "headchunked", method: http.MethodHead, resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", reuse: true},
		{name: "continue", resp: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", reuse: true},
		{name: "404", resp: "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"error\":\"x\"}", reuse: true},
		{name: "429", resp: "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n", reuse: true},
		{name: "500", resp: "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops", reuse: true},
		{name: "noreason", resp: "HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx", reuse: true},
		{name: "oddreason", resp: "HTTP/1.1 599   Weird  Reason \r\nContent-Length: 1\r\n\r\nx", reuse: true},
		{name: "headers", resp: "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nx-lower-case: v\r\nX-MIXED-case:   spaced value  \r\nX-Empty:\r\nX-Tab:\tt\t\r\nPragma: no-cache\r\nConnection: keep-alive\r\nX-Long: " + long + "\r\nContent-Length: 1\r\n\r\nx", reuse: true},
		{name: "barelf", resp: "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", reuse: true},
	}
}

// TestH1MatchesNetHTTP: for every response shape the lean transport gives
// what net/http's Transport gives, and pools the connection only when its
// framing allows.
func TestH1MatchesNetHTTP(t *testing.T) {
	shapes := responseShapes()
	byPath := map[string]shape{}
	for _, s := range shapes {
		byPath["/"+s.name] = s
	}
	srv := newRawServer(t, func(req *http.Request) (string, bool) {
		s := byPath[req.URL.Path]
		return s.resp, s.close
	})
	std := netHTTPTransport()
	defer std.CloseIdleConnections()
	for _, s := range shapes {
		t.Run(s.name, func(t *testing.T) {
			lean := newH1Transport(netHTTPTransport())
			defer lean.CloseIdleConnections()
			method := s.method
			if method == "" {
				method = http.MethodPost
			}
			get := func(rt http.RoundTripper) (*http.Response, []byte) {
				req, _ := http.NewRequest(method, srv.url("/"+s.name), strings.NewReader(`{"a":1}`))
				if !lean.eligible(req) {
					t.Fatal("request not eligible for the lean path")
				}
				resp, err := rt.RoundTrip(req)
				if err != nil {
					t.Fatalf("%T: %v", rt, err)
				}
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatalf("%T: body: %v", rt, err)
				}
				resp.Body.Close()
				return resp, body
			}
			want, wantBody := get(std)
			got, gotBody := get(lean)
			if !bytes.Equal(gotBody, wantBody) {
				t.Errorf("body %d bytes %.40q, want %d bytes %.40q", len(gotBody), gotBody, len(wantBody), wantBody)
			}
			type view struct {
				Status                 string
				StatusCode             int
				Proto                  string
				ProtoMajor, ProtoMinor int
				Header, Trailer        http.Header
				ContentLength          int64
				TransferEncoding       []string
				Close                  bool
			}
			v := func(r *http.Response) view {
				return view{r.Status, r.StatusCode, r.Proto, r.ProtoMajor, r.ProtoMinor, r.Header, r.Trailer, r.ContentLength, r.TransferEncoding, r.Close}
			}
			if !reflect.DeepEqual(v(got), v(want)) {
				t.Errorf("lean:\n%+v\nnet/http:\n%+v", v(got), v(want))
			}
			if got.Request == nil || got.Request.URL.Path != "/"+s.name {
				t.Errorf("resp.Request = %v", got.Request)
			}
			if n := lean.idleCount(); (n == 1) != s.reuse {
				t.Errorf("idle connections after the exchange: %d, want reuse=%v", n, s.reuse)
			}
			// The next exchange works whether or not the connection was kept.
			if _, body := get(lean); !bytes.Equal(body, wantBody) {
				t.Errorf("second body %.40q, want %.40q", body, wantBody)
			}
		})
	}
}

// TestH1RefusesMalformed: framing in doubt is an error, and the connection
// is closed, never pooled.
func TestH1RefusesMalformed(t *testing.T) {
	huge := "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Big: "+strings.Repeat("b", 1000)+"\r\n", 1100) + "Content-Length: 0\r\n\r\n"
	bad := map[string]string{
		"cl-and-te":   "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"cl-differ":   "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
		"cl-negative": "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"cl-junk":     "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx",
		"cl-list":     "HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
		"te-gzip":     "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"te-twice":    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"te-http10":   "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"status-long": "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
		"status-text": "HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
		"proto":       "HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"proto-2":     "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
		"101":         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
		"space-name":  "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
		"fold":        "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
		"no-colon":    "HTTP/1.1 200 OK\r\nX-A\r\nContent-Length: 0\r\n\r\n",
		"ctl-value":   "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
		"huge-header": huge,
		"many-1xx":    strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 6) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"bad-trailer": "HTTP/1.1 200 OK\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		// Errors found while reading the body.
		"bad-chunk":     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
		"short-length":  "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
		"short-chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
		"bad-trailers":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A b\r\n\r\n",
	}
	for name, resp := range bad {
		t.Run(name, func(t *testing.T) {
			closeAfter := strings.HasPrefix(name, "short-")
			srv := newRawServer(t, func(*http.Request) (string, bool) { return resp, closeAfter })
			lean := newH1Transport(netHTTPTransport())
			defer lean.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodGet, srv.url("/"), nil)
			r, err := lean.RoundTrip(req)
			if err == nil {
				_, err = io.ReadAll(r.Body)
				r.Body.Close()
			}
			if err == nil {
				t.Fatal("no error")
			}
			if n := lean.idleCount(); n != 0 {
				t.Fatalf("%d idle connections after %v", n, err)
			}
		})
	}
}

// TestH1WritesRequestAsNetHTTP: the upstream reads the same request from
// both transports.
func TestH1WritesRequestAsNetHTTP(t *testing.T) {
	type seen struct {
		Method, URI, Host, Proto string
		Header                   http.Header
		ContentLength            int64
		TransferEncoding         []string
		Body                     string
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.RequestURI, r.Host, r.Proto, r.Header, r.ContentLength, r.TransferEncoding, string(b)}
	}))
	defer srv.Close()
	lean := newH1Transport(netHTTPTransport())
	defer lean.CloseIdleConnections()
	std := netHTTPTransport()
	defer std.CloseIdleConnections()
	cases := []func() *http.Request{
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions?a=b%20c", strings.NewReader(`{"model":"m"}`))
			r.Header.Set("Authorization", "Bearer k")
			r.Header.Set("Content-Type", "application/json")
			r.Header.Add("X-Multi", "1")
			r.Header.Add("X-Multi", " 2 ")
			return r
		},
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/models", nil)
			r.Host = "upstream.example:1234"
			r.Header.Set("User-Agent", "tollgate-test")
			return r
		},
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, srv.URL+"/empty", nil)
			r.Close = true
			r.Header["User-Agent"] = nil
			return r
		},
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodPut, srv.URL+"/big", bytes.NewReader(bytes.Repeat([]byte("z"), 100000)))
			return r
		},
	}
	for i, mk := range cases {
		var views [2]seen
		for j, rt := range []http.RoundTripper{std, lean} {
			resp, err := rt.RoundTrip(mk())
			if err != nil {
				t.Fatalf("case %d %T: %v", i, rt, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			views[j] = <-got
		}
		if !reflect.DeepEqual(views[0], views[1]) {
			t.Errorf("case %d: net/http sent\n%+v\nlean sent\n%+v", i, views[0], views[1])
		}
	}
}

// TestH1Eligible: what the lean path leaves to net/http's Transport.
func TestH1Eligible(t *testing.T) {
	lean := newH1Transport(netHTTPTransport())
	mk := func(method, u string, body io.Reader, edit func(*http.Request)) *http.Request {
		r, _ := http.NewRequest(method, u, body)
		if edit != nil {
			edit(r)
		}
		return r
	}
	unknown := io.MultiReader(strings.NewReader("x")) // no length known
	cases := []struct {
		req  *http.Request
		want bool
	}{
		{mk("POST", "http://127.0.0.1:8000/v1/x", strings.NewReader("{}"), nil), true},
		{mk("GET", "http://127.0.0.1:8000/v1/x", nil, nil), true},
		{mk("GET", "http://localhost/v1/x", nil, nil), true},
		{mk("POST", "https://api.example.com/v1/x", strings.NewReader("{}"), nil), false},
		{mk("POST", "http://127.0.0.1:8000/v1/x", unknown, nil), false},
		{mk("POST", "http://u:p@127.0.0.1:8000/v1/x", nil, nil), false},
		{mk("GET", "http://127.0.0.1:8000/ws", nil, func(r *http.Request) { r.Header.Set("Upgrade", "websocket") }), false},
		{mk("GET", "http://127.0.0.1:8000/ws", nil, func(r *http.Request) { r.Header.Set("Connection", "keep-alive, Upgrade") }), false},
		{mk("POST", "http://127.0.0.1:8000/x", strings.NewReader("{}"), func(r *http.Request) { r.Header.Set("Expect", "100-continue") }), false},
		{mk("POST", "http://127.0.0.1:8000/x", strings.NewReader("{}"), func(r *http.Request) { r.TransferEncoding = []string{"chunked"} }), false},
	}
	for i, c := range cases {
		if got := lean.eligible(c.req); got != c.want {
			t.Errorf("case %d %s %s: eligible %v, want %v", i, c.req.Method, c.req.URL, got, c.want)
		}
	}
	// A proxy that applies sends the request through net/http's Transport.
	var proxied atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		io.WriteString(w, "via proxy")
	}))
	defer proxy.Close()
	pu, _ := url.Parse(proxy.URL)
	tr := netHTTPTransport()
	tr.Proxy = http.ProxyURL(pu)
	viaProxy := newH1Transport(tr)
	defer viaProxy.CloseIdleConnections()
	resp, err := viaProxy.RoundTrip(mk("GET", "http://upstream.invalid/v1/models", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "via proxy" || proxied.Load() != 1 {
		t.Fatalf("body %q, proxied %d", b, proxied.Load())
	}
}

// countingServer is an httptest server that counts the connections it
// accepted.
func countingServer(t *testing.T, h http.Handler) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &n
}

// TestH1ReusesConnections: bodies read to their end leave the connection
// for the next request; a body closed early does not.
func TestH1ReusesConnections(t *testing.T) {
	srv, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			for i := 0; i < 3; i++ {
				io.WriteString(w, "part ")
				w.(http.Flusher).Flush()
			}
		case "/big":
			w.Header().Set("Content-Length", "1000000")
			w.Write(bytes.Repeat([]byte("b"), 1000000))
		default:
			io.WriteString(w, `{"ok":true}`)
		}
	}))
	lean := newH1Transport(netHTTPTransport())
	defer lean.CloseIdleConnections()
	do := func(path string, readAll bool) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(`{}`))
		resp, err := lean.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if readAll {
			io.Copy(io.Discard, resp.Body)
		} else {
			resp.Body.Read(make([]byte, 10))
		}
		resp.Body.Close()
	}
	for i := 0; i < 20; i++ {
		do("/", true)
		do("/chunked", true)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("40 sequential requests used %d connections, want 1", n)
	}
	base := runtime.NumGoroutine()
	for i := 0; i < 5; i++ {
		do("/big", false)
	}
	if n := lean.idleCount(); n != 0 {
		t.Fatalf("%d idle connections after early closes", n)
	}
	do("/", true)
	if n := conns.Load(); n != 6 { // the first early close is on the pooled connection
		t.Fatalf("connections %d, want 6: a body closed early must not be reused", n)
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= base }, "goroutines back to %d", base)
	lean.CloseIdleConnections()
	if n := lean.idleCount(); n != 0 {
		t.Fatalf("%d idle connections after CloseIdleConnections", n)
	}
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for "+format, args...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestH1PeekAlive: an idle connection the server closed, or wrote to
// unasked, is seen as dead before a request is written on it.
func TestH1PeekAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lean := newH1Transport(netHTTPTransport())
	for _, serverDoes := range []string{"close", "write"} {
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				accepted <- c
			}
		}()
		pc, _, err := lean.getConn(context.Background(), ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		sc := <-accepted
		if !pc.peekAlive() {
			t.Fatalf("%s: open idle connection seen as dead", serverDoes)
		}
		if serverDoes == "close" {
			sc.Close()
		} else {
			sc.Write([]byte("HTTP/1.1 200 OK\r\n"))
			defer sc.Close()
		}
		waitFor(t, func() bool { return !pc.peekAlive() }, "%s: the connection to be seen as dead", serverDoes)
		pc.nc.Close()
	}
}

// TestH1StaleIdleConnection: a pooled connection the server closed is not
// an error for the next request, with or without the liveness peek (the
// retry on a fresh connection covers the race the peek cannot).
func TestH1StaleIdleConnection(t *testing.T) {
	for _, peek := range []bool{true} {
		srv, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		}))
		lean := newH1Transport(netHTTPTransport())
		do := func(body string) {
			t.Helper()
			req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
			resp, err := lean.RoundTrip(req)
			if err != nil {
				t.Fatalf("peek %v: %v", peek, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != body {
				t.Fatalf("peek %v: body %q, %v", peek, b, err)
			}
		}
		do("one")
		lean.mu.Lock()
		pc := lean.idle[hostKey(srv.Listener.Addr().String())][0]
		lean.mu.Unlock()
		srv.CloseClientConnections()
		waitFor(t, func() bool { return !pc.peekAlive() }, "the server's close to arrive")
		if !peek {
			pc.rc = nil // peekAlive now answers true: the request is written on the stale conn
		}
		do("two")
		if n := conns.Load(); n != 2 {
			t.Fatalf("peek %v: %d connections, want 2", peek, n)
		}
		lean.CloseIdleConnections()
	}
}

// TestH1NoRetryAfterResponseBytes: a connection that breaks after the
// response began is an error, the request is not sent again.
func TestH1NoRetryAfterResponseBytes(t *testing.T) {
	var calls atomic.Int64
	srv := newRawServer(t, func(*http.Request) (string, bool) {
		if calls.Add(1) == 1 {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
		}
		return "", true // read, then closed without a byte of answer
	})
	lean := newH1Transport(netHTTPTransport())
	defer lean.CloseIdleConnections()
	for i := 0; i < 2; i++ {
		req, _ := http.NewRequest(http.MethodPost, srv.url("/"), strings.NewReader("{}"))
		resp, err := lean.RoundTrip(req)
		if i == 0 {
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			continue
		}
		if err == nil {
			t.Fatal("no error for a response cut in its head")
		}
	}
	if n := srv.requests.Load(); n != 2 {
		t.Fatalf("upstream saw %d requests, want 2 (no retry after response bytes)", n)
	}
}

// TestH1CancelPrompt: a context ending while the upstream is silent (in
// the head, or in the body) ends the exchange at once with the context's
// error, and the connection is not pooled.
func TestH1CancelPrompt(t *testing.T) {
	release := make(chan struct{})
	got := make(chan struct{}, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "first")
			w.(http.Flusher).Flush()
		}
		got <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release) // before srv.Close: the handlers return
	lean := newH1Transport(netHTTPTransport())
	defer lean.CloseIdleConnections()
	client := &http.Client{Transport: lean}
	for _, path := range []string{"/head", "/body"} {
		for _, timeout := range []bool{false, true} {
			ctx, cancel := context.WithCancel(context.Background())
			if timeout {
				ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+path, strings.NewReader("{}"))
			start := time.Now()
			go func() {
				<-got
				if !timeout {
					cancel()
				}
			}()
			resp, err := client.Do(req)
			if err == nil {
				var b []byte
				b, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "first" {
					t.Errorf("%s: body before the cancel %q", path, b)
				}
			}
			cancel()
			if !errors.Is(err, ctx.Err()) || ctx.Err() == nil {
				t.Fatalf("%s timeout=%v: err %v, want %v", path, timeout, err, ctx.Err())
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Fatalf("%s: took %s", path, d)
			}
			if n := lean.idleCount(); n != 0 {
				t.Fatalf("%s: %d idle connections after a cancel", path, n)
			}
		}
	}
}

// TestH1Concurrent: many goroutines on one transport each get their own
// answer (run with -race).
func TestH1Concurrent(t *testing.T) {
	srv, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		id := r.Header.Get("X-Id")
		w.Header().Set("X-Id", id)
		switch r.URL.Path {
		case "/chunked":
			w.Write(b)
			w.(http.Flusher).Flush()
			io.WriteString(w, id)
		case "/big":
			w.Write(bytes.Repeat([]byte("x"), 50000))
		default:
			w.Header().Set("Content-Length", strconv.Itoa(len(b)+len(id)))
			w.Write(b)
			io.WriteString(w, id)
		}
	}))
	lean := newH1Transport(netHTTPTransport())
	defer lean.CloseIdleConnections()
	client := &http.Client{Transport: lean}
	const workers, each = 32, 30
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id := fmt.Sprintf("%d-%d", g, i)
				path := []string{"/", "/chunked", "/big"}[i%3]
				body := `{"n":"` + id + `"}`
				req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
				req.Header.Set("X-Id", id)
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				if path == "/big" && i%2 == 0 {
					resp.Body.Read(make([]byte, 100)) // early close
					resp.Body.Close()
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := body + id
				if path == "/big" {
					want = strings.Repeat("x", 50000)
				}
				if err != nil || string(b) != want || resp.Header.Get("X-Id") != id {
					errs <- fmt.Errorf("%s %s: body %.60q header %q err %v", id, path, b, resp.Header.Get("X-Id"), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := conns.Load(); n >= workers*each/2 {
		t.Errorf("%d connections for %d requests: no reuse", n, workers*each)
	}
}
