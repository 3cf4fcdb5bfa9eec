package ledger_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeViewCountingACarryTwiceDoesNotRaiseRedis: after Redis lost an
// account (marked: later holds raise it to their view), replica S carries
// a batch's cost ($0.20, booked without a hold) with a hold. Redis runs
// that hold, and before S reads its answer, the reply of a settle S queued
// after it is mirrored: Redis's spend (with the batch) plus what S still
// counts as carried (the batch again). S's view then had the batch twice,
// and kept it twice once the hold's answer let go of the carried spend;
// S's next hold raised Redis to that view, $0.20 over what was spent, for
// the rest of the period (a strict $1 budget then refused $0.20 early).
func TestProbeViewCountingACarryTwiceDoesNotRaiseRedis(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	_, s, _ := twoLiveReplicas(t, c, prefix)
	budget, batch := ledger.USD(1), ledger.USD(0.2)
	key := ledger.NewAccount(store.KindKey, "k", 0, budget)
	accts := []*ledger.Account{key}
	spend := func(amt ledger.Amount) {
		t.Helper()
		h, err := s.Reserve(ctx, accts, amt)
		if err != nil {
			t.Fatal(err)
		}
		h.Settle(amt)
	}
	spend(ledger.USD(0.1))                                             // heard: $0.10
	if err := c.Del(ctx, "{"+prefix+"}:bud:key:k").Err(); err != nil { // Redis emptied
		t.Fatal(err)
	}
	spend(0) // reseeds $0.10, marked
	if budField(c, prefix, "k", "rv") == "" {
		t.Fatal("the reseed after the loss was not marked")
	}
	early, err := s.Reserve(ctx, accts, 0) // a request in flight
	if err != nil {
		t.Fatal(err)
	}
	ledger.Spend(accts, batch) // unsynced: the next hold carries it
	s.SetFusedReply(func(v any, err error) (any, error) {
		early.Settle(0) // queued after the hold, whose reply is not read yet
		return v, err
	})
	gate := countGate{admit: "{" + prefix + "}:gate:admit", done: "{" + prefix + "}:gate:done"}
	h, _, err := s.ReserveGated(ctx, accts, ledger.AskStrict(0), gate)
	if err != nil {
		t.Fatal(err)
	}
	s.SetFusedReply(nil)
	want := strconv.FormatInt(int64(ledger.USD(0.3)), 10)
	if got := budField(c, prefix, "k", "spent"); got != want {
		t.Fatalf("the batch did not land once: Redis spent %s, want %s", got, want)
	}
	next, err := s.Reserve(ctx, accts, 0) // raises Redis to its view
	if err != nil {
		t.Fatal(err)
	}
	next.Release()
	ledger.SettleGated(h, 0, true, gate)
	if got := budField(c, prefix, "k", "spent"); got != want {
		t.Fatalf("after a later hold Redis has spent %s, want %s (S's view %v counted the batch twice and raised it)", got, want, key.Spent().Dollars())
	}
}
