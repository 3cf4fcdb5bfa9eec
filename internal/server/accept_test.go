package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store"
)

// openConns reports the connections open on e's main listener (-1 before
// it serves).
func openConns(e *spendEnv) int64 {
	g := e.srv.gate.Load()
	if g == nil {
		return -1
	}
	n, _ := g.Open()
	return n
}

// closeIdle closes the default client's idle connections (its transport is
// the package's recorder, around http.DefaultTransport).
func closeIdle() { http.DefaultTransport.(*http.Transport).CloseIdleConnections() }

// oneConnClient is a client whose requests each use a new connection; a
// request not answered within a minute fails (past the bound the answer
// is immediate; without the bound it would be held with the others).
func oneConnClient() *http.Client {
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
}

// activeHolder opens a connection to addr whose inference request is in
// the handler, its body still arriving: it holds a place under the bound
// (it is active, not reaped) until the test ends.
func activeHolder(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-1234\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConnectionsPastTheBoundAreRefusedAtAccept: with
// max_client_connections 2 and two inference requests held by a slow
// upstream, a new connection carrying an inference request is answered
// the canned 503 (parsed by a real client: no reset), and the upstream,
// the rate limits and the spend log never hear of it; health and metrics
// are still served on new connections; once the held requests finish and
// their connections close, the count returns to 0 and requests pass again.
func TestConnectionsPastTheBoundAreRefusedAtAccept(t *testing.T) {
	up, release, st, e := heldGateway(t, "max_client_connections: 2")
	key := e.newKey(t, `{"max_budget": 1, "rpm_limit": 3}`)
	waitOpen := func(want int64) {
		t.Helper()
		if _, ok := within(time.Minute, func() bool { return openConns(e) == want }); !ok {
			t.Fatalf("connections open: %d, want %d", openConns(e), want)
		}
	}
	// newKey's connections close: the count starts from 0.
	closeIdle()
	waitOpen(0)

	held := make(chan int, 2)
	for range 2 {
		go func() {
			req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(chat3))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := oneConnClient().Do(req)
			if err != nil {
				held <- -1
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			held <- resp.StatusCode
		}()
	}
	if _, ok := within(time.Minute, func() bool { return up.arrived.Load() == 2 }); !ok {
		t.Fatalf("the two requests did not reach the upstream: %d arrived", up.arrived.Load())
	}
	waitOpen(2)

	// Past the bound: the canned answer, read by a real client, each time.
	body := strings.Replace(chat3, "one two three four", strings.Repeat("word ", 20000), 1)
	for i := range 20 {
		req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := oneConnClient().Do(req)
		if err != nil {
			t.Fatalf("request %d past the bound: %v (want the 503, not a reset)", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("request %d past the bound: reading the answer: %v", i, err)
		}
		var out struct {
			Error struct{ Type, Code, Message string }
		}
		if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(b, &out) != nil || out.Error.Type != "overloaded_error" || out.Error.Code != "overloaded" {
			t.Fatalf("request %d past the bound: %d %s, want 503 overloaded_error", i, resp.StatusCode, b)
		}
		if resp.Header.Get("Retry-After") != "1" || !resp.Close || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("request %d past the bound: headers %v (close %v), want Retry-After 1, Connection: close, JSON", i, resp.Header, resp.Close)
		}
	}
	// Health, management and metrics are served past the bound.
	for _, path := range []string{"/health/liveliness", "/health/readiness", "/key/info?key=" + key} {
		req, _ := http.NewRequest("GET", e.url+path, nil)
		req.Header.Set("Authorization", "Bearer sk-1234")
		resp, err := oneConnClient().Do(req)
		if err != nil {
			t.Fatalf("GET %s past the bound: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s past the bound: %d %s", path, resp.StatusCode, b)
		}
	}
	req, _ := http.NewRequest("GET", e.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer sk-1234")
	resp, err := http.DefaultClient.Do(req) // keep-alive asked; the side server closes it
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `tollgate_requests_shed_total{reason="connections"} 20`) ||
		!strings.Contains(string(metrics), "tollgate_client_connections 2") || !strings.Contains(string(metrics), "tollgate_client_connections_limit 2") {
		t.Errorf("metrics lack the 20 connections refused or the connection gauges:\n%s", grepLines(metrics, "connections"))
	}
	if n := up.arrived.Load(); n != 2 {
		t.Fatalf("a refused request reached the upstream: %d arrived", n)
	}

	release()
	for range 2 {
		if code := <-held; code != http.StatusOK {
			t.Fatalf("a held request: %d", code)
		}
	}
	closeIdle()
	waitOpen(0)
	// Below the bound requests pass, within the key's rpm of 3: the
	// refused ones took no ticket.
	if resp, out := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != http.StatusOK {
		t.Fatalf("below the bound: %d %v", resp.StatusCode, out)
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	_, total, err := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	if err != nil {
		t.Fatal(err)
	}
	if total != 3 {
		t.Fatalf("%d spend rows, want 3 (the refused requests book nothing)", total)
	}
}

// TestSlowClientsCannotBlockAccept: past the bound, hundreds of clients
// that send a request and never read, and others that send nothing, do
// not hold up the accept loop (a health probe and a refused request on new
// connections are still answered) and do not cost a goroutine each.
func TestSlowClientsCannotBlockAccept(t *testing.T) {
	yaml := strings.ReplaceAll(pricedConfig, "{{UP}}", "http://127.0.0.1:1") + "  max_client_connections: 1\n  request_header_timeout: 300\n  request_body_timeout: 300\n"
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveWith(t, cfg, Options{})
	// One connection whose request body is still arriving holds the only
	// place (one that sent nothing would be reaped at the bound).
	activeHolder(t, strings.TrimPrefix(e.url, "http://"))
	if _, ok := within(time.Minute, func() bool { return openConns(e) == 1 }); !ok {
		t.Fatal("the holding connection was not counted")
	}
	base := runtime.NumGoroutine()
	var slow []net.Conn
	defer func() {
		for _, c := range slow {
			c.Close()
		}
	}()
	dial := func(n int, send bool) {
		for i := range n {
			c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			if send {
				_, _ = io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 8000))
			}
			slow = append(slow, c)
		}
	}
	check := func(phase string, paths ...string) {
		t.Helper()
		for _, path := range paths {
			method, want := "GET", http.StatusOK
			if strings.HasPrefix(path, "/v1/") {
				method, want = "POST", http.StatusServiceUnavailable
			}
			req, _ := http.NewRequest(method, e.url+path, strings.NewReader(chat3))
			resp, err := oneConnClient().Do(req)
			if err != nil {
				t.Fatalf("%s: %s %s: %v", phase, method, path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Fatalf("%s: %s %s: %d, want %d", phase, method, path, resp.StatusCode, want)
			}
		}
		if extra := runtime.NumGoroutine() - base; extra > maxLingering+maxSniffing+16 {
			t.Fatalf("%s: %d goroutines more; the gate's are bounded by %d", phase, extra, maxLingering+maxSniffing)
		}
	}
	// Clients that send a request past the bound and never read the answer
	// nor close: refused, lingering on a bounded number of goroutines.
	dial(400, true)
	check("400 clients that never read", "/health/liveliness", "/v1/chat/completions")
	// Clients that send nothing: at most maxSniffing wait for their first
	// bytes; the rest are refused at once.
	dial(200, false)
	check("and 200 that send nothing", "/v1/chat/completions")
}

// TestShedClosesConnectionsWhileLowered: a request shed under a bound the
// CPU or memory signal lowered is answered Connection: close (its client
// does not keep the connection idle here); one shed at the configured bound
// is not.
func TestShedClosesConnectionsWhileLowered(t *testing.T) {
	tests := []struct {
		name       string
		max, limit int64
		wantClose  bool
	}{
		{"configured bound", 0, 0, false},
		{"lowered bound", 10, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShedder(tt.max, false, func(string) {})
			s.limit.Store(tt.limit)
			w := httptest.NewRecorder()
			s.wrap(http.NotFoundHandler()).ServeHTTP(w, httptest.NewRequest("POST", "/v1/chat/completions", nil))
			if w.Code != http.StatusServiceUnavailable {
				t.Fatalf("status %d, want 503", w.Code)
			}
			if got := w.Header().Get("Connection") == "close"; got != tt.wantClose {
				t.Fatalf("Connection: close %v, want %v", got, tt.wantClose)
			}
		})
	}
}

