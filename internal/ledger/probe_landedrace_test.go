package ledger_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/rscript"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeLandingBookedBeforeAnOlderAnswerStillCounts: default mode, two
// live replicas on a $1 budget. A hold of replica S runs on Redis (its
// answer: $0.50 remains), and before S reads that answer a background
// carry of S's ($0.30, a batch's cost: CarryUnheld) runs after it on Redis
// and is booked first (heard.landed). The hold's answer, read then, says
// nothing of the carry: it must not make S forget it. Cut off from Redis
// next, S may spend at most its share of what truly remained ($0.20 / 2),
// not a share of the stale $0.50 with the carry uncounted. (On branch
// allotmoney hear zeroed landed whatever the answer's age: "a landing
// counted twice rather than not at all" held only when answers are read
// in the order Redis ran them; goroutines reading replies are not.)
func TestProbeLandingBookedBeforeAnOlderAnswerStillCounts(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	r, s, _ := twoLiveReplicas(t, c, prefix)
	budget, batch, cost := ledger.USD(1), ledger.USD(0.3), ledger.USD(0.01)
	key := ledger.NewAccount(store.KindKey, "k", 0, budget)
	accts := []*ledger.Account{key}
	h, err := s.Reserve(ctx, accts, ledger.USD(0.5))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.5))

	// A gated hold whose answer is read late (the goroutine reading it
	// not scheduled yet): Redis has run it.
	entered, release := make(chan struct{}), make(chan struct{})
	s.SetFusedReply(func(v any, err error) (any, error) {
		close(entered)
		<-release
		return v, err
	})
	gate := countGate{admit: "{" + prefix + "}:gate:admit", done: "{" + prefix + "}:gate:done"}
	type reply struct {
		h   ledger.Hold
		err error
	}
	late := make(chan reply, 1)
	go func() {
		h, _, err := s.ReserveGated(ctx, accts, ledger.AskStrict(0), gate)
		late <- reply{h, err}
	}()
	<-entered
	ledger.Spend(accts, batch)
	s.CarryUnheld(accts)
	s.WaitResolved()
	want := strconv.FormatInt(int64(ledger.USD(0.8)), 10)
	if got := budField(c, prefix, "k", "spent"); got != want || key.Unsynced() != 0 {
		t.Fatalf("the batch did not land: Redis spent %s (want %s), %d unsynced", got, want, key.Unsynced())
	}
	close(release)
	lr := <-late
	if lr.err != nil {
		t.Fatal(lr.err)
	}
	defer lr.h.Release()

	// Cut off: the replica decides against its share as last heard.
	r.Degrade(errAway)
	var served ledger.Amount
	for range 100 {
		h, err := s.Reserve(ctx, accts, cost)
		if err != nil {
			var ex *ledger.ExceededError
			var un *ledger.UnavailableError
			if !errors.As(err, &ex) && !errors.As(err, &un) {
				t.Fatal(err)
			}
			break
		}
		h.Settle(cost)
		served += cost
	}
	if share := (budget - ledger.USD(0.8)) / 2; served > share {
		t.Fatalf("cut off, S spent %v: past its share %v of what Redis had left (its own batch of %v landed after the answer it last read, and was forgotten)",
			served.Dollars(), share.Dollars(), batch.Dollars())
	}
}

// twoLiveReplicas is replica S (on runner r, which a test can cut; its holds wait a minute for Redis) and
// another on the same Redis prefix, both announced by a heartbeat (S's
// last, so that it counts both alive).
func twoLiveReplicas(t *testing.T, c *redis.Client, prefix string) (r *rscript.Runner, s, other *ledger.Shared) {
	t.Helper()
	r = runner(t, c)
	s = ledger.NewShared(r, ledger.SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	other = ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	for _, x := range []*ledger.Shared{other, s} {
		if _, err := x.Heartbeat(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return r, s, other
}
