package ledger_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
)

// TestProbeAllotmentEditedSpendStopsLocalDecisions: an operator raises an
// account's spend on Redis (SetSpent) to near its budget while a replica
// holds an allotment of it. Once the replica's next flush has seen the
// edit, requests must not be decided against room the budget no longer
// has: strict, spend on Redis never passes the budget.
func TestProbeAllotmentEditedSpendStopsLocalDecisions(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	budget, cost := ledger.USD(1), ledger.USD(0.01)
	r := newAllotReplica(t, prefix, budget, time.Minute)
	warm(t, r, cost)
	if held, _ := strconv.ParseInt(budField(c, prefix, "k", "held"), 10, 64); held < int64(10*cost) {
		t.Fatalf("Redis holds %d: no allotment to probe", held)
	}
	edited := ledger.USD(0.95) // 0.05 left: five requests
	if err := r.s.SetSpent(ctx, r.key.Kind, r.key.ID, edited); err != nil {
		t.Fatal(err)
	}
	r.key.SetSpent(edited) // the replica that served the edit
	if err := r.x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	served := burst(t, r, 20, cost) // one interval's requests, no flush between
	if err := r.x.Close(ctx); err != nil {
		t.Fatal(err)
	}
	spent, _ := strconv.ParseInt(budField(c, prefix, "k", "spent"), 10, 64)
	if ledger.Amount(spent) > budget {
		t.Fatalf("strict: Redis has spent %v on a budget of %v after an edit to %v (%v served after it, %d decided locally)",
			ledger.Amount(spent).Dollars(), budget.Dollars(), edited.Dollars(), served.Dollars(), r.x.Local.Load())
	}
}

// TestProbeAllotmentLoweredBudgetStopsLocalDecisions: the budget is
// lowered below spend + this replica's allotment (an operator's edit the
// replica has read): after the next flush nothing more is decided against
// the allotment's room, and spend never passes the new budget.
func TestProbeAllotmentLoweredBudgetStopsLocalDecisions(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	cost := ledger.USD(0.01)
	r := newAllotReplica(t, prefix, ledger.USD(1), time.Minute)
	warm(t, r, cost)
	spendLocal(t, r, 3, cost)
	lowered := ledger.USD(0.1) // 0.07 left: seven requests
	r.key.SetBudget(lowered)
	if err := r.x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	burst(t, r, 20, cost)
	if err := r.x.Close(ctx); err != nil {
		t.Fatal(err)
	}
	spent, _ := strconv.ParseInt(budField(c, prefix, "k", "spent"), 10, 64)
	if ledger.Amount(spent) > lowered {
		t.Fatalf("strict: Redis has spent %v on a budget lowered to %v", ledger.Amount(spent).Dollars(), lowered.Dollars())
	}
}

// TestProbeAllotmentOwnRoomDoesNotRefuse: a strict request whose worst
// case fits the budget (nothing spent) but not this replica's allotment of
// it goes per request; Redis must not refuse it because of the room this
// same replica's allotment holds unused.
func TestProbeAllotmentOwnRoomDoesNotRefuse(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	budget, cost := ledger.USD(1), ledger.USD(0.01)
	r := newAllotReplica(t, prefix, budget, time.Minute)
	warm(t, r, cost)
	held, _ := strconv.ParseInt(budField(c, prefix, "k", "held"), 10, 64)
	if held <= 0 {
		t.Fatal("no allotment to probe")
	}
	big := budget - ledger.Amount(held) + cost // fits the budget, not what the allotment leaves
	h, err := r.x.Reserve(ctx, []*ledger.Account{r.key}, big)
	if err != nil {
		t.Fatalf("a request of %v on an untouched budget of %v was refused (this replica's allotment holds %v): %v",
			big.Dollars(), budget.Dollars(), ledger.Amount(held).Dollars(), err)
	}
	h.Settle(big)
	if err := r.x.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := budField(c, prefix, "k", "spent"); got != strconv.FormatInt(int64(big), 10) {
		t.Fatalf("Redis has spent %s, want %d", got, big)
	}
}

// burst asks n holds of cost at once on r's key (all in flight together,
// as in one flush interval of a busy replica), settles those admitted at
// their cost, and returns what they spent.
func burst(t *testing.T, r *allotReplica, n int, cost ledger.Amount) (served ledger.Amount) {
	t.Helper()
	var hs []ledger.Hold
	for range n {
		h, err := r.x.Reserve(context.Background(), []*ledger.Account{r.key}, cost)
		if err != nil {
			var ex *ledger.ExceededError
			if !errors.As(err, &ex) {
				t.Fatal(err)
			}
			continue
		}
		hs = append(hs, h)
	}
	for _, h := range hs {
		h.Settle(cost)
		served += cost
	}
	return served
}
