package ledger

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/clocktest"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeAllotmentStopsDecidingThroughAWallClockSteppedBack is
// TestAllotmentStopsDecidingWhenNotRenewed with the replica's wall clock
// stepped back 10 min right after the allotment's last answered flush (an
// NTP correction, an operator's date -s; clocktest.WallStepped).
// Its local decisions must still stop localFor (1 s here) after that
// flush: its lease on Redis (2 s + localFor) is on Redis's clock. When the
// flush's time and the local decision's now were wall clock (unix ns), the
// allotment went on deciding in process for the ten minutes - long after
// its lease had ended on Redis and the other replicas had taken back what
// it held: spend decided against a budget no longer held (strict spend
// past the budget).
func TestProbeAllotmentStopsDecidingThroughAWallClockSteppedBack(t *testing.T) {
	const step = -10 * time.Minute
	clocktest.Check(t, step)
	_, r, prefix := redisRig(t, "allotstep")
	s := NewShared(r, SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	ctx := context.Background()
	if _, err := s.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	x := NewAllotted(s, AllotOptions{Every: 5 * time.Millisecond, LeaseTTL: 2 * time.Second})
	key := NewAccount(store.KindKey, "k", 0, USD(1))
	cost := USD(0.01)
	reserve := func() (local bool) {
		t.Helper()
		before := x.Local.Load()
		h, err := x.Reserve(ctx, []*Account{key}, cost)
		if err != nil {
			t.Fatal(err)
		}
		h.Release()
		return x.Local.Load() != before
	}
	for range 10 { // ten requests in one interval: an allotment made
		if reserve() {
			t.Fatal("a hold was decided locally before any allotment was made")
		}
	}
	start := time.Now()
	if err := x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return clocktest.WallStepped(time.Now(), step) }
	if !reserve() {
		t.Fatal("a request right after the flush was not decided against the allotment")
	}
	if !waitUntil(func() bool { return !reserve() }) {
		t.Fatalf("an allotment not renewed for %v, the wall clock stepped back %v, still decides holds in process (its lease lives 2 s + %v)",
			time.Since(start).Round(time.Second), -step, x.localFor())
	}
	if d := time.Since(start); d < x.localFor() {
		t.Fatalf("the allotment stopped deciding %v after its flush, before localFor (%v)", d, x.localFor())
	}
}
