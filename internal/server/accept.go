package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/lifecycle"
)

// The bound at accept (docs/performance.md, "Issue 31, item 4: the bound
// at accept"). Under overload the requests waiting were not in the
// handler, where the in-flight bound sits, but in connections accepted and
// not yet read: each a goroutine and net/http's buffers, and each refusal
// there costs net/http's whole per-request work. connGate counts the
// connections open on the main listener; past the bound a new one is
// answered a canned 503 at accept, without net/http, and closed. The
// bound is general_settings.max_client_connections, by default twice
// max_requests_in_flight, and it follows the in-flight bound in force: it
// is never more than twice that bound (nor, on that account, below
// connsFloorPerProc per GOMAXPROCS), so when the CPU signal lowers the
// in-flight bound, the connections allowed to wait behind it shrink too.
//
// A connection past the bound whose first request is not an inference
// route (health probes, /metrics, management, the UI) is not refused: it
// is served, one request, on a side server with keep-alives off, and at
// most maxExemptConns such connections are open at once.
const (
	// connsPerInFlight is how many connections the bound allows per
	// inference request the in-flight bound admits: one carrying the
	// request and one idle in a client's keep-alive pool, or waiting to be
	// read. Past that a connection can only wait.
	connsPerInFlight = 2
	// connsFloorPerProc is the lowest, per GOMAXPROCS, that a lowered
	// in-flight bound takes the connection bound to (the configured one
	// aside): twice the in-flight bound's floor of 32 refused, at 2,400
	// req/s on one CPU, a third of the requests that bound admits (a
	// connection is open longer than its request is in flight: while it is
	// read, written and idle in the client's pool); 256 still admitted
	// fewer streams at 8,000 req/s than 512, and 512 connections cost
	// ≈ 10 MB (docs/performance.md, "the bound at accept").
	connsFloorPerProc = 512
	// maxExemptConns bounds the connections past the bound served for a
	// non-inference first request.
	maxExemptConns = 64
	// maxLingering bounds the goroutines that close refused connections
	// gracefully (lingerRefused); past it a refused connection is drained
	// without waiting and closed at once.
	maxLingering = 128
	// lingerTime bounds how long a refused connection is kept open for
	// the client to read the 503 and close its end.
	lingerTime = 2 * time.Second
	// lingerBytes bounds what is read and discarded from a refused
	// connection.
	lingerBytes = 256 << 10
	// maxSniffing bounds the goroutines that wait for the first bytes of
	// a connection accepted past the bound before they arrived (rare on
	// Linux: deferAccept).
	maxSniffing = 256
	// sniffTime bounds that wait.
	sniffTime = time.Second
	// idleReapAge: at the bound, keep-alive connections idle for longer
	// than this are closed (at most once per idleReapEvery), so that
	// clients' idle pools do not refuse new connections for the 2 minutes
	// of IdleTimeout.
	idleReapAge   = time.Second
	idleReapEvery = 100 * time.Millisecond
	// sideHeaderTimeout is the side server's ReadHeaderTimeout (at most
	// request_header_timeout): 64 slow headers hold its places this long,
	// not request_header_timeout (serveHTTP says why 2 s).
	sideHeaderTimeout = 2 * time.Second
)

// refusedConn is what a connection refused at accept is answered: the
// body the shedder writes (apierror's OpenAI shape), encoded once.
var refusedConn = func() []byte {
	rec := &headerRecorder{h: http.Header{}}
	apierror.Write(rec, &apierror.Error{Status: http.StatusServiceUnavailable, Type: "overloaded_error", Code: "overloaded",
		Message:    "the gateway is overloaded: too many connections open; retry after the time in Retry-After",
		RetryAfter: shedRetryAfter, Cause: errOverloaded})
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ")
	b.WriteString(strconv.Itoa(rec.body.Len()))
	b.WriteString("\r\n\r\n")
	b.Write(rec.body.Bytes())
	return b.Bytes()
}()

// headerRecorder captures what apierror.Write writes.
type headerRecorder struct {
	h    http.Header
	body bytes.Buffer
}

func (r *headerRecorder) Header() http.Header         { return r.h }
func (r *headerRecorder) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *headerRecorder) WriteHeader(int)             {}

