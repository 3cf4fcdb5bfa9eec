package server

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// ourGoroutines maps the id of each goroutine running Tollgate or go-redis
// code to its stack.
func ourGoroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		st := string(g)
		if !strings.Contains(st, "tollgate/tollgate/internal/") && !strings.Contains(st, "redis/go-redis") {
			continue
		}
		header, _, _ := strings.Cut(st, "\n") // "goroutine 42 [select]:"
		id, _, _ := strings.Cut(strings.TrimPrefix(header, "goroutine "), " ")
		out[id] = st
	}
	return out
}

// startedSince lists the stacks of our goroutines that were not in before.
func startedSince(before map[string]string) []string {
	var out []string
	for id, st := range ourGoroutines() {
		if _, ok := before[id]; !ok {
			out = append(out, st)
		}
	}
	return out
}

// anyStack reports whether one of our goroutines runs fn.
func anyStack(fn string) bool {
	for _, st := range ourGoroutines() {
		if strings.Contains(st, fn) {
			return true
		}
	}
	return false
}

// lifecycleConfig is a gateway with every actor: a store (spend writer,
// resync, sweep), Redis (runner, presence) and background health checks.
func lifecycleConfig(t *testing.T, upstream, redisURL string) *config.Config {
	t.Helper()
	yaml := strings.ReplaceAll(pricedConfig, "{{UP}}", upstream) + "  background_health_checks: true\n  redis_url: " + redisURL + "\n"
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestNewStartsNothing: building a server starts no goroutine (no spend
// writer, no Redis pipeline, no loop); Serve starts them all, and they are
// all gone when Serve returns.
func TestNewStartsNothing(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{NoRecord: true}))
	defer up.Close()
	m := miniredis.RunT(t)
	cfg := lifecycleConfig(t, up.URL, "redis://"+m.Addr())
	cfg.GeneralSettings.OTel = &config.OTelSettings{Endpoint: "http://127.0.0.1:1"} // tracing, exported nowhere
	t.Setenv("GENERIC_LOGGER_ENDPOINT", up.URL+"/callback")
	cfg.LiteLLMSettings.Callbacks = []string{"generic_api"} // a logging callback's sender runs only under Serve
	st := sqliteStore(t)
	before := ourGoroutines()
	srv, err := New(cfg, Options{Logger: testLogger, Store: st, RedisPrefix: "lifecycle"})
	if err != nil {
		t.Fatal(err)
	}
	if started := startedSince(before); len(started) > 0 {
		t.Fatalf("New started %d goroutines:\n%s", len(started), strings.Join(started, "\n\n"))
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	// Serve starts every actor (which shows the check above can fail).
	for _, fn := range []string{"ledger.(*Writer).Run", "rscript.(*Runner).Watch", "ledger.(*Shared).Announce",
		"server.(*Server).resync", "server.(*Server).sweepBudgets", "server.(*Server).backgroundChecks", "server.(*Server).serveHTTP",
		"tracing.(*queue).run", "callback.(*Queue).Run"} {
		if _, ok := within(10*time.Second, func() bool { return anyStack(fn) }); !ok {
			t.Errorf("no goroutine runs %s while Serve runs", fn)
		}
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	// Serve waited for its actors: none runs once it has returned (the
	// goroutines that ran them may take a moment to exit).
	actor := func() string {
		for _, st := range startedSince(before) {
			if strings.Contains(st, "tollgate/tollgate/internal/") {
				return st
			}
		}
		return ""
	}
	if _, ok := within(10*time.Second, func() bool { return actor() == "" }); !ok {
		t.Fatalf("a goroutine outlived Serve:\n%s", actor())
	}
}

// TestFailedNewLeavesNothingRunning: a server whose construction fails
// after the store was read leaves no goroutine behind (it used to leave
// the spend writer running when the Redis URL was refused).
func TestFailedNewLeavesNothingRunning(t *testing.T) {
	cfg := lifecycleConfig(t, "http://127.0.0.1:1", "redis://127.0.0.1:6379/not-a-db")
	before := ourGoroutines()
	if _, err := New(cfg, Options{Logger: testLogger, Store: sqliteStore(t)}); err == nil {
		t.Fatal("New accepted a redis_url with a bad database number")
	}
	if started := startedSince(before); len(started) > 0 {
		t.Fatalf("a failed New left %d goroutines:\n%s", len(started), strings.Join(started, "\n\n"))
	}
}

// TestShutdownBooksTheRequestInFlight: a shutdown that begins while a
// request waits on its upstream closes the listener, lets the request
// finish, books its spend, and only then closes the spend writer: when
// Serve returns, the row is in the store.
func TestShutdownBooksTheRequestInFlight(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{NoRecord: true})
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		<-release
		mock.ServeHTTP(w, r)
	}))
	defer up.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	srv, err := New(cfg, Options{Logger: testLogger, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()

	answered := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(chat3))
		req.Header.Set("Authorization", "Bearer sk-1234")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	select {
	case <-arrived:
	case <-time.After(60 * time.Second):
		t.Fatal("the request never reached the upstream")
	}
	stop() // SIGTERM while the request waits on its upstream
	if _, ok := within(10*time.Second, func() bool {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		return err != nil
	}); !ok {
		t.Fatal("the listener still accepts connections after the shutdown began")
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}
	if _, total, err := st.ListSpendLogs(context.Background(), store.SpendFilter{}); err != nil || total != 0 {
		t.Fatalf("spend logs before the request finished: %d (%v)", total, err)
	}
	close(release)
	if code := <-answered; code != 200 {
		t.Fatalf("the request in flight got %d, want 200", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after the last request")
	}
	logs, total, err := st.ListSpendLogs(context.Background(), store.SpendFilter{})
	if err != nil || total != 1 || len(logs) != 1 {
		t.Fatalf("spend logs after Serve returned: %d %v (%v); want the request's row", total, logs, err)
	}
	if logs[0].Cost <= 0 || logs[0].Status != 200 {
		t.Errorf("booked row: cost %v status %d", logs[0].Cost, logs[0].Status)
	}
}
