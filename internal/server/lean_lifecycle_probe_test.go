package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// The lean server's lifecycle, concurrency and money: probes of the
// review of branch h1srv (docs/performance.md, "Review, lifecycle").

// leanConnOf is the lean connection behind w (nil when net/http serves it).
func leanConnOf(w http.ResponseWriter) *leanConn {
	if lr, ok := w.(*leanResponse); ok {
		return lr.c
	}
	return nil
}

// untilWatch waits until c's client-gone watch reads the connection
// (watching) and, with got, until it has read a byte.
func untilWatch(c *leanConn, got bool) bool {
	_, ok := within(time.Minute, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.watching && (!got || c.watchGot)
	})
	return ok
}

// lifecycleHandler: ?watch waits until the client-gone watch runs;
// ?wait blocks until the request's context ends; ?abort and ?boom panic
// after a flushed byte; ?noread answers without reading the body.
func lifecycleHandler(t *testing.T, cancelled chan<- error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if !q.Has("noread") {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		switch {
		case q.Has("watch"):
			if c := leanConnOf(w); c != nil && !untilWatch(c, false) {
				t.Errorf("the watch never started")
			}
		case q.Has("wait"):
			_, _ = io.WriteString(w, "data: 1\n\n")
			_ = http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				if cancelled != nil {
					cancelled <- context.Cause(r.Context())
				}
			case <-time.After(time.Minute):
				t.Errorf("the handler's context was not cancelled within a minute")
			}
			return
		case q.Has("abort"), q.Has("boom"):
			_, _ = io.WriteString(w, "x")
			_ = http.NewResponseController(w).Flush()
			if q.Has("abort") {
				panic(http.ErrAbortHandler)
			}
			panic("boom")
		}
		_, _ = io.WriteString(w, "ok")
	})
}

// TestProbeLeanNothingLeaks: after many connections through every ending
// (keep-alive requests with and without the watch, hand-offs, clients
// gone mid-stream, panics, bodies past 256 KiB unread, pipelined requests)
// every goroutine the lean server started has ended and the gate counts
// no connection open (none counted twice, none never released).
func TestProbeLeanNothingLeaks(t *testing.T) {
	cancelled := make(chan error, 64)
	p := newLeanPair(t, lifecycleHandler(t, cancelled))
	base := runtime.NumGoroutine()
	big := strings.Repeat("b", 300<<10)
	var wg sync.WaitGroup
	run := func(f func(c net.Conn, br *bufio.Reader)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", p.lean)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			f(c, bufio.NewReader(c))
		}()
	}
	want := func(br *bufio.Reader, body string) {
		if a := readAnswer(br); a.Body != body || a.Err != "" {
			t.Errorf("answer %+v, want body %q", a, body)
		}
	}
	for range 10 {
		run(func(c net.Conn, br *bufio.Reader) { // keep-alive, with and without the watch
			for _, path := range []string{"/v1/a", "/v1/a?watch", "/v1/a", "/v1/a?watch"} {
				_, _ = io.WriteString(c, leanPost(path, "", "{}"))
				want(br, "ok")
			}
		})
		run(func(c net.Conn, br *bufio.Reader) { // pipelined behind a watched request
			_, _ = io.WriteString(c, leanPost("/v1/a?watch", "", "{}")+leanPost("/v1/a?watch", "", "{}")+leanPost("/v1/a", "", "{}"))
			want(br, "ok")
			want(br, "ok")
			want(br, "ok")
		})
		run(func(c net.Conn, br *bufio.Reader) { // lean, then handed off
			_, _ = io.WriteString(c, leanPost("/v1/a?watch", "", "{}"))
			want(br, "ok")
			_, _ = io.WriteString(c, "GET /v1/a HTTP/1.1\r\nHost: x\r\n\r\n")
			want(br, "ok")
		})
		run(func(c net.Conn, br *bufio.Reader) { // client gone mid-stream
			_, _ = io.WriteString(c, leanPost("/v1/a?wait", "", "{}"))
			if _, err := br.ReadString('\n'); err != nil {
				t.Error(err)
			}
		})
		run(func(c net.Conn, br *bufio.Reader) { // panics cut the answer and close
			_, _ = io.WriteString(c, leanPost("/v1/a?abort", "", "{}"))
			_, _ = io.Copy(io.Discard, br)
		})
		run(func(c net.Conn, br *bufio.Reader) {
			_, _ = io.WriteString(c, leanPost("/v1/a?boom", "", "{}"))
			_, _ = io.Copy(io.Discard, br)
		})
		run(func(c net.Conn, br *bufio.Reader) { // a body past 256 KiB never read
			go func() { _, _ = io.WriteString(c, leanPost("/v1/a?noread", "", big)) }()
			_, _ = io.Copy(io.Discard, br) // the answer, or a reset (as net/http)
		})
		run(func(c net.Conn, br *bufio.Reader) {}) // sends nothing
	}
	wg.Wait()
	for range 10 {
		if err := <-cancelled; !errors.Is(err, context.Canceled) {
			t.Errorf("a client gone cancelled its request with %v", err)
		}
	}
	var n int64
	var g int
	if _, ok := within(time.Minute, func() bool {
		n, _ = p.gate.Open()
		g = runtime.NumGoroutine()
		return n == 0 && g <= base
	}); !ok {
		buf := make([]byte, 1<<20)
		t.Fatalf("connections open %d (want 0), goroutines %d (want ≤ %d)\n%s", n, g, base, buf[:runtime.Stack(buf, true)])
	}
}

