package ledger_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestSpendEditKeepsWhatWasGrantedBeforeIt: strict mode, two replicas.
// An operator raises the spend on Redis to near the budget through
// replica A (/key/update spend: Shared.SetSpent) while replica B holds
// room granted before the edit. An edit does not revoke what was granted
// before it: without allotments, B's per-request holds in flight settle
// on top of the edited spend; with them, B decides requests against the
// room its allotment held at the edit until its first flush run after
// the edit, and nothing after it. Either way Redis's spend ends at most
// the edited spend + what was held at the edit (here 1.20 of a budget of
// 1), and no request is granted once the edit is seen.
func TestSpendEditKeepsWhatWasGrantedBeforeIt(t *testing.T) {
	ctx := context.Background()
	budget, cost, edited := ledger.USD(1), ledger.USD(0.01), ledger.USD(0.95)
	edit := func(t *testing.T, a *allotReplica) {
		t.Helper()
		if err := a.s.SetSpent(ctx, store.KindKey, "k", edited, a.key.ResetAt()); err != nil {
			t.Fatal(err)
		}
		a.key.SetSpent(edited)
	}
	t.Run("per request", func(t *testing.T) {
		c, prefix := realRedis(t)
		a := newAllotReplica(t, prefix, budget, time.Minute)
		b := newAllotReplica(t, prefix, budget, time.Minute)
		var hs []ledger.Hold
		for range 25 { // in flight at the edit
			h, err := b.s.Reserve(ctx, []*ledger.Account{b.key}, cost)
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
		held, _ := strconv.ParseInt(budField(c, prefix, "k", "held"), 10, 64)
		edit(t, a)
		if served := burst(t, b, 10, cost); served != 0 {
			t.Fatalf("%v granted per request after the edit", served.Dollars())
		}
		for _, h := range hs {
			h.Settle(cost)
		}
		spent, _ := strconv.ParseInt(budField(c, prefix, "k", "spent"), 10, 64)
		if want := int64(edited) + held; spent != want {
			t.Fatalf("Redis has spent %d, want the edited %d + the holds in flight at the edit %d", spent, edited, held)
		}
	})
	t.Run("allotments", func(t *testing.T) {
		c, prefix := realRedis(t)
		a := newAllotReplica(t, prefix, budget, time.Minute)
		b := newAllotReplica(t, prefix, budget, time.Minute)
		warm(t, b, cost) // B's allotment: room for about 25 requests
		room, _ := strconv.ParseInt(budField(c, prefix, "k", "held"), 10, 64)
		if room < int64(10*cost) {
			t.Fatalf("Redis holds %d: no allotment to probe", room)
		}
		edit(t, a)
		before := burst(t, b, 100, cost) // B has not flushed since: decided against its room
		if int64(before) > room {
			t.Fatalf("B was granted %v after the edit, more than its allotment held at the edit (%v)", before.Dollars(), ledger.Amount(room).Dollars())
		}
		if err := b.x.Flush(ctx, false); err != nil { // B sees the edit
			t.Fatal(err)
		}
		local := b.x.Local.Load()
		for range 3 {
			if after := burst(t, b, 20, cost); after != 0 {
				t.Fatalf("%v granted after B's flush saw the edit (Redis spent %s, held %s)",
					after.Dollars(), budField(c, prefix, "k", "spent"), budField(c, prefix, "k", "held"))
			}
			if err := b.x.Flush(ctx, false); err != nil {
				t.Fatal(err)
			}
		}
		if got := b.x.Local.Load(); got != local {
			t.Fatalf("%d requests decided against the allotment after B's flush saw the edit", got-local)
		}
		if err := b.x.Close(ctx); err != nil {
			t.Fatal(err)
		}
		spent, _ := strconv.ParseInt(budField(c, prefix, "k", "spent"), 10, 64)
		if want := int64(edited + before); spent != want {
			t.Fatalf("Redis has spent %d, want the edited %d + what B was granted before its flush %d", spent, edited, before)
		}
		t.Logf("B's allotment held %v at the edit; B was granted %v against it; Redis spent %v of %v",
			ledger.Amount(room).Dollars(), before.Dollars(), ledger.Amount(spent).Dollars(), budget.Dollars())
		if got := budField(c, prefix, "k", "held"); got != "0" {
			t.Fatalf("Redis holds %s after Close", got)
		}
	})
}

// TestRedisEmptiedPromisesAnAllotmentTwiceUntilItsFlush: strict mode, two
// replicas holding allotments, then Redis loses the account and the
// presence set (restarted without persistence, FLUSHDB). Replica A's
// flush reseeds the account with its own allotment only: until replica
// B's next flush, B's allotment is missing from 'held', so Redis grants
// per request the room B still decides against (promised twice). B's
// flush re-registers its allotment (its requests in flight included),
// and from then on nothing is promised twice. The overspend is at most
// what B's allotment held when Redis lost it (each replica's allotment,
// at most remaining / (2 × live replicas)), for as long as B has not
// flushed since (one interval while Redis answers it).
func TestRedisEmptiedPromisesAnAllotmentTwiceUntilItsFlush(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	budget, cost := ledger.USD(1), ledger.USD(0.01)
	a := newAllotReplica(t, prefix, budget, time.Minute)
	b := newAllotReplica(t, prefix, budget, time.Minute)
	heldNow := func() int64 {
		v, _ := strconv.ParseInt(budField(c, prefix, "k", "held"), 10, 64)
		return v
	}
	warm(t, b, cost)
	bRoom := heldNow()
	warm(t, a, cost)
	aRoom := heldNow() - bRoom
	if bRoom < int64(10*cost) || aRoom < int64(10*cost) {
		t.Fatalf("allotments of %d and %d: none to probe", aRoom, bRoom)
	}
	var inflight []ledger.Hold // B's, decided against its allotment
	for range 5 {
		before := b.x.Local.Load()
		h, err := b.x.Reserve(ctx, []*ledger.Account{b.key}, cost)
		if err != nil {
			t.Fatal(err)
		}
		if b.x.Local.Load() == before {
			t.Fatal("not decided against B's allotment")
		}
		inflight = append(inflight, h)
	}
	keys, err := c.Keys(ctx, "{"+prefix+"}*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys %v: %v", keys, err)
	}
	if err := c.Del(ctx, keys...).Err(); err != nil { // Redis emptied
		t.Fatal(err)
	}
	if err := a.x.Flush(ctx, false); err != nil { // A reseeds the account
		t.Fatal(err)
	}
	if got := heldNow(); got != aRoom {
		t.Fatalf("after A's flush Redis holds %d, want A's allotment %d", got, aRoom)
	}
	// Until B flushes, Redis grants per request what B still decides against.
	twice := budget - ledger.Amount(aRoom)
	h, err := a.s.Reserve(ctx, []*ledger.Account{a.key}, twice)
	if err != nil {
		t.Fatalf("Redis refused %v with only A's allotment held: %v", twice.Dollars(), err)
	}
	h.Settle(twice)
	served := burst(t, b, 100, cost)
	if int64(served)+int64(5*cost) > bRoom {
		t.Fatalf("B was granted %v and 5 in flight against an allotment of %v", served.Dollars(), ledger.Amount(bRoom).Dollars())
	}
	if err := b.x.Flush(ctx, false); err != nil { // B re-registers its allotment
		t.Fatal(err)
	}
	if got, want := heldNow(), aRoom+int64(5*cost); got < want {
		t.Fatalf("after B's flush Redis holds %d: B's requests in flight (%d) are not held again beside A's allotment (%d)", got, 5*cost, aRoom)
	}
	local := b.x.Local.Load()
	if after := burst(t, b, 20, cost); after != 0 {
		t.Fatalf("%v granted once B's flush had re-registered its allotment on a spent budget", after.Dollars())
	}
	if got := b.x.Local.Load(); got != local {
		t.Fatalf("%d requests decided against B's allotment after its flush", got-local)
	}
	for _, h := range inflight {
		h.Settle(cost)
	}
	for _, r := range []*allotReplica{a, b} {
		if err := r.x.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	spent, _ := strconv.ParseInt(budField(c, prefix, "k", "spent"), 10, 64)
	if limit := int64(budget) + bRoom; spent > limit {
		t.Fatalf("Redis has spent %d: past the budget %d by more than B's allotment when Redis lost it (%d)", spent, budget, bRoom)
	}
	if want := int64(twice + served + 5*cost); spent != want {
		t.Fatalf("Redis has spent %d, want %d: every booking once", spent, want)
	}
	t.Logf("A's allotment %v, B's %v at the loss; spent %v of %v (over by %v, within B's allotment)",
		ledger.Amount(aRoom).Dollars(), ledger.Amount(bRoom).Dollars(), ledger.Amount(spent).Dollars(), budget.Dollars(),
		(ledger.Amount(spent) - budget).Dollars())
	if got := budField(c, prefix, "k", "held"); got != "0" {
		t.Fatalf("Redis holds %s after Close", got)
	}
}
