package ratelimit

import (
	"context"
	"testing"
	"time"
)

// TestProbeSlotRenewalRenewsEveryRound is ledger's
// TestProbeRenewalRenewsEveryRound for a parallel slot: the real loop
// (Redis.Renew) with a lease of 2 s must renew a long request's slot at
// every round once due, not every other round, or two rounds lost (an
// outage of just over a quarter lease, not the half the docs bound) lose
// the slot and max_parallel_requests can be passed.
func TestProbeSlotRenewalRenewsEveryRound(t *testing.T) {
	c, prefix := realRedis(t)
	rd := NewRedis(runner(t, c), prefix)
	rd.LeaseTTL = 2 * time.Second
	l := New(rd)
	par := Rule{Scope: keyScope, Kind: Parallel, Limit: 3, Name: "max_parallel_requests"}
	set := rd.key(&par)
	tk := ticket(0, par)
	if d := l.Admit(context.Background(), tk); d != nil || !tk.Shared() {
		t.Fatalf("refused: %v (shared %v)", d, tk.Shared())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); rd.Renew(ctx) }()
	score := func() int64 {
		v, err := c.ZScore(context.Background(), set, tk.lease).Result()
		if err != nil {
			return 0
		}
		return int64(v)
	}
	var seen []int64
	last := score()
	deadline := time.Now().Add(time.Minute)
	for len(seen) < 9 && time.Now().Before(deadline) {
		if x := score(); x != last {
			if x == 0 {
				t.Fatal("the ticket's slot was lost while its request ran")
			}
			seen = append(seen, x)
			last = x
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	l.Done(tk, 0)
	if len(seen) < 9 {
		t.Fatalf("only %d renewals in a minute", len(seen))
	}
	every := rd.renewEvery().Milliseconds()
	for i := 1; i < len(seen); i++ {
		if gap := seen[i] - seen[i-1]; gap > every*3/2 {
			var gaps []int64
			for j := 1; j < len(seen); j++ {
				gaps = append(gaps, seen[j]-seen[j-1])
			}
			t.Errorf("renewal %d came %d ms after the one before (a round is %d ms): a round was skipped; gaps %v", i, gap, every, gaps)
			break
		}
	}
}
