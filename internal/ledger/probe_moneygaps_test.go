package ledger_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeLaggingReplicaOfflineSpendCountsInNewPeriod: replica B's view
// lags a rollover that replica A already wrote to Redis. Cut off from
// Redis, B books a batch's cost ($0.30, ledger.Spend: a path with no hold)
// after Redis's reset, then rolls its own view over, then reaches Redis
// again. The batch was spent in Redis's new period and must count there
// (as the allotment flush and the background carry of a lagging replica
// already land their spend, TestProbeLaggingReplicaSpendCountsInNewPeriod):
// before branch moneygaps the rollover zeroed B's unsynced spend and items
// in doubt, so nothing carried it, Redis's new period never had it, and a
// strict budget granted its whole amount on top of it.
func TestProbeLaggingReplicaOfflineSpendCountsInNewPeriod(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	r, b, a := twoLiveReplicas(t, c, prefix)
	budget, batch := ledger.USD(1), ledger.USD(0.3)
	ended, next := time.Now().Add(-time.Second), time.Now().Add(time.Hour)
	keyB := ledger.NewAccount(store.KindKey, "k", 0, budget)
	keyB.SetResetAt(ended)
	h, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.1)) // Redis has the old period
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.1))
	if err := a.ResetPeriod(ctx, store.KindKey, "k", next); err != nil { // A rolls over
		t.Fatal(err)
	}
	r.Degrade(errAway)                           // B cut off
	ledger.Spend([]*ledger.Account{keyB}, batch) // after Redis's reset
	b.CarryUnheld([]*ledger.Account{keyB})       // Redis away: owed
	if !keyB.RollTo(next, 0) {                   // B's view rolls over
		t.Fatal("B's view did not roll over")
	}
	r.Recover()
	b.CarryUnheld([]*ledger.Account{keyB})
	b.WaitResolved()
	want := strconv.FormatInt(int64(batch), 10)
	if got := budField(c, prefix, "k", "spent"); got != want {
		t.Fatalf("Redis's new period has spent %s, want the batch B booked in it (%s)", got, want)
	}
	if got := keyB.Spent(); got != batch {
		t.Fatalf("B's view of the new period has spent %v, want the batch %v", got.Dollars(), batch.Dollars())
	}
	keyA := ledger.NewAccount(store.KindKey, "k", 0, budget)
	keyA.SetResetAt(next)
	if h, err := a.Reserve(ctx, []*ledger.Account{keyA}, budget); err == nil {
		h.Settle(budget)
		t.Fatalf("strict: the new period granted its whole budget %v on top of B's batch of %v", budget.Dollars(), batch.Dollars())
	} else if ex := (*ledger.ExceededError)(nil); !errors.As(err, &ex) {
		t.Fatal(err)
	}
}

// TestProbeReseedAfterAFailedResetIsNeverNegative: a replica rolls an
// account over while spend it booked against its allotment is not flushed
// yet, and its reset of Redis fails (Redis keeps the old period). Its next
// hold reseeds Redis's new period from its view: spend less what Redis may
// not have. Before branch moneygaps the rollover set the view's spend to
// zero but kept the unflushed bookings as off Redis, so the seed was
// negative (-$0.05 here) and a strict hold could take the budget and that
// much more; had the flush's answer been lost before the rollover (its
// marker on Redis), its resend would not have added the bookings back and
// the new period would have stayed short of them.
func TestProbeReseedAfterAFailedResetIsNeverNegative(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	budget, cost := ledger.USD(1), ledger.USD(0.01)
	ended, next := time.Now().Add(-time.Second), time.Now().Add(time.Hour)
	b := newAllotReplica(t, prefix, budget, time.Minute)
	b.key.SetResetAt(ended)
	warm(t, b, cost)
	spendLocal(t, b, 5, cost)   // booked against the allotment, not flushed
	if !b.key.RollTo(next, 0) { // the rollover; its ResetPeriod fails (not sent)
		t.Fatal("no rollover")
	}
	h, err := b.s.Reserve(ctx, []*ledger.Account{b.key}, cost) // a per-request hold reseeds the new period
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if got := budField(c, prefix, "k", "period"); got != strconv.FormatInt(next.UnixNano(), 10) {
		t.Fatalf("Redis's period is %s, want the reseeded %d", got, next.UnixNano())
	}
	spent, _ := strconv.ParseInt(budField(c, prefix, "k", "spent"), 10, 64)
	held, _ := strconv.ParseInt(budField(c, prefix, "k", "held"), 10, 64)
	if spent < 0 {
		t.Errorf("Redis's new period was seeded with spent %v: negative", ledger.Amount(spent).Dollars())
	}
	other := newAllotReplica(t, prefix, budget, time.Minute)
	other.key.SetResetAt(next)
	over := budget - ledger.Amount(held) + cost // one cent past what the budget has left
	if h, err := other.s.Reserve(ctx, []*ledger.Account{other.key}, over); err == nil {
		h.Settle(over)
		t.Fatalf("strict: granted %v with %v held on a $1 budget (Redis spent %v)", over.Dollars(), ledger.Amount(held).Dollars(), ledger.Amount(spent).Dollars())
	}
}

