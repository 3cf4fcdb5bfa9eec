package ledger

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/clocktest"
	"github.com/tollgate/tollgate/internal/store"
)

// TestRenewalThroughAWallClockSteppedBack: a lease's age is measured on
// the monotonic clock. The replica's wall clock is stepped back 10 min
// (an NTP correction, an operator's date -s) after a hold is placed; once
// a round's worth of time has passed the hold is due and renewed. When
// the age was the wall clock's (unix ns), it stayed negative for the ten
// minutes: never due, the lease (1 s here, 15 min by default) ended while
// its request ran.
func TestRenewalThroughAWallClockSteppedBack(t *testing.T) {
	const step = -10 * time.Minute
	clocktest.Check(t, step)
	c, r, prefix := redisRig(t, "renewstep")
	s := NewShared(r, SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	s.LeaseTTL = time.Second
	key := NewAccount(store.KindKey, "k", 0, USD(1))
	ctx := context.Background()
	placed := time.Now()
	hd, err := s.Reserve(ctx, []*Account{key}, USD(0.5))
	if err != nil {
		t.Fatal(err)
	}
	h := hd.(*sharedHold)
	defer h.Release()
	s.now = func() time.Time { return clocktest.WallStepped(time.Now(), step) }
	if !waitUntil(func() bool { return time.Since(placed) >= s.renewEvery() }) {
		t.Fatal("the clock did not move")
	}
	if renewed, lost := s.renewLeases(ctx); renewed != 1 || lost != 0 {
		t.Fatalf("a hold a round old, the wall clock stepped back %v since it was placed: %d renewed, %d lost; want it renewed", -step, renewed, lost)
	}
	bud := "{" + prefix + "}:bud:key:k"
	if ok, err := c.HExists(ctx, bud, h.lease).Result(); err != nil || !ok {
		t.Fatalf("the renewed lease is not on Redis: %v %v", ok, err)
	}
}

// TestRenewalKeepsTheAccountHash: a renewal keeps the account's hash on
// Redis at least as long as the lease it renews. A hold sets the hash's
// 7-day expiry only on a hash a day untouched, so a request longer than
// that, alone on its account, outlived the hash: the hash, its lease and
// the account's spent gone while the request ran. Here the hash is 10 s
// from its end (its 7 days nearly up) under a lease of a minute; a hash
// with no expiry is given none.
func TestRenewalKeepsTheAccountHash(t *testing.T) {
	c, r, prefix := redisRig(t, "renewhash")
	s := NewShared(r, SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	s.LeaseTTL = time.Minute
	s.epoch = s.epoch.Add(-time.Hour) // the replica up an hour: a hold's at, set back below, stays positive
	ctx := context.Background()
	hold := func(id string) (*sharedHold, string) {
		t.Helper()
		hd, err := s.Reserve(ctx, []*Account{NewAccount(store.KindKey, id, 0, USD(1))}, USD(0.5))
		if err != nil {
			t.Fatal(err)
		}
		h := hd.(*sharedHold)
		h.at -= int64(s.renewEvery()) // due: placed a round ago
		return h, "{" + prefix + "}:bud:key:" + id
	}
	h1, bud1 := hold("k1")
	defer h1.Release()
	h2, bud2 := hold("k2")
	defer h2.Release()
	if err := c.PExpire(ctx, bud1, 10*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Persist(ctx, bud2).Err(); err != nil {
		t.Fatal(err)
	}
	if renewed, lost := s.renewLeases(ctx); renewed != 2 || lost != 0 {
		t.Fatalf("two holds due: %d renewed, %d lost", renewed, lost)
	}
	if pttl := c.PTTL(ctx, bud1).Val(); pttl < s.LeaseTTL {
		t.Fatalf("the account's hash expires in %v after its lease was renewed for %v: the request outlives it", pttl, s.LeaseTTL)
	}
	if pttl := c.PTTL(ctx, bud2).Val(); pttl != -1 {
		t.Fatalf("a hash with no expiry was given one: %v", pttl)
	}
}
