package provider

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/tollgate/tollgate/internal/reqctx"
)

// h1Transport is a lean HTTP/1.1 client for plain http:// upstreams
// (self-hosted vLLM, Ollama, sidecars, the bench's mock). The exchange runs
// on the caller's goroutine: the request is written, the status line and
// headers are read, and the response's Body reads straight from the
// connection's buffer. net/http's Transport spends two goroutines per
// connection and channel hand-offs per request, about 60 k instructions a
// request (docs/performance.md, "a lean upstream client").
//
// Only requests it can carry without doubt take this path: scheme http, a
// known length (ContentLength > 0 or no body), no Upgrade, no Expect, no
// user information in the URL, no proxy from the environment. Everything
// else, https above all (HTTP/2), goes to fallback unchanged.
//
// A connection is reused only after a response read to its end whose
// framing was clear (Content-Length or chunked, HTTP/1.1, no Connection:
// close from either side); anything in doubt is closed.
type h1Transport struct {
	fallback *http.Transport
	dialer   net.Dialer

	// noProxy caches, per host, that the fallback's Proxy (from the
	// environment, read once per process) sends requests to it directly.
	noProxy sync.Map

	mu       sync.Mutex
	idle     map[string][]*h1Conn // per host:port, most recently used last
	nidle    int
	sweeping bool // a sweep of expired idle connections is scheduled
}

const (
	h1MaxIdlePerHost = 512
	h1MaxIdle        = 1024
	h1IdleTimeout    = 90 * time.Second
	h1MaxHeaderBytes = 1 << 20 // status line, headers, 1xx responses and trailers together
	h1Max1xx         = 5       // as net/http
	h1BufSize        = 4 << 10 // as net/http's Transport
)

func newH1Transport(fallback *http.Transport) *h1Transport {
	return &h1Transport{
		fallback: fallback,
		dialer:   net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second},
		idle:     map[string][]*h1Conn{},
	}
}

// RoundTrip implements http.RoundTripper.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.eligible(req) {
		return t.fallback.RoundTrip(req)
	}
	return t.roundTrip(req)
}

// do is http.Client.Do of a request the lean path takes, on the pool's
// client (no Jar, no Timeout, redirects never followed): the same answer
// and the same errors (*url.Error, Op and URL as Client.Do sets them),
// without the client's per-request work for redirects (a copy of the
// request's headers and a closure to make it: five allocations a request).
func (t *h1Transport) do(req *http.Request) (*http.Response, error) {
	resp, err := t.roundTrip(req)
	if err != nil {
		return nil, clientError(req, req, err)
	}
	if resp.Body == nil {
		resp.Body = http.NoBody // never: the lean path always sets one
	}
	// Client.Do, for a redirect it would follow, reads Location (and the
	// body again for 307/308) before asking CheckRedirect, which says to
	// keep this response: a Location that does not parse is its error.
	follow := false
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther:
		follow = true
	case http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		follow = req.GetBody != nil || req.Body == nil || req.Body == http.NoBody
	}
	if !follow {
		return resp, nil
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return resp, nil
	}
	if _, err := req.URL.Parse(loc); err != nil {
		resp.Body.Close()
		closeBody(req.Body)
		return nil, clientError(req, resp.Request, fmt.Errorf("failed to parse Location header %q: %v", loc, err))
	}
	if (resp.StatusCode == http.StatusTemporaryRedirect || resp.StatusCode == http.StatusPermanentRedirect) && req.GetBody != nil {
		if _, err := req.GetBody(); err != nil {
			resp.Body.Close()
			closeBody(req.Body)
			return nil, clientError(req, resp.Request, err)
		}
	}
	return resp, nil
}

// clientError is err as http.Client.Do returns it: a *url.Error whose Op is
// the method as Client writes it ("Post") and whose URL is at's without a
// password (the lean path takes no URL with user information).
func clientError(req, at *http.Request, err error) error {
	if at == nil {
		at = req
	}
	op := "Get"
	if m := req.Method; m != "" {
		op = m[:1] + strings.ToLower(m[1:])
	}
	return &url.Error{Op: op, URL: at.URL.String(), Err: err}
}

