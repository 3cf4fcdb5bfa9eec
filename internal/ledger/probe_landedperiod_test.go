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

// TestProbeLastPeriodsLandingsDoNotCountInTheNewShare: default mode, two
// live replicas on a $1 daily budget. Replica S never holds for the
// account (the other replica's holds made it on Redis); it books $0.90 of
// charged cache hits on it, which its background carry lands on Redis
// (heard.landed, never heard: no answer of S's told what remains). The
// period rolls over (spend back to zero), and S is cut off from Redis:
// its share is half of what its view has left of the new period ($0.50).
// The last period's landings are not this period's spend: they must not
// count against it. (On branch allotmoney landed was zeroed only by an
// answer that told what remains, never by a rollover: S refused the new
// period past $0.05, and, as landings add up over periods, everything.)
func TestProbeLastPeriodsLandingsDoNotCountInTheNewShare(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	r, s, other := twoLiveReplicas(t, c, prefix)
	if s.Alive() != 2 {
		t.Fatalf("S counts %d replicas alive, want 2", s.Alive())
	}
	budget, dur := 1.0, "1d"
	resetAt := time.Now().Add(500 * time.Millisecond)
	spec := ledger.Spec{Budget: &budget, BudgetDuration: &dur, ResetAt: &resetAt}
	ob := ledger.NewBook(nil)
	h, err := other.Reserve(ctx, []*ledger.Account{ob.Account(store.KindKey, "k", spec)}, 0) // Redis has the account
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	book := ledger.NewBook(nil)
	key := book.Account(store.KindKey, "k", spec)
	accts := []*ledger.Account{key}
	for range 9 {
		ledger.Spend(accts, ledger.USD(0.1))
		s.CarryUnheld(accts)
		s.WaitResolved()
	}
	if got, want := budField(c, prefix, "k", "spent"), strconv.FormatInt(int64(ledger.USD(0.9)), 10); got != want || key.Unsynced() != 0 {
		t.Fatalf("Redis has spent %s, want %s (%d unsynced)", got, want, key.Unsynced())
	}
	for deadline := time.Now().Add(time.Minute); !time.Now().After(resetAt); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the period never ended")
		}
	}
	if key = book.Account(store.KindKey, "k", spec); key.Spent() != 0 || !key.ResetAt().After(resetAt) {
		t.Fatalf("no rollover: spent %v, reset at %v", key.Spent(), key.ResetAt())
	}
	if err := s.ResetPeriod(ctx, store.KindKey, "k", key.ResetAt()); err != nil { // as the server's onReset does
		t.Fatal(err)
	}

	r.Degrade(errAway) // cut off: S spends its share of the new period
	cost := ledger.USD(0.01)
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
	if want := ledger.USD(0.5); served != want {
		t.Fatalf("cut off in a new period, S spent %v of its share %v (half the budget): the last period's landings counted against it",
			served.Dollars(), want.Dollars())
	}
}
