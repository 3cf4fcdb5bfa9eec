package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/clocktest"
	"github.com/tollgate/tollgate/internal/rscript"
)

// TestSlotRenewalThroughAWallClockSteppedBack is ledger's
// TestRenewalThroughAWallClockSteppedBack for a parallel slot: its age is
// measured on the monotonic clock, so a slot a round old is renewed though
// the wall clock was stepped back 10 min since it was taken. Measured on
// the wall clock it was not due for ten minutes, and its lease ended while
// its request ran (max_parallel_requests passable).
func TestSlotRenewalThroughAWallClockSteppedBack(t *testing.T) {
	const step = -10 * time.Minute
	clocktest.Check(t, step)
	c, prefix := realRedis(t)
	rd := NewRedis(runner(t, c), prefix)
	rd.LeaseTTL = time.Second
	l := New(rd)
	ctx := context.Background()
	par := Rule{Scope: keyScope, Kind: Parallel, Limit: 3, Name: "max_parallel_requests"}
	taken := time.Now()
	tk := ticket(0, par)
	if d := l.Admit(ctx, tk); d != nil || !tk.Shared() {
		t.Fatalf("refused: %v (shared %v)", d, tk.Shared())
	}
	defer l.Done(tk, 0)
	rd.now = func() time.Time { return clocktest.WallStepped(time.Now(), step) }
	if !withinMinute(func() bool { return time.Since(taken) >= rd.renewEvery() }) {
		t.Fatal("the clock did not move")
	}
	if renewed, lost := rd.renewSlots(ctx); renewed != 1 || lost != 0 {
		t.Fatalf("a slot a round old, the wall clock stepped back %v since it was taken: %d renewed, %d lost; want it renewed", -step, renewed, lost)
	}
}

// TestGateEndingsLeaveNothingRenewed: a fused script's admission (run
// here as the admission script alone, with the gate's keys and arguments:
// its slot really taken) is renewed only while taken - tracked when the
// reply admits it and it was taken, untracked once by Done - and never
// when the reply is malformed though the script took it (the slot is
// then given back at once: nothing else would), nor when it was not
// taken (the budget hold refused).
func TestGateEndingsLeaveNothingRenewed(t *testing.T) {
	c, prefix := realRedis(t)
	rd := NewRedis(runner(t, c), prefix)
	l := New(rd)
	ctx := context.Background()
	par := Rule{Scope: keyScope, Kind: Parallel, Limit: 5, Name: "max_parallel_requests"}
	set := rd.key(&par)
	admitted := func() (*Ticket, *Gate, []int64) {
		t.Helper()
		tk := ticket(0, par)
		g := l.Gate(tk)
		keys, args := g.AdmitCall()
		res, err := rscript.Int64s(rd.r.Run(ctx, admitScript, keys, args...))
		if err != nil || len(res) == 0 || res[0] != 1 {
			t.Fatalf("admission: %v %v", res, err)
		}
		return tk, g, res
	}
	renewing := func() int { rd.live.mu.Lock(); defer rd.live.mu.Unlock(); return len(rd.live.m) }
	slot := func(lease string) bool { return c.ZScore(ctx, set, lease).Err() == nil }

	tk, g, res := admitted()
	if err := g.Admitted(res, true); err != nil || !tk.Taken() || renewing() != 1 {
		t.Fatalf("taken: %v, Taken %v, %d renewed", err, tk.Taken(), renewing())
	}
	lease := tk.lease
	l.Done(tk, 0)
	l.Done(tk, 0)
	if tk.Taken() || renewing() != 0 {
		t.Fatalf("after Done: Taken %v, %d renewed", tk.Taken(), renewing())
	}
	if !withinMinute(func() bool { return !slot(lease) }) {
		t.Fatal("Done did not give the slot back")
	}

	tk, g, _ = admitted()
	lease = tk.lease
	if err := g.Admitted([]int64{1}, true); err == nil || tk.Taken() || renewing() != 0 {
		t.Fatalf("malformed though taken: %v, Taken %v, %d renewed", err, tk.Taken(), renewing())
	}
	if !withinMinute(func() bool { return !slot(lease) }) {
		t.Fatal("a slot the script took, its reply malformed, was not given back")
	}

	tk, g, res = admitted()
	if err := g.Admitted(res, false); err != nil || tk.Taken() || renewing() != 0 {
		t.Fatalf("not taken: %v, Taken %v, %d renewed", err, tk.Taken(), renewing())
	}
}