// CloseIdleConnections closes the idle connections of both paths.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*h1Conn{}
	t.nidle = 0
	t.mu.Unlock()
	for _, s := range idle {
		for _, pc := range s {
			pc.nc.Close()
		}
	}
	t.fallback.CloseIdleConnections()
}

// eligible reports whether req may take the lean path.
func (t *h1Transport) eligible(req *http.Request) bool {
	u := req.URL
	if u == nil || u.Scheme != "http" || u.Host == "" || u.User != nil {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && req.ContentLength <= 0 {
		return false // unknown length: net/http sends it chunked
	}
	if len(req.TransferEncoding) > 0 || req.Trailer != nil {
		return false
	}
	if !plainHost(u.Host) || !plainHost(req.Host) {
		return false // net/http turns such hosts to punycode, or refuses them
	}
	h := req.Header
	if _, ok := h["Upgrade"]; ok {
		return false
	}
	if _, ok := h["Expect"]; ok {
		return false
	}
	if c, ok := h["Connection"]; ok && httpguts.HeaderValuesContainsToken(c, "upgrade") {
		return false
	}
	if proxy := t.fallback.Proxy; proxy != nil {
		if _, ok := t.noProxy.Load(u.Host); !ok {
			// http.ProxyFromEnvironment reads the environment once per
			// process and decides on the URL's scheme and host alone.
			p, err := proxy(req)
			if err != nil || p != nil {
				return false
			}
			t.noProxy.Store(u.Host, struct{}{})
		}
	}
	return true
}

// plainHost reports whether host is printable ASCII without spaces.
func plainHost(host string) bool {
	for i := 0; i < len(host); i++ {
		if c := host[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// h1Conn is one connection of the lean path. Between exchanges it sits in
// the idle pool; during one it belongs to the caller's goroutine (and to
// the response body until that ends).
type h1Conn struct {
	nc     net.Conn
	rc     syscall.RawConn // nil when nc has none: no liveness check
	br     *bufio.Reader
	bw     *bufio.Writer
	key    string
	idleAt time.Time
	stopFn func()             // interrupt, as a func value made once
	peekFn func(uintptr) bool // peekAlive's probe, made once
	peekOK bool
	peekB  [1]byte
	vals   []byte // readHeader's values buffer, reused
}

var aLongTimeAgo = time.Unix(1, 0)

// interrupt makes every blocked and later read and write on the
// connection fail at once; it runs when the request's context is done.
func (pc *h1Conn) interrupt() { pc.nc.SetDeadline(aLongTimeAgo) }

// hostKey is the dial address of an http URL's host.
func hostKey(host string) string {
	// A host ending in ":digits" (or "]:digits") carries its port.
	if i := strings.LastIndexByte(host, ':'); i >= 0 && i > strings.LastIndexByte(host, ']') {
		if i == len(host)-1 {
			return host + "80"
		}
		return host
	}
	return host + ":80"
}

func (t *h1Transport) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	if err := ctx.Err(); err != nil {
		closeBody(body)
		return nil, err
	}
	key := hostKey(req.URL.Host)
	for retried := false; ; retried = true {
		pc, reused, err := t.getConn(ctx, key)
		if err != nil {
			closeBody(body)
			return nil, err
		}
		resp, retry, err := t.exchange(ctx, pc, req, body)
		if err == nil {
			return resp, nil
		}
		// A write that failed on a reused connection means the server
		// closed it while idle and never had the whole request: it goes
		// once more. A failure after the request was written whole never
		// does (exchange).
		if !retry || !reused || retried || ctx.Err() != nil {
			return nil, err
		}
		if body != nil {
			if req.GetBody == nil {
				return nil, err
			}
			nb, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			body = nb
			if body == http.NoBody {
				body = nil
			}
		}
	}
}

func closeBody(b io.ReadCloser) {
	if b != nil {
		b.Close()
	}
}

// getConn returns a live idle connection to key, or dials one.
func (t *h1Transport) getConn(ctx context.Context, key string) (*h1Conn, bool, error) {
	for {
		pc := t.popIdle(key)
		if pc == nil {
			break
		}
		if pc.br.Buffered() == 0 && pc.peekAlive() {
			return pc, true, nil
		}
		pc.nc.Close()
	}
	nc, err := t.dialer.DialContext(ctx, "tcp", key)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, false, cerr
		}
		return nil, false, err
	}
	pc := &h1Conn{nc: nc, key: key, br: bufio.NewReaderSize(nc, h1BufSize), bw: bufio.NewWriterSize(nc, h1BufSize)}
	if sc, ok := nc.(syscall.Conn); ok {
		pc.rc, _ = sc.SyscallConn()
	}
	pc.stopFn = pc.interrupt
	pc.peekFn = pc.peekProbe
	return pc, false, nil
}

// popIdle takes the most recently used idle connection to key; it closes
// the ones idle for longer than the timeout.
func (t *h1Transport) popIdle(key string) *h1Conn {
	t.mu.Lock()
	s := t.idle[key]
	if len(s) == 0 {
		t.mu.Unlock()
		return nil
	}
	pc := s[len(s)-1]
	s[len(s)-1] = nil
	s = s[:len(s)-1]
	t.nidle--
	if time.Since(pc.idleAt) > h1IdleTimeout {
		// The stack's older connections are older still.
		old := append([]*h1Conn{pc}, s...)
		clear(s)
		t.nidle -= len(s)
		t.idle[key] = s[:0]
		t.mu.Unlock()
		for _, c := range old {
			c.nc.Close()
		}
		return nil
	}
	t.idle[key] = s
	t.mu.Unlock()
	return pc
}

// putIdle pools pc for reuse, or closes it when the pool is full.
func (t *h1Transport) putIdle(pc *h1Conn) {
	pc.idleAt = time.Now()
	t.mu.Lock()
	s := t.idle[pc.key]
	if len(s) >= h1MaxIdlePerHost || t.nidle >= h1MaxIdle {
		t.mu.Unlock()
		pc.nc.Close()
		return
	}
	t.idle[pc.key] = append(s, pc)
	t.nidle++
	if !t.sweeping {
		t.sweeping = true
		time.AfterFunc(h1IdleTimeout, t.sweep)
	}
	t.mu.Unlock()
}

// sweep closes the idle connections past the idle timeout, and schedules
// itself again while any stay idle.
func (t *h1Transport) sweep() {
	var old []*h1Conn
	now := time.Now()
	t.mu.Lock()
	for key, s := range t.idle {
		n := 0
		for n < len(s) && now.Sub(s[n].idleAt) > h1IdleTimeout {
			n++
		}
		if n == 0 {
			continue
		}
		old = append(old, s[:n]...)
		rest := append(s[:0], s[n:]...)
		clear(s[len(rest):])
		t.idle[key] = rest
		t.nidle -= n
	}
	if t.nidle > 0 {
		time.AfterFunc(h1IdleTimeout/2, t.sweep)
	} else {
		t.sweeping = false
	}
	t.mu.Unlock()
	for _, pc := range old {
		pc.nc.Close()
	}
}

// exchange writes req on pc and reads the response's head. On error pc is
// closed, and retry says that writing the request to the connection failed
// (it may go again on a fresh connection if pc was reused).
func (t *h1Transport) exchange(ctx context.Context, pc *h1Conn, req *http.Request, body io.ReadCloser) (resp *http.Response, retry bool, err error) {
	// The gateway's attempt context (a *reqctx.Ctx) takes the
	// registration in a slot of its own; any other, through
	// context.AfterFunc.
	stop := reqctx.AfterFunc(ctx, pc.stopFn)
	fail := func(err error, retry bool) (*http.Response, bool, error) {
		stop.Stop()
		pc.nc.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, false, cerr
		}
		return nil, retry, err
	}
	werr, connErr := pc.writeRequest(req, body)
	closeBody(body)
	if werr != nil {
		return fail(werr, connErr)
	}
	resp, err = pc.readResponse(req)
	if err != nil {
		// Never again after the request was written whole: the server may
		// have read it and closed without answering (net/http does not
		// retry a POST there either).
		return fail(err, false)
	}
	reuse := !resp.Close && resp.ProtoMinor == 1 && !req.Close &&
		!httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close")
	if b, ok := resp.Body.(*h1Body); ok {
		b.t, b.pc, b.stop, b.ctx, b.reuse = t, pc, stop, ctx, reuse
		return resp, false, nil
	}
	// No body: the connection is done with.
	if !stop.Stop() {
		reuse = false // the context ended: its deadline may be set
	}
	if reuse {
		t.putIdle(pc)
	} else {
		pc.nc.Close()
	}
	return resp, false, nil
}

