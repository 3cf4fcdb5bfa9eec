package ledger

import (
	"context"
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