// TestProbeLeanWatchKeepsThePipelinedByte: a request pipelined while the
// previous one is watched is served whole: the byte the watch read is
// the next request's first, and the watched request is not cancelled.
func TestProbeLeanWatchKeepsThePipelinedByte(t *testing.T) {
	var mu sync.Mutex
	var causes []error
	started := make(chan struct{})
	p := newLeanPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Query().Has("hold") {
			close(started)
			c := leanConnOf(w)
			if c == nil || !untilWatch(c, true) {
				t.Errorf("the watch never read the pipelined request's first byte")
			}
		}
		mu.Lock()
		causes = append(causes, r.Context().Err())
		mu.Unlock()
		_, _ = io.WriteString(w, r.URL.Path)
	}))
	c, err := net.Dial("tcp", p.lean)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	_, _ = io.WriteString(c, leanPost("/v1/first?hold", "", "{}"))
	// Sent once the first request is being served (its body read): the
	// watch (100 ms in) reads this request's first byte.
	<-started
	_, _ = io.WriteString(c, leanPost("/v1/second", "", `{"x":1}`))
	br := bufio.NewReader(c)
	if a := readAnswer(br); a.Body != "/v1/first" {
		t.Fatalf("first: %+v", a)
	}
	if a := readAnswer(br); a.Body != "/v1/second" {
		t.Fatalf("second: %+v", a)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, e := range causes {
		if e != nil {
			t.Errorf("a request's context ended (%v) with its client there", e)
		}
	}
}

// TestProbeLeanShutdownServesAFreshConnection: a connection accepted just
// before a graceful shutdown, whose request comes during it, is answered
// (net/http gives a new connection 5 s): a health probe (handed to
// net/http) and an inference request (served lean) alike.
func TestProbeLeanShutdownServesAFreshConnection(t *testing.T) {
	for _, raw := range []string{
		"GET /health/liveliness HTTP/1.1\r\nHost: gw\r\n\r\n",
		leanPost("/v1/chat/completions", "", chat3),
	} {
		t.Run(strings.Fields(raw)[0], func(t *testing.T) {
			up := httptest.NewServer(mockupstream.New(mockupstream.Options{NoRecord: true}))
			defer up.Close()
			cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL)))
			if err != nil {
				t.Fatal(err)
			}
			env := serveWith(t, cfg, Options{Store: sqliteStore(t), ShutdownTimeout: time.Minute})
			srv, addr := env.srv, strings.TrimPrefix(env.url, "http://")
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			if _, ok := within(time.Minute, func() bool {
				g := srv.gate.Load()
				if g == nil {
					return false
				}
				n, _ := g.Open()
				return n == 1
			}); !ok {
				t.Fatal("the connection was never accepted")
			}
			// env.stop waits for Serve, which waits for c's request: it
			// runs aside while the request is sent.
			done := make(chan error, 1)
			go func() { done <- env.stop() }()
			if _, ok := within(time.Minute, func() bool {
				d, err := net.Dial("tcp", addr)
				if err == nil {
					d.Close()
				}
				return err != nil
			}); !ok {
				t.Fatal("the listener still accepts after the shutdown began")
			}
			_, _ = io.WriteString(c, raw)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("a request on a connection accepted before the shutdown: %v, want an answer", err)
			}
			resp.Body.Close()
			if !resp.Close {
				t.Errorf("the answer during shutdown keeps the connection (%v)", resp.Header)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(time.Minute):
				t.Fatal("Serve did not return")
			}
			if n, _ := srv.gate.Load().Open(); n != 0 {
				t.Errorf("connections open after Serve returned: %d", n)
			}
		})
	}
}

// leanServing is how many of s's lean connections are serving a request.
func leanServing(s *Server) int {
	l := s.lean.Load()
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for c := range l.conns {
		if c.state.Load() == leanActive {
			n++
		}
	}
	return n
}

