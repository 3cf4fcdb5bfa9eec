package server

import (
	"context"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/netsim"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// TestDatabaseOutage: with PostgreSQL unreachable, known keys keep working
// from the cache, unknown keys get 503 (not 401), and the spend of requests
// served meanwhile reaches the database once it is back.
func TestDatabaseOutage(t *testing.T) {
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
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	url, srv := serveSrv(t, cfg, Options{Store: st, ResyncInterval: 50 * time.Millisecond})
	if code, body := send(t, url+"/key/generate", "sk-1234", `{"key": "sk-known-before-outage"}`); code != 200 {
		t.Fatal(code, body)
	}

	proxy.Cut()
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

	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	if _, ok := within(10*time.Second, func() bool {
		_, total, err := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha("sk-known-before-outage")})
		return err == nil && total == 5
	}); !ok {
		t.Fatal("the spend of the outage never reached the database")
	}
	if _, ok := within(5*time.Second, func() bool { c, _ := send(t, url+"/v1/chat/completions", "sk-never-seen-key", chat3); return c == 401 }); !ok {
		t.Fatal("unknown keys still get 503 five seconds after the database came back")
	}
}
