package provider

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// byteSink accepts connections on loopback and records every byte received.
type byteSink struct {
	addr string
	mu   sync.Mutex
	got  bytes.Buffer
}

func newByteSink(t *testing.T) *byteSink {
	t.Helper()
	s := &byteSink{}
	s.addr = serveLoopback(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			s.mu.Lock()
			s.got.Write(buf[:n])
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	})
	return s
}

func (s *byteSink) bytes() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got.String()
}

// TestProbeH1RefusesHeaderInjection: header values, names, Host and URI
// carrying CR/LF are refused before a byte of the request reaches the
// upstream, as net/http refuses them.
func TestProbeH1RefusesHeaderInjection(t *testing.T) {
	sink := newByteSink(t)
	lean := newH1Transport(netHTTPTransport())
	defer lean.CloseIdleConnections()
	inject := "x\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: evil\r\n\r\n"
	cases := map[string]func(r *http.Request){
		"value":     func(r *http.Request) { r.Header["X-A"] = []string{inject} },
		"lf":        func(r *http.Request) { r.Header["X-A"] = []string{"a\nGET /smuggled"} },
		"second":    func(r *http.Request) { r.Header["X-A"] = []string{"ok", inject} },
		"name":      func(r *http.Request) { r.Header["X-A\r\nX-B"] = []string{"1"} },
		"useragent": func(r *http.Request) { r.Header["User-Agent"] = []string{inject} },
		"host":      func(r *http.Request) { r.Host = "a\r\nX: y" },
	}
	for name, mod := range cases {
		req, _ := http.NewRequest(http.MethodPost, "http://"+sink.addr+"/v1", strings.NewReader("{}"))
		mod(req)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := lean.RoundTrip(req.WithContext(ctx))
		cancel()
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: sent", name)
		}
	}
	if b := sink.bytes(); strings.Contains(b, "smuggled") || strings.Contains(b, "\r\nX: y") {
		t.Fatalf("injected bytes reached the upstream: %q", b)
	}
}

// TestProbeH1LyingContentLength: a body shorter or longer than its
// ContentLength is an error and the upstream never receives a request whose
// framing is complete; the connection is not pooled.
func TestProbeH1LyingContentLength(t *testing.T) {
	srv, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, string(rune('0'+len(b)%10)))
	}))
	lean := newH1Transport(netHTTPTransport())
	defer lean.CloseIdleConnections()
	for _, size := range []int{10, 10000} {
		for _, delta := range []int{-3, +3} {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", bytes.NewReader(bytes.Repeat([]byte("a"), size+delta)))
			req.ContentLength = int64(size)
			req.GetBody = nil
			resp, err := lean.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Errorf("size %d delta %d: no error", size, delta)
			}
			if n := lean.idleCount(); n != 0 {
				t.Errorf("size %d delta %d: %d idle", size, delta, n)
			}
		}
	}
	// And an honest request after them works on a fresh connection.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader("abc"))
	resp, err := lean.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "3" {
		t.Fatalf("body %q", b)
	}
}

// TestProbeH1CancelAfterEndThenReuse: a context ended after a response was
// read to its end (with or without body) leaves no deadline on the pooled
// connection: the next request on it succeeds.
func TestProbeH1CancelAfterEndThenReuse(t *testing.T) {
	srv, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/chunked":
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			io.WriteString(w, "b")
		default:
			io.WriteString(w, "ok")
		}
	}))
	lean := newH1Transport(netHTTPTransport())
	defer lean.CloseIdleConnections()
	for i := 0; i < 30; i++ {
		for _, p := range []string{"/empty", "/chunked", "/"} {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+p, strings.NewReader("{}"))
			resp, err := lean.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s #%d: %v", p, i, err)
			}
			if _, err := io.ReadAll(resp.Body); err != nil {
				t.Fatalf("%s #%d: body %v", p, i, err)
			}
			cancel() // after the end: must not touch the pooled connection
			resp.Body.Close()
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
	// A context that ends while the body is open never leaves its
	// connection in the pool, and the next request still succeeds.
	for i := 0; i < 30; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/chunked", strings.NewReader("{}"))
		resp, err := lean.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		go cancel()
		_, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr != nil && !errors.Is(rerr, context.Canceled) {
			t.Fatalf("#%d: body error %v does not wrap context.Canceled", i, rerr)
		}
		req2, _ := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader("{}"))
		resp2, err := lean.RoundTrip(req2)
		if err != nil {
			t.Fatalf("#%d: request after a cancel: %v", i, err)
		}
		io.ReadAll(resp2.Body)
		resp2.Body.Close()
	}
}