// writeRequest writes req's head and body. connErr says the error came
// from the connection (not from the request or its body).
func (pc *h1Conn) writeRequest(req *http.Request, body io.Reader) (err error, connErr bool) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validMethod(method) {
		return fmt.Errorf("provider: invalid method %q", method), false
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("provider: invalid Host %q", host), false
	}
	uri := req.URL.RequestURI()
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("provider: invalid request URI %q", uri), false
		}
	}
	bw := pc.bw
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	ua := "Go-http-client/1.1" // as net/http
	if v, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(v) > 0 {
			ua = v[0]
		}
	}
	if ua != "" {
		if !httpguts.ValidHeaderFieldValue(ua) {
			return errors.New("provider: invalid User-Agent header value"), false
		}
		bw.WriteString("User-Agent: ")
		bw.WriteString(strings.TrimSpace(ua))
		bw.WriteString("\r\n")
	}
	if req.Close && !httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close") {
		bw.WriteString("Connection: close\r\n")
	}
	var n int64
	if body != nil {
		n = req.ContentLength
	}
	if n > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), n, 10))
		bw.WriteString("\r\n")
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("provider: invalid header name %q", k), false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("provider: invalid value for header %q", k), false
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(strings.TrimSpace(v))
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
	for n > 0 {
		if bw.Available() == 0 {
			if err := bw.Flush(); err != nil {
				return err, true
			}
		}
		buf := bw.AvailableBuffer()
		buf = buf[:min(int64(cap(buf)), n)]
		m, rerr := body.Read(buf)
		bw.Write(buf[:m])
		n -= int64(m)
		if rerr == io.EOF && n > 0 {
			return fmt.Errorf("provider: request body shorter than its ContentLength %d", req.ContentLength), false
		}
		if rerr != nil && rerr != io.EOF {
			return rerr, false
		}
	}
	if body != nil {
		var one [1]byte
		if m, _ := body.Read(one[:]); m > 0 {
			return fmt.Errorf("provider: request body longer than its ContentLength %d", req.ContentLength), false
		}
	}
	if err := bw.Flush(); err != nil {
		return err, true
	}
	return nil, false
}

