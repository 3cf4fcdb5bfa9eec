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

// TestProbeLaggingReplicaSpendCountsInNewPeriod: strict mode, a budget
// period rolls over. Replica A rolls it (Redis's period moves on, spend
// zero); replica B, whose clock lags, still sees the old period and goes
// on deciding requests against its allotment. That spend is made in the
// new period (Redis's and the store's: a per-request settle of B would
// land there), so B's next flush must count it there, and no more: the
// old period's spend B flushed before the reset stays out. Before branch
// allotmoney the flush dropped it ("booked in an older period than Redis
// has is the store's alone"): Redis's new period lacked it, and A was
// then granted the whole budget on top (spend past a strict budget by
// what B spent while it lagged, every flush interval of the lag).
func TestProbeLaggingReplicaSpendCountsInNewPeriod(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	budget, cost := ledger.USD(1), ledger.USD(0.01)
	ended := time.Now().Add(-time.Second) // the period's end, passed by Redis's clock
	next := time.Now().Add(time.Hour)
	a := newAllotReplica(t, prefix, budget, time.Minute)
	b := newAllotReplica(t, prefix, budget, time.Minute)
	a.key.SetResetAt(ended)
	b.key.SetResetAt(ended)
	warm(t, b, cost)
	spendLocal(t, b, 5, cost) // the old period's spend
	if err := b.x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := budField(c, prefix, "k", "spent"); got != strconv.FormatInt(int64(5*cost), 10) {
		t.Fatalf("Redis has spent %s before the rollover, want %d", got, 5*cost)
	}
	// A rolls the period over (its sweep, or a request of its own).
	if err := a.s.ResetPeriod(ctx, store.KindKey, "k", next); err != nil {
		t.Fatal(err)
	}
	a.key.SetResetAt(next)
	a.key.SetSpent(0)
	if got := budField(c, prefix, "k", "period"); got != strconv.FormatInt(next.UnixNano(), 10) {
		t.Fatalf("Redis's period is %s, want %d", got, next.UnixNano())
	}
	// B has not rolled over yet: its requests decide against its allotment.
	const lagged = 10
	spendLocal(t, b, lagged, cost)
	if err := b.x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := b.x.Close(ctx); err != nil {
		t.Fatal(err)
	}
	want := lagged * cost
	if got := budField(c, prefix, "k", "spent"); got != strconv.FormatInt(int64(want), 10) {
		t.Fatalf("Redis's new period has spent %s, want %d: what the lagging replica spent after the rollover (and none of the old period's)", got, want)
	}
	// The new period has budget - want left; A may not hold the whole budget.
	h, err := a.s.Reserve(ctx, []*ledger.Account{a.key}, budget)
	if err == nil {
		h.Settle(budget)
		t.Fatalf("strict: the new period granted its whole budget %v after a lagging replica spent %v in it (Redis spent now %s)",
			budget.Dollars(), want.Dollars(), budField(c, prefix, "k", "spent"))
	}
	var ex *ledger.ExceededError
	if !errors.As(err, &ex) {
		t.Fatal(err)
	}
	h, err = a.s.Reserve(ctx, []*ledger.Account{a.key}, budget-want)
	if err != nil {
		t.Fatalf("the new period's rest (%v) was refused: %v", (budget - want).Dollars(), err)
	}
	h.Settle(budget - want)
	if got := budField(c, prefix, "k", "spent"); got != strconv.FormatInt(int64(budget), 10) {
		t.Fatalf("Redis has spent %s, want the budget %d", got, budget)
	}
}

// TestProbeLaggingReplicaUnheldSpendCountsInNewPeriod is
// TestProbeLaggingReplicaSpendCountsInNewPeriod for spend booked without a
// hold (a batch's cost, a charged cache hit: ledger.Spend) that the
// background carry takes to Redis (CarryUnheld, carryScript): booked by a
// replica whose view lags the rollover, after Redis's reset, it must land
// in the new period, as a hold's carry of it does. Before branch
// allotmoney the carry script answered "a later period: the store's alone"
// and Redis's new period never had it.
func TestProbeLaggingReplicaUnheldSpendCountsInNewPeriod(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	budget, batch := ledger.USD(1), ledger.USD(0.3)
	ended, next := time.Now().Add(-time.Second), time.Now().Add(time.Hour)
	a := newAllotReplica(t, prefix, budget, time.Minute)
	b := newAllotReplica(t, prefix, budget, time.Minute)
	a.key.SetResetAt(ended)
	b.key.SetResetAt(ended)
	h, err := b.s.Reserve(ctx, []*ledger.Account{b.key}, ledger.USD(0.01)) // Redis has the old period
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.01))
	if err := a.s.ResetPeriod(ctx, store.KindKey, "k", next); err != nil {
		t.Fatal(err)
	}
	ledger.Spend([]*ledger.Account{b.key}, batch) // B, lagging, books a batch's cost
	b.s.CarryUnheld([]*ledger.Account{b.key})
	want := strconv.FormatInt(int64(batch), 10)
	for deadline := time.Now().Add(time.Minute); budField(c, prefix, "k", "spent") != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Redis's new period has spent %s, want the batch B booked after the rollover (%s)", budField(c, prefix, "k", "spent"), want)
		}
	}
	if got := budField(c, prefix, "k", "period"); got != strconv.FormatInt(next.UnixNano(), 10) {
		t.Fatalf("Redis's period is %s, want %d", got, next.UnixNano())
	}
}