// TestProbeReseedAfterAnEditIsNeverNegative: an operator sets an account's
// spend to zero while this replica has bookings against its allotment not
// flushed yet, and Redis then loses the account (emptied). The next hold
// reseeds it with the view's spend less what Redis may not have: before
// branch moneygaps that was -$0.05 here, and a strict hold could take the
// budget and that much more until the flush brought the bookings.
func TestProbeReseedAfterAnEditIsNeverNegative(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	budget, cost := ledger.USD(1), ledger.USD(0.01)
	b := newAllotReplica(t, prefix, budget, time.Minute)
	warm(t, b, cost)
	spendLocal(t, b, 5, cost) // booked against the allotment, not flushed
	if err := b.s.SetSpent(ctx, store.KindKey, "k", 0, b.key.ResetAt()); err != nil {
		t.Fatal(err)
	}
	b.key.SetSpent(0)
	if err := c.Del(ctx, "{"+prefix+"}:bud:key:k").Err(); err != nil { // Redis emptied
		t.Fatal(err)
	}
	h, err := b.s.Reserve(ctx, []*ledger.Account{b.key}, cost) // reseeds the account
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if spent, _ := strconv.ParseInt(budField(c, prefix, "k", "spent"), 10, 64); spent < 0 {
		t.Fatalf("Redis reseeded the account with spent %v: negative", ledger.Amount(spent).Dollars())
	}
}

// TestProbeRedisEmptiedReseedTakesTheLargerView: Redis loses an account
// (emptied, failed over to an empty replica) and the first replica to hold
// on it after the loss is one whose view is stale: it last heard Redis
// before another replica spent $0.60. It seeds the account from its view
// ($0.01). The other replica, whose view has the $0.60, holds next: Redis
// must take its larger view, or the budget is passable by what the first
// replica never saw. Before branch moneygaps the seed stood (the second
// hold found the account and mirrored its view down to it) until the
// period ended, and in the server a replica's view can be stale by
// anything (the snapshot's spend does not follow spend writes): a strict
// $1 budget granted $0.40 on top of $0.61 spent.
func TestProbeRedisEmptiedReseedTakesTheLargerView(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	_, b, a := twoLiveReplicas(t, c, prefix)
	budget, cost := ledger.USD(1), ledger.USD(0.01)
	keyA := ledger.NewAccount(store.KindKey, "k", 0, budget)
	keyB := ledger.NewAccount(store.KindKey, "k", 0, budget)
	spend := func(s *ledger.Shared, key *ledger.Account, amt ledger.Amount) {
		t.Helper()
		h, err := s.Reserve(ctx, []*ledger.Account{key}, amt)
		if err != nil {
			t.Fatal(err)
		}
		h.Settle(amt)
	}
	spend(a, keyA, cost)                                               // A's view: $0.01
	spend(b, keyB, ledger.USD(0.6))                                    // B's view: $0.61; A has not heard it
	if err := c.Del(ctx, "{"+prefix+"}:bud:key:k").Err(); err != nil { // Redis emptied
		t.Fatal(err)
	}
	spend(a, keyA, 0) // A reseeds from its view
	spend(b, keyB, 0) // B's view has more
	want := ledger.USD(0.61)
	if got := budField(c, prefix, "k", "spent"); got != strconv.FormatInt(int64(want), 10) {
		t.Errorf("after the loss Redis has spent %s, want the larger view %d", got, want)
	}
	over := budget - want + cost
	if h, err := a.Reserve(ctx, []*ledger.Account{keyA}, over); err == nil {
		h.Settle(over)
		t.Fatalf("strict: granted %v on a $1 budget with %v spent before the loss", over.Dollars(), want.Dollars())
	}
	// An edit after the loss is not undone by a view from before it.
	if err := a.SetSpent(ctx, store.KindKey, "k", 0, time.Time{}); err != nil {
		t.Fatal(err)
	}
	spend(b, keyB, 0)
	if got := budField(c, prefix, "k", "spent"); got != "0" {
		t.Fatalf("after an edit to 0 a hold set Redis's spend to %s", got)
	}
}

// TestProbeRedisEmptiedFlushTakesTheLargerView is
// TestProbeRedisEmptiedReseedTakesTheLargerView with allotments: the
// flushes (allotScript) seed and raise as holds do.
func TestProbeRedisEmptiedFlushTakesTheLargerView(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	budget, cost := ledger.USD(1), ledger.USD(0.01)
	a := newAllotReplica(t, prefix, budget, time.Minute)
	b := newAllotReplica(t, prefix, budget, time.Minute)
	warm(t, a, cost) // A heard the account: $0
	warm(t, b, cost)
	spendLocal(t, b, 10, cost) // B's view: $0.10, A's $0
	if err := b.x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Del(ctx, "{"+prefix+"}:bud:key:k").Err(); err != nil { // Redis emptied
		t.Fatal(err)
	}
	if err := a.x.Flush(ctx, false); err != nil { // A reseeds from its view: $0
		t.Fatal(err)
	}
	if err := b.x.Flush(ctx, false); err != nil { // B's view is more
		t.Fatal(err)
	}
	want := 10 * cost
	if got := budField(c, prefix, "k", "spent"); got != strconv.FormatInt(int64(want), 10) {
		t.Fatalf("after the loss and both flushes Redis has spent %s, want %d", got, want)
	}
}