func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return m != ""
}

// errMalformed is returned for a response the lean path refuses to parse;
// its connection is closed.
type errMalformed string

func (e errMalformed) Error() string { return "provider: malformed HTTP response: " + string(e) }

// readLine reads one line without its line end, counting it against
// *budget. The slice is valid until the next read.
func (pc *h1Conn) readLine(budget *int) ([]byte, error) {
	line, err := pc.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		long := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull && len(long) <= *budget {
			line, err = pc.br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	*budget -= len(line)
	if *budget < 0 {
		return nil, errMalformed("header block larger than 1 MiB")
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, nil
}

// readHeader reads header lines up to the blank line into h. The values
// are copied into pc.vals as they are read and become one string at the
// blank line, each value a substring of it: one allocation for the
// values, not one a value. A value kept past the answer (the response
// cache's Content-Type) must be cloned, or it keeps the whole block alive.
func (pc *h1Conn) readHeader(h http.Header, budget *int) error {
	type field struct {
		key        string
		start, end int
	}
	var local [16]field
	fields := local[:0]
	vals := pc.vals[:0]
	defer func() {
		if cap(vals) <= h1MaxKeptVals {
			pc.vals = vals[:0]
		}
	}()
	for {
		line, err := pc.readLine(budget)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if len(line) == 0 {
			break
		}
		i := 0
		for i < len(line) && line[i] != ':' {
			if !httpguts.IsTokenRune(rune(line[i])) {
				return errMalformed(fmt.Sprintf("header line %q", line))
			}
			i++
		}
		if i == 0 || i == len(line) {
			return errMalformed(fmt.Sprintf("header line %q", line))
		}
		v := line[i+1:]
		for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
			v = v[1:]
		}
		for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
			v = v[:len(v)-1]
		}
		for _, c := range v {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return errMalformed(fmt.Sprintf("header line %q", line))
			}
		}
		start := len(vals)
		vals = append(vals, v...)
		fields = append(fields, field{canonicalKey(line[:i]), start, len(vals)})
	}
	all := string(vals)
	var strs []string // one backing array for the usual one value per key
	for _, f := range fields {
		v := all[f.start:f.end]
		if vv, ok := h[f.key]; ok {
			h[f.key] = append(vv, v)
			continue
		}
		if cap(strs) == len(strs) {
			strs = make([]string, 0, 16)
		}
		strs = append(strs, v)
		h[f.key] = strs[len(strs)-1 : len(strs) : len(strs)]
	}
	return nil
}

