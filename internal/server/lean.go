package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/tollgate/tollgate/internal/reqctx"
)

// The lean server (docs/performance.md, "Issue 31, item 2: a lean server";
// docs/architecture.md, "the lean server"). net/http's server costs about
// 40–60 k instructions a request: a goroutine per request for its
// background read, a context and textproto's allocations per request, a
// clone and a sorted write of the response's ~29 headers, several read
// deadlines per request, two layers of buffers. The lean server owns the
// accept loop on the gate and serves, on one goroutine per connection,
// the requests it parses exactly: keep-alive POSTs with one valid
// Content-Length to an inference route (leanEligible says the rest).
// Anything else — another method or route, a malformed or oversized head,
// any shape a smuggler uses, HTTP/1.0, h2c — is handed, with every byte
// read so far, to the net/http server (through handoffListener), which
// then owns that connection to its end and answers exactly as it always
// did. The lean server never invents a parse error: it accepts only what
// it parses right, and refuses nothing itself.
//
// The handler is the same (s.track(s.handler)), and what it can observe is
// net/http's: the *http.Request's fields, the ResponseWriter's semantics
// (Content-Length when the handler ends without flushing and wrote at most
// leanChunkAfter bytes, chunked otherwise; sniffed Content-Type; 1xx;
// 204/304 without a body; header values with CR/LF made safe; invalid
// header names dropped; Connection: close honoured; unread bodies up to
// 256 KiB discarded for keep-alive), http.ResponseController's Flush and
// deadlines, and the request's context cancelled when the client goes
// away. What differs, unobservably: headers are written in map order, not
// sorted, and chunk boundaries follow the handler's writes.
const (
	// leanMaxHead is the largest request head the lean server parses
	// (http.Server.MaxHeaderBytes of serveHTTP); larger ones go to net/http,
	// which answers 431 or serves them (it allows 4 KiB of slack).
	leanMaxHead = 64 << 10
	// leanBufSize is a connection's initial read buffer: a request's head
	// and, usually, its body arrive in one read.
	leanBufSize = 4 << 10
	// leanChunkAfter is net/http's bufferBeforeChunkingSize: a handler that
	// ends having written at most this much, without flushing, is answered
	// with a Content-Length; past it, or at a flush, the answer is chunked.
	leanChunkAfter = 2048
	// leanOutFlush is the size at which written bytes go to the connection
	// without waiting for a flush (net/http's 4 KiB bufio.Writer).
	leanOutFlush = 4 << 10
	// leanMaxDiscard is net/http's maxPostHandlerReadBytes: an unread
	// request body up to this size is discarded to keep the connection;
	// past it the connection closes after the answer.
	leanMaxDiscard = 256 << 10
	// leanGoneAfter is how long a handler runs before the connection is
	// watched for the client going away (its context is then cancelled on
	// EOF, as net/http's background read does). Short requests never pay
	// for the watching goroutine; only streams and slow upstreams do.
	leanGoneAfter = 100 * time.Millisecond
	// leanNewGrace: at a graceful shutdown, a connection that has sent
	// nothing yet is closed only once this old (net/http waits 5 s too, so
	// that a request racing the shutdown is still served).
	leanNewGrace = 5 * time.Second
	// leanRouteCache bounds the paths whose eligibility is remembered, and
	// leanRouteKeyMax their length: a client chooses them, and 4,096 paths
	// of 64 KiB would pin 256 MiB for the process's life.
	leanRouteCache  = 4096
	leanRouteKeyMax = 256
)

// connection states, for graceful shutdown.
const (
	leanIdle   int32 = iota // waiting for a request's head (or reading it)
	leanActive              // a request is being served
	leanClosed              // closed by a shutdown
)

// aLongTimeAgo aborts a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

// leanServer serves the lean subset; srv is the net/http server that gets
// everything else (and supplies the timeouts and the error log).
type leanServer struct {
	srv      *http.Server
	handler  http.Handler
	gate     *connGate
	handoff  *handoffListener
	eligible func(path string) bool
	errorLog *log.Logger

	shutting atomic.Bool
	mu       sync.Mutex
	closed   bool // Close has run (under mu)
	conns    map[*leanConn]struct{}
	routes   sync.Map // path -> bool: leanEligible's answers
	nroutes  atomic.Int64
}

func newLeanServer(srv *http.Server, gate *connGate, eligible func(path string) bool) *leanServer {
	return &leanServer{srv: srv, handler: srv.Handler, gate: gate, eligible: eligible, errorLog: srv.ErrorLog,
		handoff: &handoffListener{ch: make(chan net.Conn), done: make(chan struct{}), addr: gate.Addr()},
		conns:   make(map[*leanConn]struct{})}
}

// route reports whether POSTs to path may be served lean, remembering the
// answer for up to leanRouteCache paths.
func (l *leanServer) route(path string) bool {
	if v, ok := l.routes.Load(path); ok {
		return v.(bool)
	}
	ok := l.eligible(path)
	if len(path) <= leanRouteKeyMax && l.nroutes.Add(1) <= leanRouteCache {
		l.routes.Store(strings.Clone(path), ok)
	}
	return ok
}

