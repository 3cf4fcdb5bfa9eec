package ledger

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/clocktest"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeRenewalRenewsEveryRound: the docs' bound (spend-and-limits.md,
// "The bound") is that only a replica cut off from Redis for half a lease
// or more can lose a lease: three rounds before the lease ends. That needs
// a lease renewed at every round once it is due. A hold renewed at round j
// has since = the start of round j's script, a little after round j's
// tick; at round j+1, exactly a quarter lease later, its age is then a
// little under a quarter lease and, with a round as the threshold, it is
// not due: it is renewed every other round, at an age of half a lease, and
// an outage of just over a quarter lease (two rounds) loses it.
//
// The rounds are stepped on the replica's own clock (s.now), each read of
// it a millisecond after the one before, so that a round's script starts
// after its scan as it does in the real loop; each round is the loop's
// body (renewLeases) at its exact tick, so no scheduler delay can skip or
// join rounds (an earlier version watched the real loop's expiries on
// Redis and failed on a loaded machine whose ticker dropped a tick).
func TestProbeRenewalRenewsEveryRound(t *testing.T) {
	_, r, prefix := redisRig(t, "renewprobe")
	s := NewShared(r, SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	s.LeaseTTL = 2 * time.Second
	clock := clocktest.NewStepper(s.epoch, time.Millisecond)
	s.now = clock.Now
	tick := func(d time.Duration) { clock.Set(s.epoch.Add(d)) }
	key := NewAccount(store.KindKey, "k", 0, USD(1))
	ctx := context.Background()
	h, err := s.Reserve(ctx, []*Account{key}, USD(0.5))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	every := s.renewEvery()
	var got []int
	first := 0
	for j := 1; j <= 12; j++ {
		tick(time.Duration(j) * every)
		renewed, lost := s.renewLeases(ctx)
		if lost != 0 {
			t.Fatalf("round %d: the hold's lease was lost while its request ran", j)
		}
		got = append(got, renewed)
		if renewed == 1 && first == 0 {
			first = j
		}
	}
	// First renewed at an age between 3/4 of a round and a round and 3/4
	// (renew.go): here the first round; then at every one.
	if first != 1 {
		t.Fatalf("first renewal at round %d (renewed per round %v)", first, got)
	}
	for j, n := range got {
		if n != 1 {
			t.Fatalf("round %d renewed %d holds (per round %v): a round was skipped, so two rounds lost "+
				"(an outage of just over a quarter lease) lose the lease", j+1, n, got)
		}
	}
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