// h1MaxKeptVals bounds the values buffer a connection keeps between
// responses (a larger head's is let go).
const h1MaxKeptVals = 8 << 10

// readResponse reads the status line and headers of the response to req
// (skipping 1xx responses) and frames its body.
func (pc *h1Conn) readResponse(req *http.Request) (resp *http.Response, err error) {
	budget := h1MaxHeaderBytes
	resp = &http.Response{Request: req}
	for n1xx := 0; ; n1xx++ {
		line, err := pc.readLine(&budget)
		if err != nil {
			return nil, err
		}
		if err := parseStatusLine(line, resp); err != nil {
			return nil, err
		}
		resp.Header = make(http.Header, 8)
		if err := pc.readHeader(resp.Header, &budget); err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 {
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols || resp.StatusCode < 100 || n1xx >= h1Max1xx {
			return nil, errMalformed("unexpected status " + resp.Status)
		}
	}
	h := resp.Header
	if pragma, ok := h["Pragma"]; ok && len(pragma) > 0 && pragma[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	chunked := false
	if te, ok := h["Transfer-Encoding"]; ok {
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") || resp.ProtoMinor != 1 {
			return nil, errMalformed(fmt.Sprintf("Transfer-Encoding %q", te))
		}
		if _, ok := h["Content-Length"]; ok {
			return nil, errMalformed("both Content-Length and Transfer-Encoding")
		}
		delete(h, "Transfer-Encoding")
		chunked = true
		resp.TransferEncoding = []string{"chunked"}
	}
	length := int64(-1)
	if cl, ok := h["Content-Length"]; ok {
		for _, v := range cl[1:] {
			if strings.TrimSpace(v) != strings.TrimSpace(cl[0]) {
				return nil, errMalformed(fmt.Sprintf("Content-Length %q", cl))
			}
		}
		if len(cl) > 1 {
			h["Content-Length"] = cl[:1]
		}
		if length, err = parseLength(cl[0]); err != nil {
			return nil, err
		}
	}
	conn := h["Connection"]
	hasClose := httpguts.HeaderValuesContainsToken(conn, "close")
	if resp.ProtoMinor == 0 {
		resp.Close = hasClose || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	} else if hasClose {
		delete(h, "Connection")
		resp.Close = true
	}
	if chunked {
		if tr, ok := h["Trailer"]; ok {
			delete(h, "Trailer")
			var bad string
			for _, v := range tr {
				for k := range strings.SplitSeq(v, ",") {
					if k = strings.TrimSpace(k); k == "" {
						continue
					}
					k = http.CanonicalHeaderKey(k)
					switch k {
					case "Transfer-Encoding", "Trailer", "Content-Length":
						bad = k
					}
					if resp.Trailer == nil {
						resp.Trailer = http.Header{}
					}
					resp.Trailer[k] = nil
				}
			}
			if bad != "" {
				return nil, errMalformed("trailer key " + bad)
			}
		}
	}
	code := resp.StatusCode
	switch {
	case req.Method == http.MethodHead:
		resp.ContentLength = length
		resp.Body = http.NoBody
	case code == http.StatusNoContent || code == http.StatusNotModified:
		resp.ContentLength = 0
		resp.Body = http.NoBody
	case chunked:
		resp.ContentLength = -1
		b := &h1Body{resp: resp, chunked: true}
		b.r = httputil.NewChunkedReader(pc.br)
		resp.Body = b
	case length == 0:
		resp.ContentLength = 0
		resp.Body = http.NoBody
	case length > 0:
		resp.ContentLength = length
		b := &h1Body{resp: resp}
		b.lr = io.LimitedReader{R: pc.br, N: length}
		b.r = &b.lr
		resp.Body = b
	default: // neither: the body ends when the server closes
		resp.ContentLength = -1
		resp.Close = true
		resp.Body = &h1Body{resp: resp, r: pc.br, toClose: true}
	}
	return resp, nil
}

func parseStatusLine(line []byte, resp *http.Response) error {
	if string(line) == "HTTP/1.1 200 OK" { // the usual answer's, without an allocation
		resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
		resp.Status, resp.StatusCode = "200 OK", 200
		return nil
	}
	proto, status, ok := strings.Cut(string(line), " ")
	if !ok {
		return errMalformed(fmt.Sprintf("status line %q", line))
	}
	switch proto {
	case "HTTP/1.1":
		resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	case "HTTP/1.0":
		resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.0", 1, 0
	default:
		return errMalformed(fmt.Sprintf("status line %q", line))
	}
	status = strings.TrimLeft(status, " ")
	code, _, _ := strings.Cut(status, " ")
	if len(code) != 3 || code[0] < '1' || code[0] > '9' || code[1] < '0' || code[1] > '9' || code[2] < '0' || code[2] > '9' {
		return errMalformed(fmt.Sprintf("status line %q", line))
	}
	resp.Status = status
	resp.StatusCode = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	return nil
}

// parseLength parses a Content-Length value as net/http does: digits only.
func parseLength(v string) (int64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, errMalformed("empty Content-Length")
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, errMalformed(fmt.Sprintf("Content-Length %q", v))
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, errMalformed(fmt.Sprintf("Content-Length %q", v))
	}
	return n, nil
}