// Serve runs the accept loop on the gate until it is closed; net/http's
// server runs on the hand-off listener meanwhile (serveHTTP starts it).
func (l *leanServer) Serve() error {
	var delay time.Duration
	for {
		c, err := l.gate.Accept()
		if err != nil {
			if l.shutting.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// As net/http: back off on EMFILE and the like.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				l.logf("http: Accept error: %v; retrying in %v", err, delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		gc, ok := c.(*gatedConn)
		if !ok { // not reached: the gate wraps every connection it admits
			gc = &gatedConn{Conn: c, gate: l.gate}
		}
		lc := &leanConn{l: l, gc: gc, started: time.Now()}
		lc.fresh.Store(true) // before Shutdown can see it: it is given leanNewGrace
		if !l.add(lc) {
			_ = gc.Close()
			continue
		}
		go lc.serve()
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

func (l *leanServer) logf(format string, args ...any) {
	if l.errorLog != nil {
		l.errorLog.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}

// add registers c; false once Close has run. A connection accepted as a
// graceful shutdown begins is served (net/http's Serve serves what it
// accepted too): Shutdown waits for it, with a new connection's grace.
func (l *leanServer) add(c *leanConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *leanServer) remove(c *leanConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// Shutdown stops accepting, closes the idle lean connections, and waits
// (up to ctx) for the active ones to finish their request and close.
// net/http's server (the handed-off connections) is shut down by the
// caller.
func (l *leanServer) Shutdown(ctx context.Context) error {
	l.shutting.Store(true)
	_ = l.gate.Close()
	wait := time.Millisecond
	for {
		if l.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// closeIdle closes the idle connections and reports whether none is left.
func (l *leanServer) closeIdle() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	for c := range l.conns {
		if c.fresh.Load() && now.Sub(c.started) < leanNewGrace {
			continue
		}
		if c.state.CompareAndSwap(leanIdle, leanClosed) {
			_ = c.gc.Close()
		}
	}
	return len(l.conns) == 0
}

// Close closes the listener and every lean connection at once.
func (l *leanServer) Close() {
	l.shutting.Store(true)
	_ = l.gate.Close()
	l.mu.Lock()
	l.closed = true
	for c := range l.conns {
		c.state.Store(leanClosed)
		_ = c.gc.Close()
	}
	l.mu.Unlock()
}

// handoffListener hands net/http's server the connections the lean server
// does not serve.
type handoffListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoffListener) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoffListener) Addr() net.Addr { return h.addr }

// give hands c to net/http's server; false once that server is closed.
func (h *handoffListener) give(c net.Conn) bool {
	select {
	case h.ch <- c:
		return true
	case <-h.done:
		return false
	}
}

// handedConn is a gated connection handed to net/http: its first reads
// return the bytes the lean server read already. The gate sees it as the
// same connection (connState unwraps it): it is counted once.
type handedConn struct {
	*gatedConn
	buf []byte
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.gatedConn.Read(p)
}

// leanConn is one connection served lean.
type leanConn struct {
	l       *leanServer
	gc      *gatedConn
	ctx     context.Context // the base context with the server's values
	remote  string
	started time.Time
	state   atomic.Int32
	fresh   atomic.Bool // no request has started on it yet

	buf        []byte // buf[rpos:rend] is read and not consumed
	rpos, rend int
	out        []byte // the answer's bytes not yet written
	werr       error  // the first write error: the connection is dead
	hdr        http.Header
	hbuf       []byte // the headers snapshot of WriteHeader
	bbuf       []byte // the body held before the head is sent

	// Read deadlines are applied lazily: want is what the connection's
	// reads should be bounded by, applied what was last set on it.
	// Between requests want is the idle (or header) deadline; while a
	// handler runs it is zero or what the handler asked for, applied only
	// when something reads the connection: most requests arrive whole in
	// the read of their head and cost one SetReadDeadline.
	want, applied time.Time

	// The client-gone watch (watch, watchRead), under mu.
	mu        sync.Mutex
	timer     *time.Timer
	inHandler bool
	due       bool // leanGoneAfter has passed in this request
	bodyDone  bool // the request body has been read to its end
	watching  bool // watchRead runs
	aborting  bool
	watchDone chan struct{}
	watchByte [1]byte
	watchGot  bool
	cur       *reqctx.Ctx // the request's context (its leanExchange's), while it runs
}

// serve runs the connection's requests one after the other.
func (c *leanConn) serve() {
	l := c.l
	c.remote = c.gc.RemoteAddr().String()
	ctx := context.WithValue(l.srv.BaseContext(l.handoff), http.ServerContextKey, l.srv)
	c.ctx = context.WithValue(ctx, http.LocalAddrContextKey, c.gc.LocalAddr())
	// The requests' contexts are children of c.ctx that do not register
	// with it (reqctx.Ctx.InitLazy): the connection watches it once, and
	// ends the request in flight when it ends.
	if c.ctx.Done() != nil {
		stop := context.AfterFunc(c.ctx, c.baseDone)
		defer stop()
	}
	c.buf = make([]byte, leanBufSize)
	c.hdr = make(http.Header, 32)
	c.gc.idleSince.Store(time.Now().UnixNano()) // as connState's StateNew
	if d := l.srv.ReadHeaderTimeout; d > 0 {
		c.want = time.Now().Add(d)
	}
	handed := false
	defer func() {
		if c.timer != nil {
			c.timer.Stop()
		}
		l.remove(c)
		if !handed {
			_ = c.gc.Close()
		}
	}()
	for {
		var req http.Request // copied by WithContext: stays on the stack
		ours, ok := c.readRequest(&req)
		if !ok {
			return
		}
		if !ours {
			// Not ours: net/http serves the connection from here, from the
			// first byte of this request. It stays among the lean
			// connections, active, until net/http has it: a graceful
			// shutdown neither closes it nor closes net/http's listener
			// (serveHTTP shuts net/http down after the lean server) before.
			if !c.state.CompareAndSwap(leanIdle, leanActive) {
				return // closed by a shutdown meanwhile
			}
			hc := &handedConn{gatedConn: c.gc, buf: c.buf[c.rpos:c.rend]}
			if l.handoff.give(hc) {
				handed = true
			}
			return
		}
		if !c.state.CompareAndSwap(leanIdle, leanActive) {
			return // closed by a shutdown meanwhile
		}
		c.fresh.Store(false)
		c.gc.idleSince.Store(0)
		if !c.exchange(&req) {
			return
		}
		if l.shutting.Load() || !c.state.CompareAndSwap(leanActive, leanIdle) || l.shutting.Load() {
			return
		}
		c.gc.idleSince.Store(time.Now().UnixNano())
		if c.rpos == c.rend {
			c.rpos, c.rend = 0, 0
		}
		if d := l.srv.IdleTimeout; d > 0 {
			c.want = time.Now().Add(d)
		} else {
			c.want = time.Time{}
		}
	}
}

// read reads from the connection into p under the deadline wanted.
func (c *leanConn) read(p []byte) (int, error) {
	if !c.want.Equal(c.applied) {
		_ = c.gc.SetReadDeadline(c.want)
		c.applied = c.want
	}
	return c.gc.Read(p)
}

// readRequest reads and parses the next request's head into req. It
// returns ok false when the connection is to be closed (EOF, a timeout or
// an error between requests, as net/http closes it, without an answer),
// and ours false when the request is to be handed to net/http.
func (c *leanConn) readRequest(req *http.Request) (ours, ok bool) {
	var end int
	first := true
	// scanned: c.buf[c.rpos:][:scanned] has been searched already (no
	// CRLFCRLF, no bare LF), so that a head that comes a byte a read costs
	// linear work, not quadratic (64 KiB a byte at a time was ~20 s of CPU).
	scanned := 0
	// After a request, net/http peeks 4 bytes before reading the next
	// one (closing silently if they do not come) and discards the CRs and
	// LFs among them (RFC 9112 2.2's tolerance after a POST): so does the
	// lean server, before it parses or hands off.
	peeked := c.fresh.Load()
	if len(c.buf) > leanBufSize && c.rend-c.rpos < leanBufSize {
		// A large head grew the buffer: give it back before waiting
		// (an idle keep-alive connection would pin 68 KiB, not 4).
		nb := make([]byte, leanBufSize)
		c.rend, c.rpos, c.buf = copy(nb, c.buf[c.rpos:c.rend]), 0, nb
	}
	for {
		if !peeked {
			if c.rend-c.rpos >= 4 {
				for k := 0; k < 4 && (c.buf[c.rpos] == '\r' || c.buf[c.rpos] == '\n'); k++ {
					c.rpos++
				}
				peeked = true
				continue
			}
		} else {
			from := c.rpos + max(scanned-3, 0)
			if i := bytes.Index(c.buf[from:c.rend], crlfcrlf); i >= 0 {
				end = from + i + 4
				break
			}
		}
		if peeked {
			if c.rend-c.rpos > leanMaxHead || c.rend > c.rpos && notOurs(c.buf[c.rpos:c.rend], scanned) {
				return false, true
			}
			scanned = c.rend - c.rpos
		}
		if c.rend == len(c.buf) {
			if c.rpos > 0 {
				c.rend = copy(c.buf, c.buf[c.rpos:c.rend])
				c.rpos = 0
			} else {
				nb := make([]byte, min(2*len(c.buf), leanMaxHead+leanBufSize))
				copy(nb, c.buf[:c.rend])
				c.buf = nb
			}
		}
		if !first && c.rend > c.rpos {
			// The head did not come whole: it is now bounded by the header
			// timeout rather than the idle one (net/http's order too).
			if d := c.l.srv.ReadHeaderTimeout; d > 0 && c.l.srv.IdleTimeout > d {
				if t := time.Now().Add(d); t.Before(c.want) {
					c.want = t
				}
			}
		}
		first = false
		n, err := c.read(c.buf[c.rend:])
		c.rend += n
		if err != nil && n == 0 {
			if peeked && c.rend > c.rpos && !isTimeout(err) {
				return false, true // a head cut short: net/http answers as it does
			}
			return false, false
		}
	}
	if !c.parse(c.buf[c.rpos:end], req) {
		return false, true
	}
	c.rpos = end
	return true, true
}

// notOurs reports, before the head is whole, that it cannot be the lean
// subset: it does not start "POST /", or it has a bare LF (net/http ends
// lines and heads at LF alone, the lean server never waits for what
// net/http would not). b[:from] has been checked for bare LFs already.
func notOurs(b []byte, from int) bool {
	const prefix = "POST /"
	if n := min(len(b), len(prefix)); string(b[:n]) != prefix[:n] {
		return true
	}
	i := bytes.IndexByte(b[from:], '\n')
	if i >= 0 {
		i += from
	}
	for i >= 0 {
		if i == 0 || b[i-1] != '\r' {
			return true
		}
		j := bytes.IndexByte(b[i+1:], '\n')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

var (
	crlf     = []byte("\r\n")
	crlfcrlf = []byte("\r\n\r\n")
)

// alnumAnd is a byte table of the ASCII letters and digits and extra.
func alnumAnd(extra string) (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range extra {
		t[c] = true
	}
	return t
}

var (
	// tokenByte: the bytes of an RFC 9110 token.
	tokenByte = alnumAnd("!#$%&'*+-.^_`|~")
	// targetByte: the bytes the lean server accepts in a request target
	// (pchar, '/', '?', '%'); anything else goes to net/http.
	targetByte = alnumAnd("-._~!$&'()*+,;=:@/?%")
	// hostByte: the bytes accepted in a Host value.
	hostByte = alnumAnd("-._:[]")
)

// commonKeys interns the canonical form of headers clients send, so that
// a lowercase name (HTTP/2-era clients) costs no allocation.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Anthropic-Beta", "Anthropic-Version",
		"Api-Key", "Authorization", "Cache-Control", "Connection", "Content-Length", "Content-Type", "Cookie",
		"Host", "Openai-Organization", "Openai-Project", "Origin", "Referer", "Traceparent", "Tracestate",
		"User-Agent", "X-Api-Key", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id",
		"X-Stainless-Arch", "X-Stainless-Async", "X-Stainless-Lang", "X-Stainless-Os", "X-Stainless-Package-Version",
		"X-Stainless-Retry-Count", "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Read-Timeout",
		"X-Stainless-Timeout", "X-Litellm-Api-Key", "X-Goog-Api-Key"} {
		m[k] = k
		m[strings.ToLower(k)] = k
	}
	return m
}()

// canonicalKey is textproto.CanonicalMIMEHeaderKey of the token name (a
// substring of the head's string), without allocating for canonical or
// common names.
func canonicalKey(name string, scratch []byte) string {
	upper := true
	canonical := true
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if upper && 'a' <= ch && ch <= 'z' || !upper && 'A' <= ch && ch <= 'Z' {
			canonical = false
			break
		}
		upper = ch == '-'
	}
	if canonical {
		return name
	}
	if k, ok := commonKeys[name]; ok {
		return k
	}
	if len(name) <= len(scratch) {
		b := scratch[:len(name)]
		upper = true
		for i := 0; i < len(name); i++ {
			ch := name[i]
			if upper && 'a' <= ch && ch <= 'z' {
				ch -= 'a' - 'A'
			} else if !upper && 'A' <= ch && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			b[i] = ch
			upper = ch == '-'
		}
		if k, ok := commonKeys[string(b)]; ok {
			return k
		}
		return string(b)
	}
	return http.CanonicalHeaderKey(name)
}

// parse parses head (the request line to the blank line, CRLFs included)
// strictly into r; false means "not the lean subset": net/http gets it.
func (c *leanConn) parse(head []byte, r *http.Request) bool {
	// The request line: POST SP origin-form SP HTTP/1.1 CRLF.
	if !bytes.HasPrefix(head, []byte("POST /")) {
		return false
	}
	le := bytes.Index(head, crlf)
	line := head[:le]
	if !bytes.HasSuffix(line, []byte(" HTTP/1.1")) {
		return false
	}
	target := line[5 : len(line)-9]
	for _, b := range target {
		if !targetByte[b] {
			return false
		}
	}
	// Headers: name ":" OWS value OWS CRLF, names tokens, values without
	// CTLs but HTAB; nothing net/http would read differently.
	nh := 0
	for p := le + 2; p < len(head)-2; {
		e := bytes.Index(head[p:], crlf)
		hl := head[p : p+e]
		colon := bytes.IndexByte(hl, ':')
		if colon <= 0 {
			return false
		}
		for _, b := range hl[:colon] {
			if !tokenByte[b] {
				return false
			}
		}
		for _, b := range hl[colon+1:] {
			if b < ' ' && b != '\t' || b == 0x7f {
				return false
			}
		}
		nh++
		p += e + 2
	}
	// One string for the whole head: the target, names and values are
	// substrings of it.
	hs := string(head)
	rawURL := hs[5 : le-9]
	u, err := url.ParseRequestURI(rawURL)
	// An escaped path that decodes differently (%2F) is routed by the mux
	// on its escaped form, not on Path (the route cache's key): net/http's.
	if err != nil || u.RawPath != "" || !c.l.route(u.Path) {
		return false
	}
	h := make(http.Header, nh)
	strs := make([]string, nh)
	var host string
	hosts, cls, conns := 0, 0, 0
	var clen int64
	closeReq := false
	var scratch [64]byte
	for p := le + 2; p < len(hs)-2; {
		e := strings.Index(hs[p:], "\r\n")
		hl := hs[p : p+e]
		p += e + 2
		colon := strings.IndexByte(hl, ':')
		key := canonicalKey(hl[:colon], scratch[:])
		v := strings.Trim(hl[colon+1:], " \t")
		switch key {
		case "Host":
			hosts++
			if hosts > 1 || v == "" {
				return false
			}
			for i := 0; i < len(v); i++ {
				if !hostByte[v[i]] {
					return false
				}
			}
			host = v
			continue // net/http keeps Host in Request.Host only
		case "Content-Length":
			cls++
			if cls > 1 || len(v) == 0 || len(v) > 18 {
				return false
			}
			clen = 0
			for i := 0; i < len(v); i++ {
				if v[i] < '0' || v[i] > '9' {
					return false
				}
				clen = clen*10 + int64(v[i]-'0')
			}
		case "Connection":
			conns++
			if conns > 1 {
				return false
			}
			switch {
			case strings.EqualFold(v, "close"):
				closeReq = true
			case strings.EqualFold(v, "keep-alive"):
			default:
				return false
			}
		case "Transfer-Encoding", "Expect", "Upgrade", "Pragma", "Trailer", "Te", "Http2-Settings", "Keep-Alive", "Proxy-Connection":
			return false
		}
		if vv := h[key]; vv != nil {
			h[key] = append(vv, v)
		} else {
			strs[0] = v
			h[key] = strs[:1:1]
			strs = strs[1:]
		}
	}
	if hosts != 1 || cls != 1 {
		return false
	}
	*r = http.Request{Method: "POST", URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h,
		ContentLength: clen, Close: closeReq, Host: host, RemoteAddr: c.remote, RequestURI: rawURL}
	return true
}

// leanExchange is one request's context, body and response, allocated
// together.
type leanExchange struct {
	ctx  reqctx.Ctx
	body leanBody
	resp leanResponse
}

// baseDone ends the request in flight when the connection's base context
// ends (the server's BaseContext, cancelled once the server has stopped).
func (c *leanConn) baseDone() {
	c.mu.Lock()
	cur := c.cur
	c.mu.Unlock()
	if cur != nil {
		cur.Propagate()
	}
}

// exchange serves req; false when the connection is to be closed.
func (c *leanConn) exchange(tmpl *http.Request) bool {
	ex := &leanExchange{}
	ctx := &ex.ctx
	ctx.InitLazy(c.ctx)
	body, w := &ex.body, &ex.resp
	body.c, body.n = c, tmpl.ContentLength
	req := tmpl.WithContext(ctx)
	if tmpl.ContentLength == 0 {
		req.Body = http.NoBody
		body.eof = true
	} else {
		req.Body = body
	}
	w.c, w.req, w.body, w.contentLength = c, req, body, -1
	clear(c.hdr)
	c.hbuf, c.bbuf = c.hbuf[:0], c.bbuf[:0]
	// No deadline while the handler runs (net/http's ReadTimeout is 0),
	// unless it sets one; when the body has arrived whole nothing reads
	// the connection, and nothing is applied.
	c.want = time.Time{}

	c.mu.Lock()
	c.inHandler, c.due, c.bodyDone, c.cur = true, false, body.eof, ctx
	c.mu.Unlock()
	ctx.Propagate() // the base ended between InitLazy and baseDone's look at c.cur
	if c.timer == nil {
		c.timer = time.AfterFunc(leanGoneAfter, c.watch)
	} else {
		c.timer.Reset(leanGoneAfter)
	}

	panicked := true
	func() {
		defer func() {
			if panicked {
				v := recover()
				if v != nil && v != http.ErrAbortHandler {
					const size = 64 << 10
					buf := make([]byte, size)
					buf = buf[:runtime.Stack(buf, false)]
					c.l.logf("http: panic serving %v: %v\n%s", c.remote, v, buf)
				}
			}
		}()
		c.l.handler.ServeHTTP(w, req)
		panicked = false
	}()
	if panicked {
		// As net/http: what reached the connection's buffer is written,
		// the rest of the answer is not, and the connection closes.
		w.done.Store(true)
		c.stopWatch()
		ctx.Cancel()
		c.writeOut()
		return false
	}
	w.finish()
	ctx.Cancel()
	c.stopWatch()
	if !w.reuse() {
		if w.closeWait {
			if cw, ok := c.gc.Conn.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			time.Sleep(500 * time.Millisecond) // net/http's rstAvoidanceDelay
		}
		return false
	}
	return true
}

// watch runs leanGoneAfter into a request: from then, if the body has been
// read, a read on the connection reports the client going away.
func (c *leanConn) watch() {
	c.mu.Lock()
	if !c.inHandler || c.watching {
		c.mu.Unlock()
		return
	}
	c.due = true
	if !c.bodyDone {
		c.mu.Unlock()
		return // bodyEOF starts it
	}
	c.startWatchLocked()
	c.mu.Unlock()
	c.watchRead()
}

// bodyEOF notes the body read to its end; the watch starts now if due.
func (c *leanConn) bodyEOF() {
	c.mu.Lock()
	c.bodyDone = true
	start := c.inHandler && c.due && !c.watching
	if start {
		c.startWatchLocked()
	}
	c.mu.Unlock()
	if start {
		go c.watchRead()
	}
}

func (c *leanConn) startWatchLocked() {
	c.watching, c.aborting, c.watchGot = true, false, false
	c.watchDone = make(chan struct{})
	if !c.want.Equal(c.applied) {
		_ = c.gc.SetReadDeadline(c.want)
		c.applied = c.want
	}
}

// watchRead reads one byte: EOF or an error means the client has gone
// (the request's context is cancelled); a byte is the next request,
// pipelined, and is kept.
func (c *leanConn) watchRead() {
	n, err := c.gc.Read(c.watchByte[:])
	c.mu.Lock()
	if n == 1 {
		c.watchGot = true
	} else if err != nil && !(c.aborting && isTimeout(err)) && c.cur != nil {
		c.cur.Cancel()
	}
	done := c.watchDone
	c.mu.Unlock()
	close(done)
}

// stopWatch ends the client-gone watch at the end of a request: the
// pending read is aborted and waited for, and a byte it read is kept.
func (c *leanConn) stopWatch() {
	c.timer.Stop()
	c.mu.Lock()
	// c.cur is the request's context, inside its leanExchange: kept, it
	// would keep the request (and the buffer its head's strings are in)
	// while the connection is idle.
	c.inHandler, c.cur = false, nil
	watching := c.watching
	if watching {
		c.aborting = true
		_ = c.gc.SetReadDeadline(aLongTimeAgo)
		c.applied = aLongTimeAgo
	}
	done := c.watchDone
	c.mu.Unlock()
	if !watching {
		return
	}
	<-done
	c.mu.Lock()
	c.watching = false
	got := c.watchGot
	c.mu.Unlock()
	if got {
		if c.rend == len(c.buf) {
			if c.rpos > 0 {
				c.rend = copy(c.buf, c.buf[c.rpos:c.rend])
				c.rpos = 0
			} else {
				c.buf = append(c.buf, 0)[:len(c.buf)]
				c.buf = c.buf[:cap(c.buf)]
			}
		}
		c.buf[c.rend] = c.watchByte[0]
		c.rend++
	}
}

// setReadDeadline is the handler's (http.ResponseController).
func (c *leanConn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	c.want = t
	if c.watching {
		_ = c.gc.SetReadDeadline(t)
		c.applied = t
	}
	c.mu.Unlock()
}

// writeOut writes the pending answer bytes.
func (c *leanConn) writeOut() error {
	if c.werr != nil {
		c.out = c.out[:0]
		return c.werr
	}
	if len(c.out) > 0 {
		c.write(c.out)
		c.out = c.out[:0]
	}
	return c.werr
}

// write writes p to the connection. A failed write means the client has
// gone: the request's context is cancelled at once, as net/http's
// background read would have on the client's close.
func (c *leanConn) write(p []byte) {
	if _, c.werr = c.gc.Write(p); c.werr != nil {
		c.mu.Lock()
		if c.inHandler {
			c.cur.Cancel()
		}
		c.mu.Unlock()
	}
}

// leanBody is a request body: Content-Length bytes from the connection's
// buffer, then from the connection.
type leanBody struct {
	mu      sync.Mutex
	c       *leanConn
	n       int64 // left to read
	eof     bool
	closed  bool
	early   bool // closed with more than leanMaxDiscard unread
	readErr error
}

func (b *leanBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.readLocked(p)
}

func (b *leanBody) readLocked(p []byte) (int, error) {
	if b.readErr != nil {
		return 0, b.readErr
	}
	if b.n == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	c := b.c
	var n int
	var err error
	if c.rend > c.rpos {
		n = copy(p, c.buf[c.rpos:c.rend])
		c.rpos += n
	} else {
		c.mu.Lock()
		want := c.want
		c.mu.Unlock()
		if !want.Equal(c.applied) {
			_ = c.gc.SetReadDeadline(want)
			c.applied = want
		}
		n, err = c.gc.Read(p)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	}
	b.n -= int64(n)
	if err != nil {
		b.readErr = err
		return n, err
	}
	if b.n == 0 {
		b.eof = true
		c.bodyEOF()
		return n, io.EOF
	}
	return n, nil
}

// Close discards up to leanMaxDiscard unread bytes, as net/http's body
// does, so that the connection can serve the next request.
func (b *leanBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	switch {
	case b.eof || b.n == 0:
	case b.readErr != nil:
	case b.n > leanMaxDiscard:
		b.early = true
	default:
		b.discardLocked()
		if !b.eof {
			b.early = true
		}
	}
	return nil
}

func (b *leanBody) discardLocked() {
	if b.n <= 0 || b.readErr != nil {
		return // nothing to read: no buffer (it escapes, 4 KiB a request)
	}
	var buf [4096]byte
	for b.n > 0 && b.readErr == nil {
		if _, err := b.readLocked(buf[:]); err != nil {
			break
		}
	}
}

// leanResponse is the ResponseWriter of a lean request.
type leanResponse struct {
	c    *leanConn
	req  *http.Request
	body *leanBody

	wroteHeader   bool // WriteHeader has fixed the status and the headers
	sent          bool // the head is in c.out (or written)
	handlerDone   bool
	done          atomic.Bool
	status        int
	contentLength int64 // the handler's Content-Length; -1: none
	written       int64
	chunking      bool
	closeAfter    bool
	closeWait     bool // half-close and wait before closing (body unread)
	trailers      bool
	declared      []string // trailer names declared in Trailer

	// the headers WriteHeader set aside: their fate depends on the framing
	cl, te, ct, conn []string
	hasCL, hasCT     bool // the handler's map has the key (even with no value)
	hasCE, hasDate   bool
}

var errLeanAfterReturn = errors.New("http: response written after the handler returned")

func (w *leanResponse) Header() http.Header { return w.c.hdr }

func (w *leanResponse) WriteHeader(code int) {
	if w.done.Load() {
		return
	}
	if w.wroteHeader {
		caller := relevantCaller()
		w.c.l.logf("http: superfluous response.WriteHeader call from %s (%s:%d)", caller.Function, caller.File, caller.Line)
		return
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	c := w.c
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// Informational: written at once, without Content-Length or
		// Transfer-Encoding, and the headers stay for the final answer.
		c.out = appendStatusLine(c.out, code)
		for k, vv := range c.hdr {
			if k == "Content-Length" || k == "Transfer-Encoding" {
				continue
			}
			c.out = appendHeader(c.out, k, vv)
		}
		c.out = append(c.out, crlf...)
		_ = c.writeOut()
		return
	}
	w.wroteHeader = true
	w.status = code
	if vv := c.hdr["Content-Length"]; len(vv) > 0 && vv[0] != "" {
		if v, err := strconv.ParseInt(vv[0], 10, 64); err == nil && v >= 0 {
			w.contentLength = v
		} else {
			c.l.logf("http: invalid Content-Length of %q", vv[0])
			delete(c.hdr, "Content-Length")
		}
	}
	// The snapshot: what the handler changes in the map from here on is
	// not sent (net/http clones the map here). Headers whose fate depends
	// on the framing are set aside.
	for k, vv := range c.hdr {
		switch k {
		case "Content-Length":
			w.cl, w.hasCL = vv, true
			continue
		case "Transfer-Encoding":
			w.te = vv
			continue
		case "Content-Type":
			w.ct, w.hasCT = vv, true
			continue
		case "Connection":
			w.conn = vv
			continue
		case "Content-Encoding":
			w.hasCE = len(vv) > 0 && vv[0] != ""
		case "Date":
			w.hasDate = true
		case "Trailer":
			w.trailers = true
			for _, v := range vv {
				for _, f := range strings.Split(v, ",") {
					// As net/http's declareTrailer: names RFC 9110
					// forbids in trailers (Content-Type, Authorization,
					// framing, ...) are not declared.
					if f = http.CanonicalHeaderKey(textTrim(f)); f != "" && httpguts.ValidTrailerHeader(f) {
						w.declared = append(w.declared, f)
					}
				}
			}
		}
		if strings.HasPrefix(k, http.TrailerPrefix) {
			w.trailers = true
			continue
		}
		c.hbuf = appendHeader(c.hbuf, k, vv)
	}
}

// relevantCaller is the handler's frame that called WriteHeader (as
// net/http reports a superfluous call).
func relevantCaller() runtime.Frame {
	pc := make([]uintptr, 16)
	n := runtime.Callers(1, pc)
	frames := runtime.CallersFrames(pc[:n])
	var frame runtime.Frame
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "github.com/tollgate/tollgate/internal/server.(*leanResponse)") &&
			!strings.HasPrefix(f.Function, "net/http.") {
			return f
		}
		frame = f
		if !more {
			return frame
		}
	}
}

func textTrim(s string) string { return strings.Trim(s, " \t\r\n") }

// appendHeader appends "k: v\r\n" for each value, with a value's CR and LF
// made spaces and its ends trimmed, and nothing for an invalid name (as
// net/http's Header.Write).
func appendHeader(b []byte, k string, vv []string) []byte {
	if !httpguts.ValidHeaderFieldName(k) {
		return b
	}
	for _, v := range vv {
		clean := true
		for i := 0; i < len(v); i++ {
			if v[i] == '\r' || v[i] == '\n' {
				clean = false
				break
			}
		}
		if !clean {
			v = strings.NewReplacer("\n", " ", "\r", " ").Replace(v)
		}
		if len(v) > 0 && (v[0] <= ' ' || v[len(v)-1] <= ' ') {
			v = textTrim(v)
		}
		b = append(b, k...)
		b = append(b, ':', ' ')
		b = append(b, v...)
		b = append(b, '\r', '\n')
	}
	return b
}

// statusLines caches the common status lines.
var statusLines = func() map[int][]byte {
	m := map[int][]byte{}
	for code := 100; code < 600; code++ {
		if t := http.StatusText(code); t != "" {
			m[code] = []byte("HTTP/1.1 " + strconv.Itoa(code) + " " + t + "\r\n")
		}
	}
	return m
}()

func appendStatusLine(b []byte, code int) []byte {
	if l, ok := statusLines[code]; ok {
		return append(b, l...)
	}
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, " status code "...)
	b = strconv.AppendInt(b, int64(code), 10)
	return append(b, '\r', '\n')
}

