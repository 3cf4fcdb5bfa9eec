package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestSlotRenewalKeepsLiveSlotsAndMakesNone, on real Redis with a lease of
// 1 s: a round renews the parallel slots of tickets in flight that are due
// (their expiry and their set's moves on) and none younger than a quarter
// lease; a slot given back stays gone (a renewal that runs after the
// settlement makes nothing), and one that expired before it was renewed
// is not extended: reported lost, no longer renewed.
func TestSlotRenewalKeepsLiveSlotsAndMakesNone(t *testing.T) {
	c, prefix := realRedis(t)
	rd := NewRedis(runner(t, c), prefix)
	rd.LeaseTTL = time.Second
	l := New(rd)
	ctx := context.Background()
	par := Rule{Scope: keyScope, Kind: Parallel, Limit: 3, Name: "max_parallel_requests"}
	set := rd.key(&par)
	score := func(lease string) (float64, bool) {
		v, err := c.ZScore(ctx, set, lease).Result()
		if err == redis.Nil {
			return 0, false
		}
		if err != nil {
			t.Fatal(err)
		}
		return v, true
	}
	admit := func() *Ticket {
		t.Helper()
		tk := ticket(0, par)
		if d := l.Admit(ctx, tk); d != nil || !tk.Shared() {
			t.Fatalf("refused: %v (shared %v)", d, tk.Shared())
		}
		return tk
	}
	a, b := admit(), admit()
	sa, _ := score(a.lease)
	if renewed, lost := rd.renewSlots(ctx); renewed != 0 || lost != 0 {
		t.Fatalf("slots younger than a quarter lease: %d renewed, %d lost", renewed, lost)
	}
	since := time.Now()
	if !withinMinute(func() bool { return time.Since(since) >= rd.renewEvery() }) {
		t.Fatal("the clock did not move")
	}
	if renewed, lost := rd.renewSlots(ctx); renewed != 2 || lost != 0 {
		t.Fatalf("two slots due: %d renewed, %d lost", renewed, lost)
	}
	if s, _ := score(a.lease); s <= sa {
		t.Fatalf("a's slot expires at %v after its renewal, %v before", s, sa)
	}
	if pttl := c.PTTL(ctx, set).Val(); pttl < time.Second {
		t.Fatalf("the renewed slots' set expires in %v, before them", pttl)
	}

	// a is done; a renewal that runs after its settlement makes nothing.
	l.Done(a, 0)
	if !withinMinute(func() bool { _, ok := score(a.lease); return !ok }) {
		t.Fatal("Done did not give the slot back")
	}
	if res, err := rd.r.Run(ctx, renewSlotsScript, []string{set}, int64(1000), 1, a.lease); err != nil || res.([]any)[0] != int64(0) {
		t.Fatalf("renewing a slot given back: %v %v", res, err)
	}
	if _, ok := score(a.lease); ok {
		t.Fatal("a renewal made a slot its settlement had given back")
	}

	// b's replica stalls past its lease: by Redis's clock it expires.
	sb, _ := score(b.lease)
	if !withinMinute(func() bool {
		now, err := c.Time(ctx).Result()
		return err == nil && float64(now.UnixMilli()) > sb
	}) {
		t.Fatal("Redis's clock did not pass the slot's expiry")
	}
	if renewed, lost := rd.renewSlots(ctx); renewed != 0 || lost != 1 {
		t.Fatalf("an expired slot: %d renewed, %d lost; want it lost", renewed, lost)
	}
	if s, ok := score(b.lease); ok && s != sb {
		t.Fatalf("an expired slot was extended from %v to %v", sb, s)
	}
	if len(rd.live.m) != 0 {
		t.Fatalf("%d tickets still renewed", len(rd.live.m))
	}
	l.Done(b, 0)
}

// withinMinute polls cond for up to a minute.
func withinMinute(cond func() bool) bool {
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}