// h1Body is a response body that reads from its connection's buffer. At
// its end the connection goes back to the pool when it may be reused;
// closed before its end, or after an error, the connection is closed.
type h1Body struct {
	t       *h1Transport
	pc      *h1Conn
	resp    *http.Response
	ctx     context.Context
	stop    reqctx.Stop
	r       io.Reader
	lr      io.LimitedReader
	chunked bool
	toClose bool // read to the connection's close
	reuse   bool

	state atomic.Int32 // bodyOpen, bodyEOF, bodyClosed, bodyFailed
	err   error        // the error of bodyFailed; set and read by readers
}

const (
	bodyOpen = iota
	bodyEOF
	bodyClosed
	bodyFailed
)

func (b *h1Body) Read(p []byte) (int, error) {
	switch b.state.Load() {
	case bodyEOF:
		return 0, io.EOF
	case bodyClosed:
		return 0, http.ErrBodyReadAfterClose
	case bodyFailed:
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := b.r.Read(p)
	if b.r == &b.lr {
		if err == io.EOF && b.lr.N > 0 {
			err = io.ErrUnexpectedEOF
		} else if err == nil && b.lr.N == 0 {
			err = io.EOF // as net/http: the last bytes come with EOF
		}
	}
	if err == io.EOF && b.chunked {
		if terr := b.readTrailer(); terr != nil {
			err = terr
		}
	}
	if err == nil {
		return n, nil
	}
	if err == io.EOF {
		b.finish(!b.toClose && b.reuse)
		return n, io.EOF
	}
	if cerr := b.ctx.Err(); cerr != nil {
		err = cerr
	}
	if b.state.CompareAndSwap(bodyOpen, bodyFailed) {
		b.err = err
		b.stop.Stop()
		b.pc.nc.Close()
	}
	return n, err
}

// readTrailer consumes a chunked body's trailer section to its blank line
// and sets the trailers read in resp.Trailer.
func (b *h1Body) readTrailer() error {
	budget := h1MaxHeaderBytes
	tr := http.Header{}
	if err := b.pc.readHeader(tr, &budget); err != nil {
		return err
	}
	if len(tr) > 0 {
		if b.resp.Trailer == nil {
			b.resp.Trailer = http.Header{}
		}
		for k, v := range tr {
			b.resp.Trailer[k] = v
		}
	}
	return nil
}

// finish ends a body read to its end.
func (b *h1Body) finish(reuse bool) {
	if !b.state.CompareAndSwap(bodyOpen, bodyEOF) {
		return // Close got there first and closed the connection
	}
	if !b.stop.Stop() {
		reuse = false // the context ended: its deadline may be set
	}
	if reuse {
		b.t.putIdle(b.pc)
	} else {
		b.pc.nc.Close()
	}
}

// Close before the end closes the connection: what is left unread would
// have to be read before the next response.
func (b *h1Body) Close() error {
	if b.state.CompareAndSwap(bodyOpen, bodyClosed) {
		b.stop.Stop()
		b.pc.nc.Close()
	}
	return nil
}

// canonicalKey is textproto.CanonicalMIMEHeaderKey of a valid token,
// without an allocation for common keys.
func canonicalKey(k []byte) string {
	var buf [64]byte
	if len(k) > len(buf) {
		return http.CanonicalHeaderKey(string(k))
	}
	c := buf[:len(k)]
	upper := true
	for i, ch := range k {
		if upper && 'a' <= ch && ch <= 'z' {
			ch -= 'a' - 'A'
		} else if !upper && 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		c[i] = ch
		upper = ch == '-'
	}
	if s, ok := commonKeys[string(c)]; ok {
		return s
	}
	return string(c)
}

var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Accept-Ranges", "Access-Control-Allow-Origin", "Age",
		"Alt-Svc", "Cache-Control", "Cf-Cache-Status", "Cf-Ray", "Connection", "Content-Disposition",
		"Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "Date", "Etag",
		"Expires", "Keep-Alive", "Last-Modified", "Location", "Openai-Model", "Openai-Organization",
		"Openai-Processing-Ms", "Openai-Version", "Pragma", "Request-Id", "Retry-After", "Server",
		"Set-Cookie", "Strict-Transport-Security", "Trailer", "Transfer-Encoding", "Vary", "Via",
		"X-Content-Type-Options", "X-Ratelimit-Limit-Requests", "X-Ratelimit-Limit-Tokens",
		"X-Ratelimit-Remaining-Requests", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Requests",
		"X-Ratelimit-Reset-Tokens", "X-Request-Id",
	} {
		m[k] = k
	}
	return m
}()
