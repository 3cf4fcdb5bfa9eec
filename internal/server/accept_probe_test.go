package server

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// TestProbeSlowConnectionsDoNotHoldTheBound: connections that sent nothing,
// or only part of a request line (slow-loris, or a proxy's pre-opened
// connections), must not keep the bound full for the request header
// timeout: at the bound they are closed like idle keep-alive connections,
// and a client's inference request is then admitted and served. Before the
// fix only StateIdle connections were reaped, so two such connections
// refused every inference request for as long as they were held.
func TestProbeSlowConnectionsDoNotHoldTheBound(t *testing.T) {
	up := &holdingUpstream{release: make(chan struct{})}
	close(up.release)
	hs := httptest.NewServer(up)
	t.Cleanup(hs.Close)
	yaml := strings.ReplaceAll(pricedConfig, "{{UP}}", hs.URL) + "  max_client_connections: 2\n  request_header_timeout: 300\n"
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveWith(t, cfg, Options{Store: sqliteStore(t)})
	key := e.newKey(t, `{}`)
	closeIdle()
	if _, ok := within(time.Minute, func() bool { return openConns(e) == 0 }); !ok {
		t.Fatalf("connections open: %d, want 0", openConns(e))
	}
	addr := strings.TrimPrefix(e.url, "http://")
	for _, first := range []string{"", "POST /v1/chat/comp"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if first != "" {
			if _, err := io.WriteString(c, first); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, ok := within(time.Minute, func() bool { return openConns(e) == 2 }); !ok {
		t.Fatalf("the slow connections were not counted: %d open", openConns(e))
	}
	last := 0
	if _, ok := within(time.Minute, func() bool {
		req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(chat3))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := oneConnClient().Do(req)
		if err != nil {
			t.Fatalf("request at the bound: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		last = resp.StatusCode
		return last == http.StatusOK
	}); !ok {
		t.Fatalf("an inference request at the bound held by slow connections: %d for a minute, want 200", last)
	}
}

// TestProbeEarlyAnswerIsNotReset: below the bound a connection is served as
// before the bound existed. net/http answering a request whose large body
// it did not read (here a 401) half-closes the connection after the answer
// and waits before closing, so that the client reads the answer and an EOF
// rather than a reset; it can only do that on a conn with CloseWrite, which
// the gate's wrapper hid.
func TestProbeEarlyAnswerIsNotReset(t *testing.T) {
	yaml := strings.ReplaceAll(pricedConfig, "{{UP}}", "http://127.0.0.1:1") + "  max_client_connections: 100\n"
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveWith(t, cfg, Options{})
	c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n"+strings.Repeat("x", 1<<20)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer: %v after %q (want the answer, then EOF)", err, b)
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 401") {
		t.Fatalf("answer %q, want 401", b)
	}
}
