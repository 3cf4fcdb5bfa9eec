package ledger

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeRenewalRenewsEveryRound runs the real renewal loop (Shared.Renew)
// with a lease of 2 s over one long-running hold and watches its expiry on
// Redis. The docs' bound (spend-and-limits.md, "The bound") is that only a
// replica cut off from Redis for half a lease or more can lose a lease:
// three rounds before the lease ends. That needs a lease renewed at every
// round once it is due. A hold renewed at round j has since = the start of
// round j's script, a little after round j's tick; at round j+1, exactly a
// quarter lease later, its age is then a little under a quarter lease and
// it is not due: it is renewed every other round, at an age of half a
// lease, and an outage of just over a quarter lease (two rounds) loses it.
func TestProbeRenewalRenewsEveryRound(t *testing.T) {
	c, r, prefix := redisRig(t, "renewprobe")
	s := NewShared(r, SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	s.LeaseTTL = 2 * time.Second
	key := NewAccount(store.KindKey, "k", 0, USD(1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bud := "{" + prefix + "}:bud:key:k"
	h, err := s.Reserve(context.Background(), []*Account{key}, USD(0.5))
	if err != nil {
		t.Fatal(err)
	}
	lease := h.(*sharedHold).lease
	done := make(chan struct{})
	go func() { defer close(done); s.Renew(ctx) }()
	expiry := func() int64 {
		v, err := c.HGet(context.Background(), bud, lease).Result()
		if err != nil {
			return 0
		}
		_, x, _ := strings.Cut(v, ":")
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	// Expiries seen, in order: each renewal moves it on by the time since
	// the one before (Redis's clock).
	var seen []int64
	last := expiry()
	deadline := time.Now().Add(time.Minute)
	for len(seen) < 9 && time.Now().Before(deadline) {
		if x := expiry(); x != last {
			if x == 0 {
				t.Fatal("the hold's lease was lost while its request ran")
			}
			seen = append(seen, x)
			last = x
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	h.Release()
	if len(seen) < 9 {
		t.Fatalf("only %d renewals in a minute", len(seen))
	}
	every := s.renewEvery().Milliseconds()
	// The first renewal comes at an age between a quarter and half a
	// lease; after it, one per round.
	for i := 1; i < len(seen); i++ {
		if gap := seen[i] - seen[i-1]; gap > every*3/2 {
			t.Errorf("renewal %d came %d ms after the one before (a round is %d ms): a round was skipped, so "+
				"two rounds lost (an outage of just over a quarter lease) lose the lease; gaps %v", i, gap, every, gaps(seen))
			break
		}
	}
}

func gaps(x []int64) []int64 {
	var out []int64
	for i := 1; i < len(x); i++ {
		out = append(out, x[i]-x[i-1])
	}
	return out
}

// TestProbeRenewalWhileRunnerDegraded: the runner's "degraded" is its
// belief that Redis is away, and it outlasts the outage: after a flap
// Watch waits up to 30 s between probes, so a replica whose Redis blinked
// for a moment believes it down for that long. Renew skipped every round
// meanwhile, so a lease it could have renewed (Redis answering all along)
// was lost: the docs' bound (half a lease cut off) shrinks by the probe
// wait. Here Redis answers throughout while the runner is marked down for
// four rounds (lease 2 s): the hold must keep its lease.
func TestProbeRenewalWhileRunnerDegraded(t *testing.T) {
	c, r, prefix := redisRig(t, "renewdeg")
	s := NewShared(r, SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	s.LeaseTTL = 2 * time.Second
	key := NewAccount(store.KindKey, "k", 0, USD(1))
	bud := "{" + prefix + "}:bud:key:k"
	h, err := s.Reserve(context.Background(), []*Account{key}, USD(0.5))
	if err != nil {
		t.Fatal(err)
	}
	lease := h.(*sharedHold).lease
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); s.Renew(ctx) }()
	defer func() { cancel(); <-done }()
	expiry := func() int64 {
		v, err := c.HGet(context.Background(), bud, lease).Result()
		if err != nil {
			return 0
		}
		_, x, _ := strings.Cut(v, ":")
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	first := expiry()
	if !waitUntil(func() bool { return expiry() != first }) {
		t.Fatal("never renewed")
	}
	r.Degrade(errors.New("connection reset by peer")) // a flap: marked down at once
	if !r.Degraded() {
		t.Fatal("the runner is not degraded")
	}
	// Six rounds with the runner believing Redis away, Redis answering.
	start := time.Now()
	lost := false
	for time.Since(start) < 6*s.renewEvery() {
		x := expiry()
		now, err := c.Time(context.Background()).Result()
		if err == nil && (x == 0 || now.UnixMilli() >= x) {
			lost = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.Recover()
	if lost {
		t.Fatal("the hold's lease expired while Redis answered: the renewal skipped its rounds because the runner believed Redis away")
	}
	h.Release()
}
