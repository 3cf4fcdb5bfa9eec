package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// TestQueueDelaySheds: through a real loopback server, two connections
// each have a request held by the upstream and a second request written
// behind it, whose bytes then wait unread in the gateway past the target
// (10 ms; the test waits 150 ms). Once the held ones are released, the
// first waiting request decided is admitted (a delay past the target is
// tolerated for an interval; the test's interval is 0) and the second is
// answered 503 overloaded_error with Retry-After: 1, its connection kept
// and nothing sent upstream; a fresh request, whose bytes did not wait, is
// then admitted (and ends the shedding).
func TestQueueDelaySheds(t *testing.T) {
	if !queueDelayMeasured {
		t.Skip("the queueing delay is measured on Linux (amd64, arm64) only")
	}
	up := &holdingUpstream{release: make(chan struct{})}
	hs := httptest.NewServer(up)
	t.Cleanup(hs.Close)
	release := sync.OnceFunc(func() { close(up.release) })
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", hs.URL)+"  max_queue_delay: 0.01\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Store: sqliteStore(t), Logger: testLogger, ShedOnQueueDelay: true})
	if err != nil {
		t.Fatal(err)
	}
	if srv.shed.qTarget != 10*time.Millisecond {
		t.Fatalf("target %v, want 10ms", srv.shed.qTarget)
	}
	srv.shed.qEvery, srv.shed.qInterval = 1, 0 // every request measured; the second delay past the target sheds
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	t.Cleanup(release) // runs first

	raw := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-1234\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(chat3), chat3)
	type conn struct {
		c net.Conn
		r *bufio.Reader
	}
	dial := func() conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return conn{c, bufio.NewReader(c)}
	}
	read := func(c conn) (*http.Response, string, error) {
		_ = c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(c.r, nil)
		if err != nil {
			return nil, "", err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b), err
	}
	conns := []conn{dial(), dial()}
	for _, c := range conns {
		if _, err := io.WriteString(c.c, raw); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := within(30*time.Second, func() bool { return up.arrived.Load() == 2 }); !ok {
		t.Fatalf("the held requests did not reach the upstream: %d", up.arrived.Load())
	}
	// The second requests: the gateway does not read them while the first
	// ones are served. Their bytes are left to wait past the target: the
	// wait is what is tested (the kernel counts it), not a synchronisation.
	for _, c := range conns {
		if _, err := io.WriteString(c.c, raw); err != nil {
			t.Fatal(err)
		}
	}
	written := time.Now()
	within(30*time.Second, func() bool { runtime.Gosched(); return time.Since(written) >= 150*time.Millisecond })
	release()

	var admitted, shed int
	for i, c := range conns {
		if resp, body, err := read(c); err != nil || resp.StatusCode != 200 {
			t.Fatalf("conn %d, held request: %v %v %s", i, err, resp, body)
		}
		resp, body, err := read(c)
		if err != nil {
			t.Fatalf("conn %d, waiting request: %v", i, err)
		}
		switch resp.StatusCode {
		case 200:
			admitted++
		case http.StatusServiceUnavailable:
			shed++
			if !strings.Contains(body, `"overloaded_error"`) || resp.Header.Get("Retry-After") != "1" {
				t.Errorf("shed answer: %s, Retry-After %q", body, resp.Header.Get("Retry-After"))
			}
			if resp.Close {
				t.Errorf("the shed answer closes the connection")
			}
			// The connection is kept: a fresh request on it is served.
			if _, err := io.WriteString(c.c, raw); err != nil {
				t.Fatal(err)
			}
			if resp, body, err := read(c); err != nil || resp.StatusCode != 200 {
				t.Fatalf("fresh request on the kept connection: %v %v %s", err, resp, body)
			}
		default:
			t.Fatalf("conn %d, waiting request: %d %s", i, resp.StatusCode, body)
		}
	}
	if admitted != 1 || shed != 1 {
		t.Fatalf("the waiting requests: %d admitted, %d shed; want 1 and 1", admitted, shed)
	}
	// A fresh connection's request did not wait: admitted.
	c := dial()
	if _, err := io.WriteString(c.c, raw); err != nil {
		t.Fatal(err)
	}
	if resp, body, err := read(c); err != nil || resp.StatusCode != 200 {
		t.Fatalf("fresh request: %v %v %s", err, resp, body)
	}
	if n := up.arrived.Load(); n != 5 {
		t.Errorf("%d requests reached the upstream, want 5 (the shed one none)", n)
	}
}

// TestQueueDelayRule: CoDel's rule on measured delays: past the target is
// tolerated until it has lasted the interval; one under it resets.
func TestQueueDelayRule(t *testing.T) {
	s := newShedder(100, false, func(string) {})
	s.qTarget = 10 * time.Millisecond
	ms := int64(time.Millisecond)
	steps := []struct {
		d    time.Duration
		at   int64
		shed bool
	}{
		{5 * time.Millisecond, 0, false},
		{12 * time.Millisecond, 10 * ms, false},  // above from 10 ms
		{40 * time.Millisecond, 100 * ms, false}, // 90 ms above
		{40 * time.Millisecond, 110 * ms, true},  // 100 ms above
		{10 * time.Millisecond, 120 * ms, false}, // at the target: reset
		{50 * time.Millisecond, 130 * ms, false}, // above again from 130 ms
		{50 * time.Millisecond, 229 * ms, false},
		{50 * time.Millisecond, 230 * ms, true},
	}
	for i, st := range steps {
		if got := s.judgeDelay(st.d, st.at); got != st.shed {
			t.Errorf("step %d (%v at %d ms): shed %v, want %v", i, st.d, st.at/ms, got, st.shed)
		}
	}
}
