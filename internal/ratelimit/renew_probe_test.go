package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/clocktest"
)

// TestProbeSlotRenewalRenewsEveryRound is ledger's
// TestProbeRenewalRenewsEveryRound for a parallel slot: with a lease of 2 s
// a long request's slot must be renewed at every round once due, not every
// other round, or two rounds lost (an outage of just over a quarter lease,
// not the half the docs bound) lose the slot and max_parallel_requests can
// be passed. As there, the rounds are the loop's body (renewSlots) at
// their exact ticks on the replica's own clock, each read of it a
// millisecond after the one before (a round's script starts after its
// scan), so no scheduler delay can skip or join rounds.
func TestProbeSlotRenewalRenewsEveryRound(t *testing.T) {
	c, prefix := realRedis(t)
	rd := NewRedis(runner(t, c), prefix)
	rd.LeaseTTL = 2 * time.Second
	clock := clocktest.NewStepper(rd.epoch, time.Millisecond)
	rd.now = clock.Now
	tick := func(d time.Duration) { clock.Set(rd.epoch.Add(d)) }
	l := New(rd)
	par := Rule{Scope: keyScope, Kind: Parallel, Limit: 3, Name: "max_parallel_requests"}
	tk := ticket(0, par)
	ctx := context.Background()
	if d := l.Admit(ctx, tk); d != nil || !tk.Shared() {
		t.Fatalf("refused: %v (shared %v)", d, tk.Shared())
	}
	defer l.Done(tk, 0)
	every := rd.renewEvery()
	var got []int
	for j := 1; j <= 12; j++ {
		tick(time.Duration(j) * every)
		renewed, lost := rd.renewSlots(ctx)
		if lost != 0 {
			t.Fatalf("round %d: the ticket's slot was lost while its request ran", j)
		}
		got = append(got, renewed)
	}
	for j, n := range got {
		if n != 1 {
			t.Fatalf("round %d renewed %d tickets (per round %v): a round was skipped", j+1, n, got)
		}
	}
}
