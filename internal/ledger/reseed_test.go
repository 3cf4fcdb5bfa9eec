package ledger_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestSweptAllotmentReseedsFromStore: a replica dies with spend booked
// against its allotment and not flushed; Redis lacks it, the store has it
// (its spend writer wrote the rows). When the dead replica's allotment
// lease is swept, the account is marked for a reseed, and the next hold
// takes the store's spend (docs/allotments.md, Failures), instead of
// leaving Redis short until the period ends. The reseed never lowers
// Redis's spend, and is done once.
//
// Parallel: it waits out two leases and two pending reseeds' 10 s
// (reseedWait) on a prefix of its own. The dying replicas' leases are 3 s,
// long enough that they cannot lapse before their flush and warm-up while
// other tests share the CPUs.
func TestSweptAllotmentReseedsFromStore(t *testing.T) {
	t.Parallel()
	c, prefix := realRedis(t)
	ctx := context.Background()
	budget, cost := ledger.USD(1), ledger.USD(0.01)
	a := newAllotReplica(t, prefix, budget, 3*time.Second)
	warm(t, a, cost)
	spendLocal(t, a, 5, cost)
	if err := a.x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	spendLocal(t, a, 3, cost) // booked, never flushed: A dies here
	flushed := strconv.FormatInt(int64(5*cost), 10)
	if got := budField(c, prefix, "k", "spent"); got != flushed {
		t.Fatalf("Redis has spent %s, want the flushed %s", got, flushed)
	}
	// B serves the key from the store's record, which has all eight.
	b := newAllotReplica(t, prefix, budget, time.Minute)
	stored := 8 * cost
	bud := budget.Dollars()
	b.key = ledger.NewBook(nil).Account(store.KindKey, "k", ledger.Spec{Spent: stored.Dollars(), Budget: &bud})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		h, err := b.s.Reserve(ctx, []*ledger.Account{b.key}, budget-stored)
		if err == nil {
			h.Release()
			break // A's allotment was swept: the budget's rest is free
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead replica's allotment was never returned: %v", err)
		}
	}
	want := strconv.FormatInt(int64(stored), 10)
	if got := budField(c, prefix, "k", "spent"); got != want {
		t.Fatalf("after the dead replica's allotment was swept, Redis has spent %s, want the store's %s", got, want)
	}
	if got := budField(c, prefix, "k", "rs"); got != "" {
		t.Fatalf("the reseed mark stayed after the reseed: %q", got)
	}
	// Spend on: counted once on top of the reseed.
	h, err := b.s.Reserve(ctx, []*ledger.Account{b.key}, cost)
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(cost)
	if got, want := budField(c, prefix, "k", "spent"), strconv.FormatInt(int64(stored+cost), 10); got != want {
		t.Fatalf("Redis has spent %s after one more request, want %s", got, want)
	}
	// A reseed never lowers: a replica whose store record lags (less than
	// Redis) sweeping another dead allotment leaves Redis's spend.
	d := newAllotReplica(t, prefix, budget, 3*time.Second)
	d.key = ledger.NewAccount(store.KindKey, "k", b.key.Spent(), budget)
	warm(t, d, cost) // an allotment, then D dies
	e := newAllotReplica(t, prefix, budget, time.Minute)
	e.key = ledger.NewAccount(store.KindKey, "k", cost, budget) // a lagging record
	before, _ := strconv.ParseInt(budField(c, prefix, "k", "spent"), 10, 64)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		h, err := e.s.Reserve(ctx, []*ledger.Account{e.key}, budget-ledger.Amount(before))
		if err == nil {
			h.Release()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second dead replica's allotment was never returned: %v", err)
		}
	}
	if got := budField(c, prefix, "k", "spent"); got != strconv.FormatInt(before, 10) {
		t.Fatalf("a reseed from a lagging record moved Redis's spend from %d to %s", before, got)
	}
}
