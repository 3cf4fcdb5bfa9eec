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

// TestProbeReseedUnreadableReleasedAtOnce: accounts the store cannot read
// alone (organisations, budget_spend's, the gateway's budget) or no longer
// has (a deleted key) stayed pending, held and listed in the reseed set,
// until a hold's sweep let them lapse 10 s on (never, for one no request
// touches again): every heartbeat picked them again among its 32, crowding
// out the readable ones. No read will ever come for them: the round must
// mark them 'rs' (the next hold's view, as before branch reseed), release
// them and drop them from the set.
func TestProbeReseedUnreadableReleasedAtOnce(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	b := newAllotReplica(t, prefix, ledger.USD(1), time.Minute)
	set := "{" + prefix + "}:reseed"
	pend := int64(ledger.USD(0.05))
	exp := time.Now().Add(time.Minute).UnixMilli()
	var ks []string
	for i := range 40 {
		k := "{" + prefix + "}:bud:organization:o" + strconv.Itoa(i)
		c.HSet(ctx, k, "spent", 0, "held", pend, "rq", strconv.FormatInt(pend, 10)+":"+strconv.FormatInt(exp, 10))
		c.SAdd(ctx, set, k)
		ks = append(ks, k)
	}
	b.s.SetSpendReader(func(context.Context, store.Kind, string) (ledger.Amount, time.Time, bool, error) {
		return 0, time.Time{}, false, nil
	})
	for range 3 {
		if err := b.s.ReseedPending(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.SCard(ctx, set).Val(); n != 0 {
		t.Fatalf("%d unreadable accounts stay in the reseed set after three rounds", n)
	}
	for _, k := range ks {
		if h := c.HGet(ctx, k, "held").Val(); h != "0" || c.HExists(ctx, k, "rq").Val() || c.HGet(ctx, k, "rs").Val() != strconv.FormatInt(pend, 10) {
			t.Fatalf("%s: held %s, rq %q, rs %q: want released into 'rs'", k, h, c.HGet(ctx, k, "rq").Val(), c.HGet(ctx, k, "rs").Val())
		}
	}
}
