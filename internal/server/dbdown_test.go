package server

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/netsim"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// TestDatabaseOutage: with PostgreSQL unreachable, known keys keep working
// from the cache, unknown keys get 503 (not 401), and the spend of requests
// served meanwhile reaches the database once it is back.
func TestDatabaseOutage(t *testing.T) {
	proxy, st, url, srv := outageGateway(t)
	if code, body := send(t, url+"/key/generate", "sk-1234", `{"key": "sk-known-before-outage"}`); code != 200 {
		t.Fatal(code, body)
	}

	proxy.Cut()
	if _, ok := within(30*time.Second, func() bool { return srv.storeDown.Load() }); !ok {
		t.Fatal("the outage was not noticed")
	}
	if code, body := send(t, url+"/key/generate", "sk-1234", `{}`); code != 503 {
		t.Fatalf("a management call during the outage: %d %s, want 503", code, body)
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

	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	if _, ok := within(10*time.Second, func() bool {
		_, total, err := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha("sk-known-before-outage")})
		return err == nil && total == 5
	}); !ok {
		t.Fatal("the spend of the outage never reached the database")
	}
	if _, ok := within(30*time.Second, func() bool { c, _ := send(t, url+"/v1/chat/completions", "sk-never-seen-key", chat3); return c == 401 }); !ok {
		t.Fatal("unknown keys still get 503 30 s after the database came back")
	}
}

// outageGateway serves a gateway on PostgreSQL through a netsim proxy.
func outageGateway(t *testing.T) (*netsim.Proxy, store.Store, string, *Server) {
	t.Helper()
	pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if pg == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping the database-outage test")
	}
	u, _ := url.Parse(pg)
	proxy, err := netsim.NewProxy(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Cut)
	u.Host = proxy.Addr()
	st := storetest.OpenPostgres(t, u.String())

	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	t.Cleanup(up.Close)
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	gw, srv := serveSrv(t, cfg, Options{Store: st, ResyncInterval: 50 * time.Millisecond})
	return proxy, st, gw, srv
}

// TestDatabaseBlackHole: a PostgreSQL that accepts connections and never
// answers makes management calls fail with 503 within the store's deadline
// (not hang), while known keys keep serving from memory; once it answers
// again, the spend of the requests served meanwhile reaches it.
func TestDatabaseBlackHole(t *testing.T) {
	proxy, st, url, _ := outageGateway(t)
	if code, body := send(t, url+"/key/generate", "sk-1234", `{"key": "sk-known-before-hole"}`); code != 200 {
		t.Fatal(code, body)
	}

	// The store's bound on calls without a deadline, shortened from its 5 s
	// default: each management call below waits that long for the black
	// hole, and four of them took 20 s of the package's time. What is shown
	// is the same: bounded by the store, not hanging.
	db := st.(*sqlstore.DB)
	const bound = 500 * time.Millisecond
	db.SetTimeout(bound)
	proxy.BlackHole()
	client := &http.Client{Timeout: 60 * time.Second} // the old code hung here
	tests := []struct{ method, path, body string }{
		{"POST", "/key/generate", `{}`},
		{"GET", "/key/info?key=sk-known-before-hole", ""},
		{"POST", "/user/new", `{"user_id": "u-in-hole"}`},
		{"GET", "/spend/logs", ""},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, url+tt.path, strings.NewReader(tt.body))
		req.Header.Set("Authorization", "Bearer sk-1234")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != 503 || !strings.Contains(string(b), `"type":"api_error"`) {
			t.Errorf("%s %s into the black hole: %d %s", tt.method, tt.path, resp.StatusCode, b)
		}
		// The store's deadline, with room for a busy machine.
		if took > 20*time.Second {
			t.Errorf("%s %s took %v", tt.method, tt.path, took)
		}
		t.Logf("%s %s: %d after %v", tt.method, tt.path, resp.StatusCode, took.Round(time.Millisecond))
	}
	for range 5 {
		if code, body := send(t, url+"/v1/chat/completions", "sk-known-before-hole", chat3); code != 200 {
			t.Fatalf("a known key in the black hole: %d %s", code, body)
		}
	}

	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	db.SetTimeout(0) // the default again
	if _, ok := within(90*time.Second, func() bool {
		_, total, err := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha("sk-known-before-hole")})
		return err == nil && total == 5
	}); !ok {
		t.Fatal("the spend served in the black hole never reached the database")
	}
}

