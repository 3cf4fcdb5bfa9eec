package ledger_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
)

// TestProbeLoweredBudgetStopsLocalDecisions: strict mode, a budget an
// operator lowers below what a replica's open allotment holds. Requests
// after the edit must be decided as without allotments (three of a budget
// of three requests), not against the allotment's room until the next
// flush: that room was sized on the old budget (about four times the last
// interval's asks, branch allotbudget), and each request decided against
// it passes the new budget.
func TestProbeLoweredBudgetStopsLocalDecisions(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	cost := ledger.USD(0.01)
	r := newAllotReplica(t, prefix, ledger.USD(1), time.Minute)
	warm(t, r, cost) // an open allotment of about forty requests' cost
	r.key.SetBudget(3 * cost)
	granted := 0
	for range 10 {
		h, err := r.x.Reserve(ctx, []*ledger.Account{r.key}, cost)
		if err != nil {
			continue
		}
		granted++
		h.Settle(cost)
	}
	if err := r.x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	if granted > 3 {
		t.Fatalf("%d requests of %v granted after the budget was lowered to %v (%d decided against the allotment); Redis has spent %s",
			granted, cost.Dollars(), (3 * cost).Dollars(), r.x.Local.Load(), budField(c, prefix, "k", "spent"))
	}
	if got := budField(c, prefix, "k", "spent"); got != strconv.FormatInt(int64(granted)*int64(cost), 10) {
		t.Fatalf("Redis has spent %s for %d requests of %d", got, granted, cost)
	}
}