// TestHealthListener: the health routes and /metrics answer on the health
// listener (SEPARATE_HEALTH_APP) while the main port is past its bound;
// inference routes are not served there.
func TestHealthListener(t *testing.T) {
	yaml := strings.ReplaceAll(pricedConfig, "{{UP}}", "http://127.0.0.1:1") + "  max_client_connections: 1\n  request_header_timeout: 300\n  request_body_timeout: 300\n"
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, srv.HealthActor(hln)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	e := &spendEnv{url: "http://" + ln.Addr().String(), srv: srv}
	holder := activeHolder(t, ln.Addr().String())
	defer holder.Close() // before the shutdown, which waits for its request
	if _, ok := within(time.Minute, func() bool { return openConns(e) == 1 }); !ok {
		t.Fatal("the holding connection was not counted")
	}
	get := func(method, url string) int {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(chat3))
		req.Header.Set("Authorization", "Bearer sk-1234")
		resp, err := oneConnClient().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("POST", e.url+"/v1/chat/completions"); code != http.StatusServiceUnavailable {
		t.Fatalf("main port past its bound: %d, want 503", code)
	}
	h := "http://" + hln.Addr().String()
	for _, path := range []string{"/health/liveliness", "/health/liveness", "/health/readiness", "/metrics"} {
		if code := get("GET", h+path); code != http.StatusOK {
			t.Errorf("GET %s on the health listener: %d", path, code)
		}
	}
	if code := get("POST", h+"/v1/chat/completions"); code == http.StatusOK || code == http.StatusServiceUnavailable {
		t.Errorf("POST /v1/chat/completions on the health listener: %d, want it not served", code)
	}
}
