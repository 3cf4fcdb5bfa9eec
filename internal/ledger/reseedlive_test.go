package ledger_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestReseedLeavesLiveAllotmentsToTheirFlush: replica A dies with bookings
// on its allotment that never reached Redis; replica L, alive, has booked
// against its own allotment and not flushed yet. The store has both (their
// spend writers wrote the rows). When A's allotment is swept, the reseed
// raises Redis to the store's spend, L's bookings included; L's next flush
// then books them on Redis again. Redis must end with every booking once.
func TestReseedLeavesLiveAllotmentsToTheirFlush(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	budget, cost := ledger.USD(1), ledger.USD(0.01)
	a := newAllotReplica(t, prefix, budget, time.Second)
	warm(t, a, cost)
	spendLocal(t, a, 5, cost)
	if err := a.x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	spendLocal(t, a, 3, cost) // booked, never flushed: A dies here
	l := newAllotReplica(t, prefix, budget, time.Minute)
	l.key = ledger.NewAccount(store.KindKey, "k", 5*cost, budget)
	warm(t, l, cost)
	spendLocal(t, l, 4, cost) // booked, flushed below
	// B serves the key from the store's record: A's eight and L's four.
	b := newAllotReplica(t, prefix, budget, time.Minute)
	stored := 12 * cost
	bud := budget.Dollars()
	b.key = ledger.NewBook(nil).Account(store.KindKey, "k", ledger.Spec{Spent: stored.Dollars(), Budget: &bud})
	allotments := func() (n int) {
		fields, _ := c.HKeys(ctx, "{"+prefix+"}:bud:key:k").Result()
		for _, f := range fields {
			if strings.HasPrefix(f, "al.") {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(60 * time.Second); allotments() > 1; time.Sleep(20 * time.Millisecond) {
		h, err := b.s.Reserve(ctx, []*ledger.Account{b.key}, cost)
		if err == nil {
			h.Release()
		}
		if time.Now().After(deadline) {
			t.Fatal("the dead replica's allotment was never swept and the account never reseeded")
		}
	}
	if err := l.x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	got, _ := strconv.ParseInt(budField(c, prefix, "k", "spent"), 10, 64)
	if ledger.Amount(got) > stored {
		t.Fatalf("Redis has spent %d after L's flush; every booking once is %d: L's %d counted twice", got, int64(stored), int64(ledger.Amount(got)-stored))
	}
	if ledger.Amount(got) < 9*cost {
		t.Fatalf("Redis has spent %d: less than what reached it (%d)", got, int64(9*cost))
	}
}