// TestRedisBlackHole: a Redis that accepts connections and never answers
// costs requests at most their admission and budget deadlines (they are
// served, limited and held locally), and an operator's spend edit, which is
// passed on to Redis with the request's own context, is bounded by the
// client's socket timeouts (rscript.Dial) instead of hanging.
func TestRedisBlackHole(t *testing.T) {
	redisURL := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if redisURL == "" {
		t.Skip("TOLLGATE_TEST_REDIS_URL is not set: skipping the Redis black-hole test")
	}
	u, _ := url.Parse(redisURL)
	proxy, err := netsim.NewProxy(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Cut)
	u.Host = proxy.Addr()
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	t.Cleanup(up.Close)
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL)+"  redis_url: "+u.String()+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	gw, srv := serveSrv(t, cfg, Options{Store: sqliteStore(t), RedisPrefix: "hole-" + strconv.FormatInt(time.Now().UnixNano(), 36)})
	if code, body := send(t, gw+"/key/generate", "sk-1234", `{"key": "sk-redis-hole", "max_budget": 10, "rpm_limit": 1000}`); code != 200 {
		t.Fatal(code, body)
	}
	// Before the black hole, the replica on Redis: its heartbeat answered
	// (it knows how many replicas share a budget) and a request served.
	// Both are waited for, not timed: on a busy machine a hold may miss its
	// 500 ms deadline and fall back for that request, and one that falls
	// back before the first heartbeat answered spends nothing offline (503
	// budget_unavailable, retried here; it books nothing).
	if _, ok := within(time.Minute, func() bool { return srv.shared.Alive() >= 1 && !srv.limits.Limiter.Degraded() }); !ok {
		t.Fatalf("the replica is not on Redis after a minute: %d alive, degraded %v", srv.shared.Alive(), srv.limits.Limiter.Degraded())
	}
	var code int
	var body string
	if _, ok := within(time.Minute, func() bool {
		code, body = send(t, gw+"/v1/chat/completions", "sk-redis-hole", chat3)
		return code != 503 || !strings.Contains(body, "budget_unavailable")
	}); !ok || code != 200 {
		t.Fatalf("before the black hole: %d %s", code, body)
	}

	proxy.BlackHole()
	client := &http.Client{Timeout: 60 * time.Second}
	do := func(path, body string, key string) (int, string, time.Duration) {
		req, _ := http.NewRequest("POST", gw+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b), time.Since(start)
	}
	var took time.Duration
	for i := range 5 {
		code, body, took = do("/v1/chat/completions", chat3, "sk-redis-hole")
		if code != 200 {
			t.Fatalf("request %d in the Redis black hole: %d %s", i, code, body)
		}
		// Admission (500 ms), the hold (500 ms) and the settle (2 s) at
		// most, with room for a busy machine.
		if took > 15*time.Second {
			t.Errorf("request %d took %v", i, took)
		}
		t.Logf("request %d: %v", i, took.Round(time.Millisecond))
	}
	code, body, took = do("/key/update", `{"key": "sk-redis-hole", "spend": 0}`, "sk-1234")
	if code != 200 || took > 15*time.Second {
		t.Fatalf("a spend edit in the Redis black hole: %d %s after %v", code, body, took)
	}
	t.Logf("spend edit: %v", took.Round(time.Millisecond))
	// Redis back before the gateway stops (cleanups run last first): the
	// stop returns the rate-limit and budget allotments instead of waiting
	// out its bounds (5 s) on the black hole. Everything under test is
	// checked by then.
	t.Cleanup(func() { _ = proxy.Restore() })
}
