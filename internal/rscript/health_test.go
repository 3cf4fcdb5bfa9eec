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
