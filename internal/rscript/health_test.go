package rscript

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/netsim"
)

// within waits, with a generous bound, until cond holds.
func within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// TestNothingRunsBeforeStart: a runner that was not started sends nothing,
// and says so with an error NotRun recognises (callers fall back safely).
func TestNothingRunsBeforeStart(t *testing.T) {
	m := miniredis.RunT(t)
	r := NewRunner(redis.NewClient(&redis.Options{Addr: m.Addr()}), Options{Log: slog.New(slog.DiscardHandler)})
	defer r.Close()
	_, err := r.Run(context.Background(), incr, []string{"k"}, 1)
	if !errors.Is(err, ErrNotStarted) || !NotRun(err) {
		t.Fatalf("call before Start: %v, want ErrNotStarted (not run)", err)
	}
	if m.Exists("k") {
		t.Fatal("a call before Start reached Redis")
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, err := r.Run(context.Background(), incr, []string{"k"}, 1); err != nil || v != int64(1) {
		t.Fatalf("after Start: %v %v", v, err)
	}
}

// TestHealth: a Redis that does not answer at start leaves the runner
// degraded; Watch notices when it answers, and a later Degrade (a call
// without an answer) is again undone by Watch once Redis is back.
func TestHealth(t *testing.T) {
	m := miniredis.RunT(t)
	addr := m.Addr()
	m.Close() // not answering at start
	var mu sync.Mutex
	var events []bool
	r := NewRunner(redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond}), Options{
		Log:        slog.New(slog.DiscardHandler),
		ProbeEvery: 10 * time.Millisecond,
		OnChange:   func(d bool) { mu.Lock(); events = append(events, d); mu.Unlock() },
	})
	defer r.Close()
	if err := r.Start(context.Background()); err != nil {
		t.Fatalf("Start with Redis away: %v (want degraded, not an error)", err)
	}
	if !r.Degraded() {
		t.Fatal("not degraded with Redis away at start")
	}
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { r.Watch(ctx); close(watched) }()
	defer func() { cancel(); <-watched }()

	m2 := miniredis.NewMiniRedis()
	if err := m2.StartAddr(addr); err != nil {
		t.Skipf("cannot restart miniredis on %s: %v", addr, err)
	}
	defer m2.Close()
	if !within(10*time.Second, func() bool { return !r.Degraded() }) {
		t.Fatal("Watch did not notice Redis answering")
	}
	r.Degrade(errors.New("read timeout"))
	if !within(10*time.Second, func() bool { return !r.Degraded() }) {
		t.Fatal("Watch did not undo a Degrade while Redis answers")
	}
	mu.Lock()
	defer mu.Unlock()
	if got := fmt.Sprint(events); got != "[true false true false]" {
		t.Fatalf("health changes %s, want [true false true false]", got)
	}
}

// TestSlowIsNotDead: Redis answering every script later than its caller's
// deadline, yet answering, is slow, not away: callers report their missed
// deadlines as the rate limiter and budgets do, and the runner stays on
// Redis (it pings, hears an answer, and keeps counting on it).
func TestSlowIsNotDead(t *testing.T) {
	addr, key := realRedis(t)
	var mu sync.Mutex
	var events []bool
	c, err := Dial("redis://" + proxy(t, addr, 150*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRunner(c, Options{Log: slog.New(slog.DiscardHandler), ProbeEvery: 10 * time.Millisecond,
		OnChange: func(d bool) { mu.Lock(); events = append(events, d); mu.Unlock() }})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	late := 0
	for range 24 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := r.Run(ctx, incr, []string{key}, 1)
		cancel()
		if err != nil {
			late++
			r.Degrade(err)
		}
	}
	if late < 8 {
		t.Fatalf("only %d of 24 calls missed their deadline: the proxy did not slow Redis down", late)
	}
	// The last check ping has been answered (or not) once none is out.
	if !within(30*time.Second, func() bool { return !r.checking.Load() }) {
		t.Fatal("the slow-or-dead check never finished")
	}
	if r.Degraded() {
		t.Fatal("a Redis that answers late was taken for a dead one")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 0 {
		t.Fatalf("health changes %v for a slow Redis, want none", events)
	}
}

// TestDeadFallsBackOnce: a Redis whose connections fail is away at the
// first failure; Watch brings the runner back once Redis answers again,
// once, and failures reported while it is down change nothing. Going away
// again right after coming back doubles the wait before the next probe.
func TestDeadFallsBackOnce(t *testing.T) {
	addr, key := realRedis(t)
	p, err := netsim.NewProxy(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Cut()
	var mu sync.Mutex
	var events []bool
	c, err := Dial("redis://" + p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	r := NewRunner(c, Options{Log: slog.New(slog.DiscardHandler), ProbeEvery: 20 * time.Millisecond,
		OnChange: func(d bool) { mu.Lock(); events = append(events, d); mu.Unlock() }})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { r.Watch(ctx); close(watched) }()
	defer func() { cancel(); <-watched }()
	if _, err := r.Run(context.Background(), incr, []string{key}, 1); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	for i := 0; i < 50 && !r.Degraded(); i++ {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
		if _, err := r.Run(cctx, incr, []string{key}, 1); err != nil {
			r.Degrade(err)
		}
		ccancel()
	}
	if !r.Degraded() {
		t.Fatal("not degraded with Redis's connections refused")
	}
	for range 20 {
		r.Degrade(errors.New("connection refused")) // callers still reporting
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	if !within(30*time.Second, func() bool { return !r.Degraded() }) {
		t.Fatal("Watch did not bring the runner back")
	}
	for range 20 {
		if _, err := r.Run(context.Background(), incr, []string{key}, 1); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	}
	mu.Lock()
	got := fmt.Sprint(events)
	mu.Unlock()
	if got != "[true false]" {
		t.Fatalf("health changes %s, want [true false]", got)
	}
	// Away again at once: the next probe waits twice as long.
	r.Degrade(errors.New("connection reset"))
	if w := time.Duration(r.probeWait.Load()); w != 40*time.Millisecond {
		t.Fatalf("probe wait %v after a flap, want 40ms", w)
	}
	if !within(30*time.Second, func() bool { return !r.Degraded() }) {
		t.Fatal("Watch did not bring the runner back after the flap")
	}
}
