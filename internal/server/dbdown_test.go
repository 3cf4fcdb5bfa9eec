package server

import (
	"context"
	"io"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// tcpProxy forwards a loopback port to target and can be cut and restored,
// to play a database restart without touching the real server.
type tcpProxy struct {
	target, addr string
	mu           sync.Mutex
	ln           net.Listener
	conns        []net.Conn
}

func newProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
}

// cut closes the listener and every connection: the database is "down".
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// restore listens again on the same port: the database is back.
func (p *tcpProxy) restore(t *testing.T) {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln)
}

// TestDatabaseOutage: with PostgreSQL unreachable, known keys keep working
// from the cache, unknown keys get 503 (not 401), and the spend of requests
// served meanwhile reaches the database once it is back.
func TestDatabaseOutage(t *testing.T) {
	pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if pg == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping the database-outage test")
	}
	u, _ := url.Parse(pg)
	proxy := newProxy(t, u.Host)
	u.Host = proxy.addr
	st := storetest.OpenPostgres(t, u.String())

	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	url, srv := serveSrv(t, cfg, Options{Store: st, ResyncInterval: 50 * time.Millisecond})
	if code, body := send(t, url+"/key/generate", "sk-1234", `{"key": "sk-known-before-outage"}`); code != 200 {
		t.Fatal(code, body)
	}

	proxy.cut()
	if _, ok := within(3*time.Second, func() bool { return srv.storeDown.Load() }); !ok {
		t.Fatal("the outage was not noticed")
	}
	for range 5 {
		if code, body := send(t, url+"/v1/chat/completions", "sk-known-before-outage", chat3); code != 200 {
			t.Fatalf("a known key during the outage: %d %s", code, body)
		}
	}
	code, body := send(t, url+"/v1/chat/completions", "sk-never-seen-key", chat3)
	if code != 503 || !strings.Contains(body, "database is unreachable") {
		t.Fatalf("an unknown key during the outage: %d %s", code, body)
	}

	proxy.restore(t)
	if _, ok := within(10*time.Second, func() bool {
		_, total, err := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha("sk-known-before-outage")})
		return err == nil && total == 5
	}); !ok {
		t.Fatal("the spend of the outage never reached the database")
	}
	if code, _ := send(t, url+"/v1/chat/completions", "sk-never-seen-key", chat3); code != 401 {
		t.Fatalf("an unknown key after the outage: %d, want 401", code)
	}
}