// connGate is the main listener, bounded.
type connGate struct {
	net.Listener
	max       int64                  // the configured bound; -1: none
	floor     int64                  // the lowest the in-flight bound in force takes it to
	inFlight  func() int64           // the in-flight bound in force; -1: none
	inference func(m, p string) bool // whether method and path are an inference route
	onRefuse  func()
	side      chan net.Conn // exempt connections, for the side server
	open      atomic.Int64
	exempt    atomic.Int64
	lingering atomic.Int64
	sniffing  atomic.Int64
	// conns are the connections open, for closing idle ones at the bound.
	mu       sync.Mutex
	conns    []*gatedConn
	lastReap atomic.Int64
	// peek holds the first bytes of a connection past the bound, read by
	// Accept's goroutine only.
	peek [1024]byte
	// held are the connections past the bound a sniff or linger goroutine
	// holds; shut, set at shutdown (closePast), closes them and sends no
	// more to the side server. Pushes to side happen under heldMu.
	heldMu sync.Mutex
	held   map[net.Conn]struct{}
	shut   bool
}

// hold registers c, held by a goroutine of the gate, to be closed at
// shutdown; false once the gate is shut (the caller closes c).
func (g *connGate) hold(c net.Conn) bool {
	g.heldMu.Lock()
	defer g.heldMu.Unlock()
	if g.shut {
		return false
	}
	if g.held == nil {
		g.held = make(map[net.Conn]struct{})
	}
	g.held[c] = struct{}{}
	return true
}

func (g *connGate) release(c net.Conn) {
	g.heldMu.Lock()
	delete(g.held, c)
	g.heldMu.Unlock()
}

// closePast, at shutdown (the side listener's Close), closes the
// connections past the bound not yet served: those queued for the side
// server, which no longer accepts them, and those a sniff or linger
// goroutine holds (their goroutines end at once). Past this point a
// connection past the bound is never queued for the side server.
func (g *connGate) closePast() {
	g.heldMu.Lock()
	g.shut = true
	held := g.held
	g.held = nil
	g.heldMu.Unlock()
	for c := range held {
		_ = c.Close()
	}
	for {
		select {
		case c := <-g.side:
			_ = c.Close()
		default:
			return
		}
	}
}

func newConnGate(ln net.Listener, max int64, inFlight func() int64, inference func(string, string) bool, onRefuse func()) *connGate {
	if max >= 0 {
		deferAccept(ln)
	}
	return &connGate{Listener: ln, max: max, floor: connsFloorPerProc * int64(runtime.GOMAXPROCS(0)), inFlight: inFlight, inference: inference, onRefuse: onRefuse,
		side: make(chan net.Conn, maxExemptConns)}
}

// bound is the bound in force: the configured one, never more than
// connsPerInFlight × the in-flight bound in force, nor, on that account,
// less than connsFloorPerProc per GOMAXPROCS.
func (g *connGate) bound() int64 {
	b := g.max
	if l := g.inFlight(); l >= 0 {
		b = min(b, max(connsPerInFlight*l, g.floor))
	}
	return b
}

// Open reports the connections open on the main listener and the bound
// in force (-1: none).
func (g *connGate) Open() (n, bound int64) {
	if g.max < 0 {
		return g.open.Load(), -1
	}
	return g.open.Load(), g.bound()
}

// Accept returns the next connection within the bound; those past it are
// refused or sent to the side server here, without blocking on them.
func (g *connGate) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if g.max < 0 {
			return g.track(c), nil
		}
		if g.open.Add(1) <= g.bound() {
			return g.track(c), nil
		}
		g.open.Add(-1)
		g.past(c)
	}
}

// track wraps an admitted connection (counted in open already, unless max
// is -1) and registers it.
func (g *connGate) track(c net.Conn) *gatedConn {
	if g.max < 0 {
		g.open.Add(1)
	}
	gc := &gatedConn{Conn: c, gate: g}
	g.mu.Lock()
	gc.idx = len(g.conns)
	g.conns = append(g.conns, gc)
	g.mu.Unlock()
	return gc
}