// TestProbeLeanBooksCutStreams: requests served by the lean server (each
// on a connection of its own: a connection once handed to net/http stays
// there) are booked when their client goes away (mid-stream, and waiting
// on the upstream) and when a shutdown's timeout cuts a stream: one row
// each, status 499, the streams charged, and the key's spend is the rows'
// sum with nothing held.
func TestProbeLeanBooksCutStreams(t *testing.T) {
	r := replicas(t, 1, rigSpec{name: "leanbook", mock: mockupstream.Options{Chunks: 20, ChunkDelay: 100 * time.Millisecond}},
		endingsConfig, Options{ShutdownTimeout: 100 * time.Millisecond})
	s, u := r.srvs[0], r.urls[0]
	const key = "sk-lean-book-key"
	r.key(t, key, `"max_budget": 1`)
	stream := func(ctx context.Context) (*http.Response, *bufio.Reader) {
		body := `{"model":"gpt-4","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"a b c d e f g h i j k l m n o p q r s t"}]}`
		req, _ := http.NewRequestWithContext(ctx, "POST", u+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		client := &http.Client{Transport: &http.Transport{}} // a new connection
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		readDataChunks(t, br, 3)
		if n := leanServing(s); n != 1 {
			t.Fatalf("%d lean connections serving, want the stream's", n)
		}
		return resp, br
	}
	held := func() bool {
		a, _ := s.book.Lookup("key", sha(key))
		return a != nil && a.Reserved() != 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	resp, _ := stream(ctx)
	cancel()
	resp.Body.Close()
	if _, ok := within(time.Minute, func() bool { return !held() }); !ok {
		t.Fatal("the stream whose client left still holds its budget")
	}
	// A request waiting on its upstream whose client leaves (the watch
	// sees it: nothing is written yet).
	slowBody := `{"model":"slow","max_tokens":50,"messages":[{"role":"user","content":"one two three four"}]}`
	sctx, scancel := context.WithCancel(context.Background())
	sreq, _ := http.NewRequestWithContext(sctx, "POST", u+"/v1/chat/completions", strings.NewReader(slowBody))
	sreq.Header.Set("Authorization", "Bearer "+key)
	sdone := make(chan error, 1)
	go func() {
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(sreq)
		if err == nil {
			resp.Body.Close()
		}
		sdone <- err
	}()
	if _, ok := within(time.Minute, func() bool { return r.mock.Stats().Requests >= 2 && leanServing(s) == 1 }); !ok {
		t.Fatal("the slow request never reached the upstream through the lean server")
	}
	scancel()
	if err := <-sdone; err == nil {
		t.Fatal("the slow request was answered after its client left")
	}
	if _, ok := within(time.Minute, func() bool { return !held() && leanServing(s) == 0 }); !ok {
		t.Fatal("the request whose client left still holds its budget or runs")
	}
	resp, br := stream(context.Background())
	r.stops[0]() // the shutdown timeout (100 ms) cuts the stream
	_, _ = io.Copy(io.Discard, br)
	resp.Body.Close()
	logs, total, err := r.st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key), Page: store.Page{Number: 1, Size: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if calls := r.mock.Stats().Requests; int64(total) != calls || total != 3 {
		t.Fatalf("%d spend rows for %d upstream calls, want 3", total, calls)
	}
	var sum float64
	charged := 0
	for _, l := range logs {
		if l.Status != 499 {
			t.Errorf("a cut request's row: status %d, want 499", l.Status)
		}
		if l.Cost > 0 {
			charged++
		}
		sum += l.Cost
	}
	if charged != 2 {
		t.Errorf("%d rows charged, want the two streams'", charged)
	}
	k, err := r.st.GetKey(context.Background(), sha(key))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(k.Spend-sum) > 1e-9 || held() {
		t.Fatalf("the key has spent %v (held: %v) for rows costing %v", k.Spend, held(), sum)
	}
}

// TestProbeLeanHeaderTimeoutFreesTheGate: a head that does not come whole within
// ReadHeaderTimeout (nothing sent on a new connection, part of a head on a
// new one, part of the next head on a keep-alive one) closes the
// connection without an answer; the gate counts none of them afterwards.
// (net/http alone answers 400 to a head cut mid-line by its timeout: its
// textproto parses the partial line; the lean server closes silently, as
// net/http does for a head cut at a line's end.)
func TestProbeLeanHeaderTimeoutFreesTheGate(t *testing.T) {
	p := newLeanPair(t, lifecycleHandler(t, nil), func(s *http.Server) {
		s.ReadHeaderTimeout = 200 * time.Millisecond
		s.IdleTimeout = time.Minute
	})
	for _, tc := range []struct{ name, first, then string }{
		{"nothing", "", ""},
		{"part of a head", "", "POST /v1/a HTTP/1.1\r\nHost: x\r\n"},
		{"part of the next head", leanPost("/v1/a", "", "{}"), "POST /v1/a HTTP/1.1\r\nHo"},
	} {
		for _, addr := range []string{p.lean} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			br := bufio.NewReader(c)
			if tc.first != "" {
				_, _ = io.WriteString(c, tc.first)
				if a := readAnswer(br); a.Body != "ok" {
					t.Fatalf("%s: %+v", tc.name, a)
				}
			}
			_, _ = io.WriteString(c, tc.then)
			b, err := io.ReadAll(br)
			if len(b) != 0 || err != nil {
				t.Errorf("%s (%s, lean %v): %q %v, want the connection closed unanswered", tc.name, addr, addr == p.lean, b, err)
			}
			c.Close()
		}
	}
	if _, ok := within(time.Minute, func() bool { n, _ := p.gate.Open(); return n == 0 }); !ok {
		n, _ := p.gate.Open()
		t.Fatalf("%d connections still counted open", n)
	}
}
