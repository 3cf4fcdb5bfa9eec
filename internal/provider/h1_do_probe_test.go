package provider

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countedBody records how often the request's body was closed.
type countedBody struct {
	io.ReadCloser
	closed *atomic.Int32
}

func (b countedBody) Close() error { b.closed.Add(1); return b.ReadCloser.Close() }

// doProbeUpstream answers by path: redirects of every kind (one with a
// Location that does not parse), a hang until the client goes, and
// otherwise what it saw of the request.
func doProbeUpstream(arrived chan<- struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/found":
			w.Header().Set("Location", "/ok")
			w.WriteHeader(http.StatusFound)
			_, _ = io.WriteString(w, "moved")
		case "/temporary":
			w.Header().Set("Location", "/ok")
			w.WriteHeader(http.StatusTemporaryRedirect)
		case "/permanent":
			w.Header().Set("Location", "http://elsewhere.invalid/ok")
			w.WriteHeader(http.StatusPermanentRedirect)
		case "/badlocation":
			w.Header()["Location"] = []string{"http://[::1"}
			w.WriteHeader(http.StatusSeeOther)
		case "/badlocation307":
			w.Header()["Location"] = []string{"http://[::1"}
			w.WriteHeader(http.StatusTemporaryRedirect)
		case "/hang": // until the client goes (a minute at most)
			if arrived != nil {
				arrived <- struct{}{}
			}
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
		default:
			fmt.Fprintf(w, "%s %s te=%v expect=%q body=%q", r.Proto, r.Method, r.TransferEncoding, r.Header.Get("Expect"), b)
		}
	})
}

// TestProbeTargetDoMatchesClientDoEverywhere: Target.Do (the lean path
// called directly where it applies) answers every request as Client.Do on
// the same pooled client does: plain and TLS (HTTP/2-only) upstreams, a
// configured proxy, bodies of unknown length and Expect (which the lean
// path does not take), 307/308 with and without GetBody and with a
// GetBody that fails, a Location that does not parse, a context cancelled
// while the upstream is silent. The same status, body, Location, error
// text and type, and the request's body closed either way.
func TestProbeTargetDoMatchesClientDoEverywhere(t *testing.T) {
	arrived := make(chan struct{}, 1)
	plain := httptest.NewServer(doProbeUpstream(arrived))
	defer plain.Close()
	h2 := httptest.NewUnstartedServer(doProbeUpstream(arrived))
	h2.EnableHTTP2 = true // NextProtos ["h2"]: HTTP/2 only
	h2.StartTLS()
	defer h2.Close()
	var proxied atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "via proxy %s %s body=%q", r.Method, r.URL, b)
	}))
	defer proxy.Close()

	pool := NewClients()
	defer pool.CloseIdle()
	direct := &Target{client: pool.For("openai")}
	lean := direct.client.Transport.(*h1Transport)
	roots := x509.NewCertPool()
	roots.AddCert(h2.Certificate())
	lean.fallback.TLSClientConfig = &tls.Config{RootCAs: roots}

	proxyPool := NewClients()
	defer proxyPool.CloseIdle()
	viaProxy := &Target{client: proxyPool.For("openai")}
	pu, _ := url.Parse(proxy.URL)
	viaProxy.client.Transport.(*h1Transport).fallback.Proxy = http.ProxyURL(pu)

	type answer struct {
		status   int
		body     string
		loc      string
		err      string
		urlErr   bool
		canceled bool
		closed   bool
	}
	type shape struct {
		name string
		edit func(r *http.Request)
	}
	known := shape{"known length", nil}
	shapes := []shape{
		known,
		{"unknown length", func(r *http.Request) { r.Body, r.ContentLength, r.GetBody = io.NopCloser(r.Body), -1, nil }},
		{"no GetBody", func(r *http.Request) { r.GetBody = nil }},
		{"GetBody fails", func(r *http.Request) {
			r.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("no second body") }
		}},
		{"Expect", func(r *http.Request) { r.Header.Set("Expect", "100-continue") }},
	}
	send := func(do func(*http.Request) (*http.Response, error), u string, s shape, cancel bool) answer {
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader([]byte(`{"a":1}`)))
		if err != nil {
			t.Fatal(err)
		}
		if s.edit != nil {
			s.edit(req)
		}
		var closed atomic.Int32
		req.Body = countedBody{req.Body, &closed}
		if cancel {
			go func() {
				select {
				case <-arrived:
				case <-time.After(time.Minute):
					t.Errorf("%s: the upstream never got the request", u)
				}
				stop()
			}()
		}
		// net/http's HTTP/2 transport closes the body on a goroutine of
		// its own: closed is waited for, a minute at most.
		wasClosed := func() bool {
			for end := time.Now().Add(time.Minute); closed.Load() == 0 && time.Now().Before(end); {
				time.Sleep(time.Millisecond)
			}
			return closed.Load() > 0
		}
		resp, err := do(req)
		if err != nil {
			var ue *url.Error
			return answer{err: err.Error(), urlErr: errors.As(err, &ue), canceled: errors.Is(err, context.Canceled), closed: wasClosed()}
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return answer{status: resp.StatusCode, body: string(b), loc: resp.Header.Get("Location"), closed: wasClosed()}
	}
	paths := []string{"/ok", "/found", "/temporary", "/permanent", "/badlocation", "/badlocation307"}
	for _, base := range []string{plain.URL, h2.URL} {
		for _, p := range paths {
			for _, s := range shapes {
				want := send(direct.client.Do, base+p, s, false)
				got := send(direct.Do, base+p, s, false)
				if got != want {
					t.Errorf("%s%s, %s: Target.Do %+v, Client.Do %+v", base, p, s.name, got, want)
				}
				if !got.closed {
					t.Errorf("%s%s, %s: the request's body was never closed", base, p, s.name)
				}
				if base == plain.URL && p == "/ok" && s.name == known.name && lean.idleCount() == 0 {
					t.Error("no lean connection pooled: Target.Do did not take the lean path")
				}
			}
		}
		want := send(direct.client.Do, base+"/hang", known, true)
		got := send(direct.Do, base+"/hang", known, true)
		if got != want || !got.canceled || !got.urlErr {
			t.Errorf("%s/hang cancelled: Target.Do %+v, Client.Do %+v", base, got, want)
		}
	}
	// The answers above are worth comparing only if both paths ran: the
	// lean one pooled a plain connection (above), the TLS upstream h2.
	if a := send(direct.Do, h2.URL+"/ok", known, false); !strings.HasPrefix(a.body, "HTTP/2.0 POST") {
		t.Errorf("the HTTP/2-only upstream through Target.Do: %+v", a)
	}

	// A configured proxy: every request goes through it, never straight
	// to the (unresolvable) upstream.
	for _, s := range shapes {
		want := send(viaProxy.client.Do, "http://upstream.invalid/v1/x", s, false)
		got := send(viaProxy.Do, "http://upstream.invalid/v1/x", s, false)
		if got != want || !strings.HasPrefix(got.body, "via proxy POST http://upstream.invalid/v1/x") {
			t.Errorf("proxied, %s: Target.Do %+v, Client.Do %+v", s.name, got, want)
		}
	}
	if n := proxied.Load(); n != int64(2*len(shapes)) {
		t.Errorf("the proxy saw %d requests, want %d", n, 2*len(shapes))
	}
}