// past handles a connection accepted past the bound: its first bytes, if
// they have arrived, say whether it is an inference request (refused) or
// not (served on the side server); when they have not, a bounded number of
// goroutines wait for them, and past that it is refused.
func (g *connGate) past(c net.Conn) {
	g.reapIdle()
	n, _ := readAvailable(c, g.peek[:])
	switch {
	case n > 0:
		g.decide(c, g.peek[:n])
	case n < 0 && g.sniffing.Add(1) <= maxSniffing:
		go func() {
			defer g.sniffing.Add(-1)
			if !g.hold(c) {
				_ = c.Close() // shutting down
				return
			}
			buf := make([]byte, len(g.peek))
			_ = c.SetReadDeadline(time.Now().Add(sniffTime))
			n, _ := c.Read(buf)
			_ = c.SetReadDeadline(time.Time{})
			g.release(c)
			if n <= 0 {
				_ = c.Close() // no request: nothing to answer
				return
			}
			g.decide(c, buf[:n])
		}()
	default:
		// No request (on Linux the kernel held the connection a second
		// waiting for one: deferAccept), and no goroutine to wait longer:
		// closed unanswered, as an idle connection is. Answering before a
		// request is sent makes Go clients report an unsolicited response
		// and fail the request they then write on it.
		if n < 0 {
			g.sniffing.Add(-1)
		}
		_ = c.Close()
	}
}

// decide serves on the side server a connection past the bound whose
// request line (in first) is not an inference route, and refuses the rest.
func (g *connGate) decide(c net.Conn, first []byte) {
	if m, p, ok := requestLine(first); ok && !g.inference(m, p) {
		if g.exempt.Add(1) <= maxExemptConns {
			ec := &exemptConn{Conn: c, first: bytes.Clone(first), gate: g}
			g.heldMu.Lock()
			if !g.shut {
				select {
				case g.side <- ec:
					g.heldMu.Unlock()
					return
				default:
				}
			}
			g.heldMu.Unlock()
		}
		g.exempt.Add(-1)
	}
	g.refuse(c)
}

// requestLine parses the method and path of an HTTP/1 request line.
func requestLine(b []byte) (method, path string, ok bool) {
	sp := bytes.IndexByte(b, ' ')
	if sp <= 0 {
		return "", "", false
	}
	rest := b[sp+1:]
	end := bytes.IndexAny(rest, " ?\r\n")
	if end <= 0 {
		return "", "", false
	}
	return string(b[:sp]), string(rest[:end]), true
}

// refuse answers c the canned 503 and closes it so that the client reads
// the answer rather than a reset: a socket closed with unread bytes in its
// receive buffer sends RST (RFC 1122 4.2.2.13; net/http's own server waits
// after CloseWrite for the same reason), and a client that gets RST before
// it read the answer may lose it. So: the answer is written without
// waiting (a new connection's send buffer takes it whole), CloseWrite sends
// FIN after it, and the request's bytes are read and discarded until the
// client closes its end (it will: Connection: close) or lingerTime passes,
// on one of at most maxLingering goroutines; past that bound what has
// arrived is read without waiting and the connection closed at once.
func (g *connGate) refuse(c net.Conn) {
	g.onRefuse()
	if n, err := writeAvailable(c, refusedConn); err != nil || n < len(refusedConn) {
		_ = c.Close()
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	if g.lingering.Add(1) <= maxLingering {
		go func() {
			defer g.lingering.Add(-1)
			if g.hold(c) {
				_ = c.SetReadDeadline(time.Now().Add(lingerTime))
				_, _ = io.Copy(io.Discard, io.LimitReader(c, lingerBytes))
				g.release(c)
			}
			_ = c.Close()
		}()
		return
	}
	g.lingering.Add(-1)
	var buf [4096]byte
	for range 16 {
		if n, _ := readAvailable(c, buf[:]); n <= 0 {
			break
		}
	}
	_ = c.Close()
}

// reapIdle closes, at most once per idleReapEvery, the connections idle
// for longer than idleReapAge: at the bound, clients' idle keep-alive
// connections would otherwise refuse new ones until IdleTimeout.
func (g *connGate) reapIdle() {
	now := time.Now().UnixNano()
	last := g.lastReap.Load()
	if now-last < int64(idleReapEvery) || !g.lastReap.CompareAndSwap(last, now) {
		return
	}
	var idle []*gatedConn
	g.mu.Lock()
	for _, c := range g.conns {
		if t := c.idleSince.Load(); t != 0 && now-t > int64(idleReapAge) {
			idle = append(idle, c)
		}
	}
	g.mu.Unlock()
	for _, c := range idle {
		if pending(c.Conn) {
			continue // its request has arrived: net/http is about to read it
		}
		_ = c.Close() // net/http's read of the next request fails; it closes its end
	}
}

// connState follows the main server's connections: idle ones may be
// reaped at the bound.
func (g *connGate) connState(c net.Conn, st http.ConnState) {
	var gc *gatedConn
	switch c := c.(type) {
	case *gatedConn:
		gc = c
	case *handedConn: // from the lean server: the same connection
		gc = c.gatedConn
	default:
		return
	}
	switch st {
	case http.StateNew, http.StateIdle:
		// A new connection is idle until a whole request header has
		// arrived (net/http marks it active only then): one that sends
		// nothing, or its request a byte at a time (slow-loris), is
		// reaped at the bound like an idle keep-alive one, rather than
		// holding its place for request_header_timeout.
		gc.idleSince.Store(time.Now().UnixNano())
	case http.StateActive:
		gc.idleSince.Store(0)
	}
}

// gatedConn is a connection the gate admitted; closing it frees its place.
type gatedConn struct {
	net.Conn
	gate      *connGate
	idx       int // in gate.conns, under gate.mu
	idleSince atomic.Int64
	closed    atomic.Bool
}

func (c *gatedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		g := c.gate
		g.mu.Lock()
		last := len(g.conns) - 1
		g.conns[c.idx] = g.conns[last]
		g.conns[c.idx].idx = c.idx
		g.conns[last] = nil
		g.conns = g.conns[:last]
		g.mu.Unlock()
		g.open.Add(-1)
	}
	return c.Conn.Close()
}