// dateCache is the Date header's value, formatted once a second.
var dateCache atomic.Pointer[dateValue]

type dateValue struct {
	sec int64
	b   []byte
}

func appendDate(b []byte) []byte {
	now := time.Now()
	d := dateCache.Load()
	if d == nil || d.sec != now.Unix() {
		d = &dateValue{sec: now.Unix(), b: now.UTC().AppendFormat(nil, http.TimeFormat)}
		dateCache.Store(d)
	}
	b = append(b, "Date: "...)
	b = append(b, d.b...)
	return append(b, '\r', '\n')
}

func bodyAllowed(code int) bool {
	return !(code >= 100 && code <= 199 || code == 204 || code == 304)
}

func (w *leanResponse) Write(p []byte) (int, error) {
	if w.done.Load() {
		return 0, errLeanAfterReturn
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.contentLength != -1 && w.written > w.contentLength {
		return 0, http.ErrContentLength
	}
	c := w.c
	if !w.sent {
		if len(c.bbuf)+len(p) <= leanChunkAfter {
			c.bbuf = append(c.bbuf, p...)
			return len(p), nil
		}
		// As net/http's 2 KiB bufio.Writer: the head is sent with what
		// fills the buffer (or with p alone when the buffer is empty).
		if len(c.bbuf) == 0 {
			w.sendHead(p)
			w.body1(p)
		} else {
			k := leanChunkAfter - len(c.bbuf)
			c.bbuf = append(c.bbuf, p[:k]...)
			w.sendHead(c.bbuf)
			w.body1(c.bbuf)
			c.bbuf = c.bbuf[:0]
			w.body1(p[k:])
		}
	} else {
		w.body1(p)
	}
	if len(c.out) >= leanOutFlush {
		if err := c.writeOut(); err != nil {
			return 0, err
		}
	}
	if c.werr != nil {
		return 0, c.werr
	}
	return len(p), nil
}

// body1 appends p to the answer, in a chunk when chunking.
func (w *leanResponse) body1(p []byte) {
	if len(p) == 0 || w.req.Method == "HEAD" {
		return
	}
	c := w.c
	if w.chunking {
		c.out = strconv.AppendInt(c.out, int64(len(p)), 16)
		c.out = append(c.out, '\r', '\n')
	}
	if len(p) >= leanOutFlush {
		if c.writeOut() == nil {
			c.write(p)
		}
	} else {
		c.out = append(c.out, p...)
	}
	if w.chunking {
		c.out = append(c.out, '\r', '\n')
	}
}

// sendHead puts the status line and headers in c.out, deciding the
// framing as net/http's chunkWriter.writeHeader does; p is the body's
// first bytes (for sniffing, and for the Content-Length of a handler that
// has ended).
func (w *leanResponse) sendHead(p []byte) {
	w.sent = true
	c := w.c
	keepAlives := !c.l.shutting.Load()
	code := w.status
	te := ""
	if len(w.te) > 0 {
		te = w.te[0]
	}
	hasTE := te != ""
	delCL, delTE, delConn, delCT := false, false, false, false
	setCL, setConn, setTE := -1, "", ""
	if w.handlerDone && !w.trailers && !hasTE && bodyAllowed(code) && !w.hasCL {
		w.contentLength = int64(len(p))
		setCL = len(p)
	}
	hasCL := w.contentLength != -1
	if w.req.Close {
		w.closeAfter = true
	}
	if len(w.conn) > 0 && w.conn[0] == "close" || !keepAlives {
		w.closeAfter = true
	}
	// The unread body: discarded up to leanMaxDiscard for keep-alive.
	if b := w.body; w.req.ContentLength != 0 && !w.closeAfter {
		b.mu.Lock()
		tooBig := false
		switch {
		case b.closed:
			if !b.eof && b.n > 0 {
				w.closeAfter = true
			}
		case b.n >= leanMaxDiscard:
			tooBig = true
		default:
			b.discardLocked()
			switch {
			case b.readErr != nil:
				w.closeAfter = true
			case b.n == 0:
				b.closed = true
			}
		}
		b.mu.Unlock()
		if tooBig {
			w.closeAfter, w.closeWait = true, true
			delConn, setConn = true, "close"
		}
	}
	if bodyAllowed(code) {
		if !w.hasCT && !w.hasCE && !hasTE && len(p) > 0 {
			c.hbuf = append(c.hbuf, "Content-Type: "...)
			c.hbuf = append(c.hbuf, http.DetectContentType(p)...)
			c.hbuf = append(c.hbuf, '\r', '\n')
		}
	} else {
		delCL, delTE = true, true
		if code == 304 {
			delCT = true
		}
	}
	if hasCL && hasTE && te != "identity" {
		c.l.logf("http: WriteHeader called with both Transfer-Encoding of %q and a Content-Length of %d", te, w.contentLength)
		delCL, hasCL = true, false
	}
	switch {
	case w.req.Method == "HEAD" || !bodyAllowed(code):
		delTE = true
	case hasCL:
		delTE = true
	case hasTE && te == "identity":
		w.chunking, w.closeAfter, delTE = false, true, true
	default:
		w.chunking, setTE = true, "chunked"
		if hasTE && te == "chunked" {
			delTE = true
		}
	}
	if w.chunking {
		delCL = true
	}
	if w.closeAfter && (!keepAlives || !connHasClose(w.conn)) {
		delConn, setConn = true, "close"
	}

	c.out = appendStatusLine(c.out, code)
	c.out = append(c.out, c.hbuf...)
	if !delCL {
		c.out = appendHeader(c.out, "Content-Length", w.cl)
	}
	if !delTE {
		c.out = appendHeader(c.out, "Transfer-Encoding", w.te)
	}
	if !delCT {
		c.out = appendHeader(c.out, "Content-Type", w.ct)
	}
	if !delConn {
		c.out = appendHeader(c.out, "Connection", w.conn)
	}
	if setConn != "" {
		c.out = append(c.out, "Connection: "...)
		c.out = append(c.out, setConn...)
		c.out = append(c.out, '\r', '\n')
	}
	if setTE != "" {
		c.out = append(c.out, "Transfer-Encoding: chunked\r\n"...)
	}
	if !w.hasDate {
		c.out = appendDate(c.out)
	}
	if setCL >= 0 {
		c.out = append(c.out, "Content-Length: "...)
		c.out = strconv.AppendInt(c.out, int64(setCL), 10)
		c.out = append(c.out, '\r', '\n')
	}
	c.out = append(c.out, crlf...)
}

func connHasClose(vv []string) bool {
	return len(vv) > 0 && httpguts.HeaderValuesContainsToken(vv[:1], "close")
}

// Flush sends the head and what is written (http.Flusher).
func (w *leanResponse) Flush() { _ = w.FlushError() }

// FlushError is http.ResponseController's Flush.
func (w *leanResponse) FlushError() error {
	if w.done.Load() {
		return errLeanAfterReturn
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	c := w.c
	if !w.sent {
		w.sendHead(c.bbuf)
		w.body1(c.bbuf)
		c.bbuf = c.bbuf[:0]
	}
	return c.writeOut()
}

// SetReadDeadline is http.ResponseController's.
func (w *leanResponse) SetReadDeadline(t time.Time) error {
	if w.done.Load() {
		return errLeanAfterReturn
	}
	w.c.setReadDeadline(t)
	return nil
}

// SetWriteDeadline is http.ResponseController's.
func (w *leanResponse) SetWriteDeadline(t time.Time) error {
	if w.done.Load() {
		return errLeanAfterReturn
	}
	return w.c.gc.SetWriteDeadline(t)
}

// finish completes the answer after the handler returned.
func (w *leanResponse) finish() {
	w.handlerDone = true
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	c := w.c
	if !w.sent {
		w.sendHead(c.bbuf)
		w.body1(c.bbuf)
		c.bbuf = c.bbuf[:0]
	}
	if w.chunking {
		c.out = append(c.out, "0\r\n"...)
		if w.trailers {
			c.out = w.appendTrailers(c.out)
		}
		c.out = append(c.out, crlf...)
	}
	_ = c.writeOut()
	w.done.Store(true)
	_ = w.body.Close()
}

// appendTrailers appends the trailers, as net/http's finalTrailers.
func (w *leanResponse) appendTrailers(b []byte) []byte {
	t := http.Header{}
	for k, vv := range w.c.hdr {
		if kk, found := strings.CutPrefix(k, http.TrailerPrefix); found {
			t[kk] = vv
		}
	}
	for _, k := range w.declared {
		if vv, ok := w.c.hdr[k]; ok {
			t[k] = vv
		}
	}
	for k, vv := range t {
		b = appendHeader(b, k, vv)
	}
	return b
}

// reuse reports whether the connection may serve another request.
func (w *leanResponse) reuse() bool {
	if w.closeAfter || w.c.werr != nil {
		return false
	}
	if w.req.Method != "HEAD" && w.contentLength != -1 && bodyAllowed(w.status) && w.contentLength != w.written {
		return false // the handler wrote less than its Content-Length
	}
	if w.body.early {
		w.closeWait = true
		return false
	}
	return true
}
