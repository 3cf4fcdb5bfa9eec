package lifecycle_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/lifecycle"
)

// journal records what the actors did, in order.
type journal struct {
	mu     sync.Mutex
	events []string
}

func (j *journal) add(e string) {
	j.mu.Lock()
	j.events = append(j.events, e)
	j.mu.Unlock()
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.events)
}

// actor records its start, the start of its run and its end; its Run
// lingers a little after being stopped, so that a group that does not wait
// for it would let the next actor's stop come first.
func actor(j *journal, name string) lifecycle.Actor {
	return lifecycle.Actor{
		Name:  name,
		Start: func(context.Context) error { j.add("start " + name); return nil },
		Run: func(ctx context.Context) error {
			j.add("run " + name)
			<-ctx.Done()
			time.Sleep(10 * time.Millisecond)
			j.add("stopped " + name)
			return nil
		},
	}
}

// runGroup runs g in the background; the returned func stops it and
// returns Run's error (or reports a group that does not return).
func runGroup(t *testing.T, g *lifecycle.Group) (stop func() error, done chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			t.Error("the group did not return after being stopped")
			return nil
		}
	}, done
}

// waitFor waits, with a generous bound, until the journal has event.
func waitFor(t *testing.T, j *journal, event string) bool {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if slices.Contains(j.list(), event) {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	t.Errorf("%q never happened; journal %v", event, j.list())
	return false
}

func TestStartInOrderStopInReverseWaitingForEach(t *testing.T) {
	j := &journal{}
	var g lifecycle.Group
	for _, n := range []string{"a", "b", "c"} {
		g.Add(actor(j, n))
	}
	if got := g.Names(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("names %v", got)
	}
	stop, _ := runGroup(t, &g)
	if !waitFor(t, j, "run c") {
		return
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := j.list()
	// Each actor starts before the next; the runs may begin in any order
	// after their own start, so compare starts and stops apart.
	var starts, stops []string
	for _, e := range got {
		switch e[:4] {
		case "star":
			starts = append(starts, e)
		case "stop":
			stops = append(stops, e)
		}
	}
	if want := []string{"start a", "start b", "start c"}; !slices.Equal(starts, want) {
		t.Errorf("starts %v, want %v", starts, want)
	}
	if want := []string{"stopped c", "stopped b", "stopped a"}; !slices.Equal(stops, want) {
		t.Errorf("stops %v, want %v (journal %v)", stops, want, got)
	}
}

// TestStopWaitsForTheRunToFinish: the group does not stop the next actor,
// nor return, before the stopped actor's Run has finished its work.
func TestStopWaitsForTheRunToFinish(t *testing.T) {
	j := &journal{}
	release := make(chan struct{})
	var g lifecycle.Group
	g.Add(actor(j, "writer"))
	g.Add(lifecycle.Actor{Name: "http", Run: func(ctx context.Context) error {
		j.add("run http")
		<-ctx.Done()
		j.add("draining http")
		<-release // requests in flight still settling
		j.add("drained http")
		return nil
	}})
	stop, done := runGroup(t, &g)
	// Both run before the stop: an actor not started yet when the group
	// stops is never run, and this test is about one that is running.
	if !waitFor(t, j, "run writer") || !waitFor(t, j, "run http") {
		return
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	if !waitFor(t, j, "draining http") {
		return
	}
	select {
	case err := <-done:
		t.Fatalf("the group returned (%v) while an actor was still finishing", err)
	default:
	}
	if slices.Contains(j.list(), "stopped writer") {
		t.Fatalf("the writer stopped before the http actor finished: %v", j.list())
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	got := slices.DeleteFunc(j.list(), func(e string) bool { return e == "run http" }) // its place beside "run writer" is free
	if want := []string{"run writer", "draining http", "drained http", "stopped writer"}; !slices.Equal(got[1:], want) {
		t.Errorf("journal %v, want start writer then %v", j.list(), want)
	}
}

// TestFailedStartStopsWhatStarted: an actor whose Start fails does not
// run, those after it never start, and those before it are stopped.
func TestFailedStartStopsWhatStarted(t *testing.T) {
	j := &journal{}
	boom := errors.New("redis url is wrong")
	var g lifecycle.Group
	g.Add(actor(j, "a"))
	g.Add(actor(j, "b"))
	g.Add(lifecycle.Actor{Name: "c", Start: func(context.Context) error { return boom }, Run: func(context.Context) error {
		j.add("run c")
		return nil
	}})
	g.Add(actor(j, "d"))
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background()) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after a failed start")
	}
	if !errors.Is(err, boom) {
		t.Fatalf("Run returned %v, want the start failure", err)
	}
	got := j.list()
	for _, never := range []string{"run c", "start d", "run d"} {
		if slices.Contains(got, never) {
			t.Errorf("%q happened after the failed start: %v", never, got)
		}
	}
	ib, ia := slices.Index(got, "stopped b"), slices.Index(got, "stopped a")
	if ib < 0 || ia < 0 || ib > ia {
		t.Errorf("started actors not stopped in reverse order: %v", got)
	}
}

// TestStopWhileStarting: a stop that comes while an actor is starting
// starts no later actor and stops the ones that started.
func TestStopWhileStarting(t *testing.T) {
	j := &journal{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var g lifecycle.Group
	g.Add(actor(j, "a"))
	g.Add(lifecycle.Actor{
		Name: "slow",
		Start: func(ctx context.Context) error {
			j.add("start slow")
			cancel() // SIGTERM arrives while this actor readies itself
			<-ctx.Done()
			return nil // it readied anyway: it runs, and is stopped
		},
		Run: func(ctx context.Context) error {
			j.add("run slow")
			<-ctx.Done()
			j.add("stopped slow")
			return nil
		},
	})
	g.Add(actor(j, "late"))
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after a stop while starting")
	}
	got := j.list()
	if slices.Contains(got, "start late") {
		t.Errorf("an actor started after the stop: %v", got)
	}
	is, ia := slices.Index(got, "stopped slow"), slices.Index(got, "stopped a")
	if is < 0 || ia < 0 || is > ia {
		t.Errorf("started actors not stopped in reverse order: %v", got)
	}
}

// TestActorEndingStopsTheGroup: an actor whose Run returns early (the
// listener failed) stops the others, and its error is the group's.
func TestActorEndingStopsTheGroup(t *testing.T) {
	j := &journal{}
	fail := make(chan struct{})
	broken := errors.New("accept: too many open files")
	var g lifecycle.Group
	g.Add(actor(j, "writer"))
	g.Add(lifecycle.Actor{Name: "http", Run: func(ctx context.Context) error {
		<-fail
		return broken
	}})
	g.Add(actor(j, "reload"))
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background()) }()
	if !waitFor(t, j, "run reload") {
		return
	}
	close(fail)
	select {
	case err := <-done:
		if !errors.Is(err, broken) {
			t.Fatalf("Run returned %v, want the http actor's error", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the group did not stop when an actor ended")
	}
	got := j.list()
	ir, iw := slices.Index(got, "stopped reload"), slices.Index(got, "stopped writer")
	if ir < 0 || iw < 0 || ir > iw {
		t.Errorf("actors not stopped in reverse order: %v", got)
	}
}

// TestRetry: Retry calls until done, and at the context's end returns the
// last call's error, else the context's.
func TestRetry(t *testing.T) {
	n := 0
	if err := lifecycle.Retry(context.Background(), time.Millisecond, func() (bool, error) { n++; return n == 3, nil }); err != nil || n != 3 {
		t.Fatalf("done at the third call: err %v after %d calls", err, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	boom := errors.New("boom")
	err := lifecycle.Retry(ctx, time.Millisecond, func() (bool, error) { cancel(); return false, boom })
	if err != boom {
		t.Fatalf("at the context's end: %v, want the last call's error", err)
	}
	err = lifecycle.Retry(ctx, time.Millisecond, func() (bool, error) { return false, nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("at the context's end with no error: %v, want the context's", err)
	}
}

// TestEvery: f is called again and again, not before the first interval,
// and Every returns once its context ends (from within f here: no call
// after it).
func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	start, n := time.Now(), 0
	var first time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		lifecycle.Every(ctx, 5*time.Millisecond, func() {
			if n++; n == 1 {
				first = time.Since(start)
			}
			if n == 3 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Every did not return a minute after its context ended")
	}
	if n != 3 || first < 5*time.Millisecond {
		t.Fatalf("%d calls (want 3), the first after %v (want an interval)", n, first)
	}
}

// TestEveryNoCallWithATickReadyAtStop: a tick that is ready when the
// context ends starts no call. The context ends within a call that then
// outlasts two intervals (a tick buffered), twenty times: without Every's
// check after the select, which picks at random between two ready cases,
// a second call came in about half of the rounds (TestEvery, whose call
// is short, could not tell).
func TestEveryNoCallWithATickReadyAtStop(t *testing.T) {
	const interval = time.Millisecond
	for round := range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		n := 0
		done := make(chan struct{})
		go func() {
			defer close(done)
			lifecycle.Every(ctx, interval, func() {
				n++
				cancel()
				for start := time.Now(); time.Since(start) < 2*interval; {
					time.Sleep(interval / 4) // a tick buffered meanwhile
				}
			})
		}()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatal("Every did not return a minute after its context ended")
		}
		if n != 1 {
			t.Fatalf("round %d: %d calls, want 1 (none after the context ended)", round, n)
		}
	}
}
