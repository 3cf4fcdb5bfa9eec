package server

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// Each server owns its upstream connection pools: two servers in one process
// (tests, replicas) never hand each other a connection, and one server keeps
// its pools across reloads.
func TestServersOwnTheirConnectionPools(t *testing.T) {
	var dials, closed atomic.Int64
	up := httptest.NewUnstartedServer(mockupstream.New(mockupstream.Options{NoRecord: true}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			dials.Add(1)
		case http.StateClosed:
			closed.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	yaml := strings.ReplaceAll(mockConfig, "{{UP}}", up.URL)
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	newServer := func() (*Server, string) {
		srv, err := New(cfg, Options{Logger: testLogger})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv.Handler())
		t.Cleanup(ts.Close)
		t.Cleanup(srv.Close)
		return srv, ts.URL
	}
	chat := func(gw string) {
		t.Helper()
		resp, b := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != 200 {
			t.Fatalf("chat: %d %s", resp.StatusCode, b)
		}
	}

	a, aURL := newServer()
	_, bURL := newServer()
	chat(aURL)
	if n := dials.Load(); n != 1 {
		t.Fatalf("first request dialed %d connections", n)
	}
	chat(bURL) // A's idle connection is not B's to take
	if n := dials.Load(); n != 2 {
		t.Fatalf("a second server's request: %d connections in all, want 2 (one per server)", n)
	}

	// A reload rebuilds the routing table, not the pools. A request racing
	// the return of the previous one's connection may dial anew, so the
	// bound is loose; a pool per reload would dial on every round.
	const rounds = 5
	for range rounds {
		if err := a.Reload(cfg); err != nil {
			t.Fatal(err)
		}
		chat(aURL)
	}
	if n := dials.Load() - 2; n >= rounds {
		t.Errorf("%d reloads and requests dialed %d connections: the pool did not survive the reloads", rounds, n)
	}

	// Closing a server closes its pools' idle connections (B's stays).
	before, aConns := closed.Load(), dials.Load()-1
	a.Close()
	if _, ok := within(10*time.Second, func() bool { return closed.Load()-before >= aConns }); !ok {
		t.Fatalf("after Close, %d of server A's %d upstream connections closed", closed.Load()-before, aConns)
	}
}