// TestProbeTargetDoEnvProxy: with HTTP_PROXY in the environment (read once
// per process, so in a child process of its own), Target.Do to a plain
// http:// upstream goes through the proxy.
func TestProbeTargetDoEnvProxy(t *testing.T) {
	if os.Getenv("TOLLGATE_PROBE_ENV_PROXY") != "" {
		pool := NewClients()
		defer pool.CloseIdle()
		target := &Target{client: pool.For("openai")}
		req, _ := http.NewRequest(http.MethodPost, "http://upstream.invalid/v1/chat/completions", strings.NewReader("{}"))
		resp, err := target.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "via proxy" {
			t.Fatalf("answer %q, not the proxy's", b)
		}
		return
	}
	var proxied atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Host == "upstream.invalid" {
			proxied.Add(1)
		}
		_, _ = io.WriteString(w, "via proxy")
	}))
	defer proxy.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestProbeTargetDoEnvProxy$", "-test.count=1")
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "REQUEST_METHOD":
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, "TOLLGATE_PROBE_ENV_PROXY=1", "HTTP_PROXY="+proxy.URL, "http_proxy="+proxy.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if proxied.Load() != 1 {
		t.Fatalf("the proxy saw %d requests for the upstream, want 1\n%s", proxied.Load(), out)
	}
}

// TestProbeTargetDoClientTimeout: a client with a Timeout keeps it through
// Target.Do (the direct call is only for the pool's client, which has
// none): a silent upstream is cut with Client's timeout error.
func TestProbeTargetDoClientTimeout(t *testing.T) {
	arrived := make(chan struct{}, 1)
	up := httptest.NewServer(doProbeUpstream(arrived))
	defer up.Close()
	pool := NewClients()
	defer pool.CloseIdle()
	c := *pool.For("openai")
	c.Timeout = 200 * time.Millisecond
	target := &Target{client: &c}
	req, _ := http.NewRequest(http.MethodPost, up.URL+"/hang", strings.NewReader("{}"))
	resp, err := target.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("no error from a silent upstream past the client's Timeout")
	}
	var ue *url.Error
	// Client.Do says "Client.Timeout exceeded" when its timer fires before
	// the request's context (which carries the same deadline) is seen done.
	if !errors.As(err, &ue) || !ue.Timeout() {
		t.Fatalf("error %v, want a timeout", err)
	}
}

// TestProbeTargetDoReusesConnections: requests through Target.Do, a kept
// redirect among them, read to their end, share one connection.
func TestProbeTargetDoReusesConnections(t *testing.T) {
	up, conns := countingServer(t, doProbeUpstream(nil))
	pool := NewClients()
	defer pool.CloseIdle()
	target := &Target{client: pool.For("openai")}
	for i, p := range []string{"/ok", "/found", "/ok", "/temporary", "/ok"} {
		req, _ := http.NewRequest(http.MethodPost, up.URL+p, strings.NewReader(`{"n":1}`))
		resp, err := target.Do(req)
		if err != nil {
			t.Fatalf("request %d (%s): %v", i, p, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for five requests in turn, want 1", n)
	}
}