// CloseWrite is the connection's: net/http half-closes a connection it
// closes with a request body unread (so that the client reads the answer
// rather than a reset), which it can only do on a conn with CloseWrite.
func (c *gatedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// exemptConn is a connection past the bound served on the side server: its
// first bytes, read to decide, are read again by net/http.
type exemptConn struct {
	net.Conn
	first  []byte
	gate   *connGate
	closed atomic.Bool
}

func (c *exemptConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *exemptConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.gate.exempt.Add(-1)
	}
	return c.Conn.Close()
}

// sideListener hands the side server the exempt connections.
type sideListener struct {
	g    *connGate
	done chan struct{}
	once sync.Once
}

var errSideClosed = errors.New("side listener closed")

func (l *sideListener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, errSideClosed
	default:
	}
	select {
	case c := <-l.g.side:
		return c, nil
	case <-l.done:
		return nil, errSideClosed
	}
}

// Close, at shutdown, also closes the connections past the bound not yet
// served (connGate.closePast): nothing accepts them any more.
func (l *sideListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.g.closePast()
	})
	return nil
}

func (l *sideListener) Addr() net.Addr { return l.g.Addr() }

// inferenceRoute reports whether a request with this method and path is
// one the in-flight bound counts (an inference or pass-through route), or
// falls to the pass-through fallback.
func (s *Server) inferenceRoute(method, path string) bool {
	r := &http.Request{Method: method, URL: &url.URL{Path: path}, Host: "gateway"}
	_, pattern := s.mux.Handler(r)
	return pattern == "/" || s.shedPatterns[pattern]
}

// HealthActor serves the health routes (/health, /health/liveliness,
// /health/liveness, /health/readiness, /health/readiness/details) and
// /metrics on a listener of their own: LiteLLM's SEPARATE_HEALTH_APP, with
// SEPARATE_HEALTH_PORT (tollgate serve opens it). Nothing there is bounded
// at accept or shed, so an orchestrator's probes and Prometheus are
// answered however loaded the main port is. Management stays on the main
// port, where a connection past the bound whose first request is not an
// inference route is still served (connGate.decide).
func (s *Server) HealthActor(ln net.Listener) lifecycle.Actor {
	mux := http.NewServeMux()
	s.registerHealth(mux.Handle)
	mux.Handle("GET /metrics", s.metricsHandler)
	mux.Handle("/", unmatched(mux))
	srv := &http.Server{Handler: apierror.Recover(s.log, mux), ReadHeaderTimeout: s.cfg.Load().RequestHeaderTimeout(),
		MaxHeaderBytes: 64 << 10, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	return lifecycle.Actor{Name: "health listener", Run: func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case err := <-errc:
			return fmt.Errorf("health listener: %w", err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
		}
		return nil
	}}
}
