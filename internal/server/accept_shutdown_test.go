package server

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// plainListener hides the *net.TCPListener, so that newConnGate does not
// set TCP_DEFER_ACCEPT: a connection that sends nothing is accepted at once
// and waits in a sniff goroutine.
type plainListener struct{ net.Listener }

// closedByServer reports whether the server closed c within a minute: a
// read ends in EOF or a reset, not in the read deadline.
func closedByServer(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	_, err := io.Copy(io.Discard, c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestAcceptShutdownClosesConnectionsPastTheBound: at shutdown (the side
// server closes its listener) a connection past the bound queued for the
// side server, and one a sniff goroutine holds, are closed: nothing would
// serve them any more. Before, they stayed open until the process exited.
func TestAcceptShutdownClosesConnectionsPastTheBound(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Every connection is past a bound of 0 and none is inference: each is
	// for the side server, which does not accept (as once it is shut down).
	g := newConnGate(plainListener{ln}, 0, func() int64 { return -1 }, func(string, string) bool { return false }, func() {})
	side := &sideListener{g: g, done: make(chan struct{})}
	go func() { _, _ = g.Accept() }()
	defer ln.Close()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	queued := dial()
	if _, err := io.WriteString(queued, "GET /health/liveliness HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, ok := within(time.Minute, func() bool { return len(g.side) == 1 }); !ok {
		t.Fatal("the connection was not queued for the side server")
	}
	sniffed := dial() // sends nothing yet: a sniff goroutine waits for it
	if _, ok := within(time.Minute, func() bool { return g.sniffing.Load() == 1 }); !ok {
		t.Fatal("no sniff goroutine holds the silent connection")
	}
	_ = side.Close() // what side.Shutdown does
	// Its request arrives after the shutdown: it must not be queued.
	_, _ = io.WriteString(sniffed, "GET /health/liveliness HTTP/1.1\r\nHost: x\r\n")
	if !closedByServer(t, queued) {
		t.Error("a connection queued for the side server was still open a minute after shutdown")
	}
	if !closedByServer(t, sniffed) {
		t.Error("a connection held by a sniff goroutine was still open a minute after shutdown")
	}
	if n := len(g.side); n != 0 {
		t.Errorf("%d connections queued for the side server after shutdown", n)
	}
}

// TestBoundSideServerDropsSlowHeaders: past the bound, 64 connections whose
// health request's header never ends hold every place on the side server
// (a probe past the bound is then refused); they are dropped after the side
// server's header timeout (sideHeaderTimeout), well before the
// request_header_timeout of 300 s here, and then a probe past the bound
// answers. Before, the side server waited request_header_timeout.
func TestBoundSideServerDropsSlowHeaders(t *testing.T) {
	yaml := strings.ReplaceAll(pricedConfig, "{{UP}}", "http://127.0.0.1:1") + "  max_client_connections: 1\n  request_header_timeout: 300\n  request_body_timeout: 300\n"
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveWith(t, cfg, Options{})
	addr := strings.TrimPrefix(e.url, "http://")
	activeHolder(t, addr)
	if _, ok := within(time.Minute, func() bool { return openConns(e) == 1 }); !ok {
		t.Fatal("the holding connection was not counted")
	}
	slow := make([]net.Conn, maxExemptConns)
	for i := range slow {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /health/liveliness HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		slow[i] = c
	}
	g := e.srv.gate.Load()
	if _, ok := within(time.Minute, func() bool { return g.exempt.Load() == maxExemptConns }); !ok {
		t.Fatalf("%d slow headers on the side server, want %d", g.exempt.Load(), maxExemptConns)
	}
	probe := func() int {
		resp, err := oneConnClient().Get(e.url + "/health/liveliness")
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Not asserted (the slow headers may be dropped already on a busy
	// machine): with the side server full a probe is refused.
	t.Logf("a probe with the side server full: %d", probe())
	for i, c := range slow {
		if !closedByServer(t, c) {
			t.Fatalf("slow header %d still open on the side server after a minute (request_header_timeout 300 s)", i)
		}
	}
	if _, ok := within(time.Minute, func() bool { return probe() == http.StatusOK }); !ok {
		t.Fatal("a probe past the bound did not answer once the slow headers were dropped")
	}
}
