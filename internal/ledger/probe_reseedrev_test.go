package ledger_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeReseedPeriodMismatchKeepsMark: a dead allotment swept by a
// flush (no hold's view raise: its amount all pending, 'rq') whose store
// read comes back in another period than Redis has (the store's rollover
// not written yet, or a period the read cannot see). The read is unusable,
// but the round released the pending amount with nothing raised and no
// 'rs' mark: the dead replica's unflushed spend was dropped for good,
// where before branch reseed the sweep's 'rs' mark had the next hold
// reseed it from its own view. It must at least leave that mark.
func TestProbeReseedPeriodMismatchKeepsMark(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	budget := ledger.USD(1)
	b := newAllotReplica(t, prefix, budget, time.Minute)
	period := time.Now().Add(24 * time.Hour).UnixNano()
	k := "{" + prefix + "}:bud:key:k"
	pend := int64(ledger.USD(0.05))
	exp := time.Now().Add(time.Minute).UnixMilli()
	c.HSet(ctx, k, "spent", int64(ledger.USD(0.1)), "period", period, "held", pend,
		"rq", strconv.FormatInt(pend, 10)+":"+strconv.FormatInt(exp, 10))
	c.SAdd(ctx, "{"+prefix+"}:reseed", k)
	b.s.SetSpendReader(func(context.Context, store.Kind, string) (ledger.Amount, time.Time, bool, error) {
		return ledger.USD(0.15), time.Time{}, true, nil // the store's period: none
	})
	if err := b.s.ReseedPending(ctx); err != nil {
		t.Fatal(err)
	}
	spent, _ := strconv.ParseInt(budField(c, prefix, "k", "spent"), 10, 64)
	rs, _ := strconv.ParseInt(budField(c, prefix, "k", "rs"), 10, 64)
	if spent == int64(ledger.USD(0.1)) && rs < pend && budField(c, prefix, "k", "rq") == "" {
		t.Fatalf("a store read of another period released the pending %d with nothing raised and 'rs' %d: the dead replica's spend is dropped", pend, rs)
	}
}
