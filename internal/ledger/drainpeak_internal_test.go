package ledger

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestDrainedAllotmentForgetsItsPeaks: an allotment sized on a burst (100
// requests of $0.01 asked in one interval: recent peak $1 of asks) is
// drained because a request was refused on Redis while it held room
// (giveBack: the room was wanted elsewhere, near a budget's end). The next
// size must be on the intervals after the drain (2 requests: 4 × $0.02),
// not on the burst's peak, which fades by only an eighth an interval
// (about 4 × $0.77 + the peak of holds here): room held near a budget's
// end that other replicas are refused for (commit d3967e9, branch
// ledgergaps added this test; it fails with that forgetting removed).
func TestDrainedAllotmentForgetsItsPeaks(t *testing.T) {
	_, r, prefix := redisRig(t, "drainpeak")
	ctx := context.Background()
	s := NewShared(r, SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	if _, err := s.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	x := NewAllotted(s, AllotOptions{Every: time.Nanosecond, LeaseTTL: time.Minute}) // every flush a whole interval
	a := NewAccount(store.KindKey, "k", 0, USD(100))
	cost := USD(0.01)
	burst := func(n int) {
		t.Helper()
		var hs []Hold
		for range n {
			h, err := x.Reserve(ctx, []*Account{a}, cost)
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
		for _, h := range hs {
			h.Release()
		}
	}
	burst(100)
	if err := x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	al := a.remote().allot.Load()
	if al == nil || al.size.Load() < int64(USD(1)) {
		t.Fatalf("no allotment sized on the burst: %+v", al)
	}
	if !x.giveBack(ctx, []*Account{a}) { // a refusal elsewhere while this held room
		t.Fatal("the allotment's room was not given back")
	}
	if got := al.size.Load(); got != 0 {
		t.Fatalf("the drained allotment still holds %v", Amount(got).Dollars())
	}
	burst(2)
	if err := x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got, want := Amount(al.size.Load()), USD(0.5); got > want {
		t.Fatalf("after the drain the allotment was sized %v on two requests of %v: the burst's peak, not forgotten", got.Dollars(), cost.Dollars())
	}
	if err := x.Flush(ctx, true); err != nil { // returned
		t.Fatal(err)
	}
}
