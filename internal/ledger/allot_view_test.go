package ledger_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
)

// TestAllotmentFlushNeverSetsTheViewBack: one replica alone on a key,
// requests held and settled against its allotment while flushes run
// without pause. This replica's view of the spend (what x-litellm-key-spend
// and soft budgets read) never counts less than it had settled before the
// read. Before the flush's answer was applied under the mirror's lock
// (mirrorFlushed), the booking left 'spent' before the mirror put Redis's
// figure in: for that moment the view was short of a whole interval's
// bookings.
func TestAllotmentFlushNeverSetsTheViewBack(t *testing.T) {
	_, prefix := realRedis(t)
	ctx := context.Background()
	cost := ledger.USD(0.0001)
	r := newAllotReplica(t, prefix, ledger.USD(1000), time.Minute)
	accts := []*ledger.Account{r.key}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the flusher, as fast as it goes
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = r.x.Flush(ctx, false)
		}
	}()
	// The requester settles and then reads; a reader reads. Each read
	// must count at least what was settled before it (the view may count
	// a booking twice for a moment, between a later reply mirroring it
	// and the flush's own answer: documented; never less).
	var under, settled atomic.Int64
	var work sync.WaitGroup
	for w := range 2 {
		work.Add(1)
		go func() {
			defer work.Done()
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				if w == 0 {
					h, err := r.x.Reserve(ctx, accts, cost)
					if err != nil {
						t.Errorf("refused: %v", err)
						return
					}
					h.Settle(cost)
					settled.Add(int64(cost))
				}
				before := settled.Load()
				if v := int64(r.key.Spent()); v < before && under.Add(1) <= 3 {
					t.Logf("reader %d: the view says %d after %d was settled", w, v, before)
				}
			}
		}()
	}
	work.Wait()
	close(stop)
	wg.Wait()
	t.Logf("%d holds local, %d per request, %d flushes; the view below what was settled %d times", r.x.Local.Load(), r.x.Remote.Load(), r.x.Flushes.Load(), under.Load())
	if under.Load() > 0 {
		t.Fatalf("the spend view was below what this replica had settled %d times", under.Load())
	}
}

// TestAllotmentOwedSpendCarriedOnceThenLocal: spend booked without a hold
// (a batch, ledger.Spend) while this replica holds an allotment of the
// account is owed to Redis: the account's next request holds per request
// and carries it, once, and the one after is decided against the
// allotment again (owesRedis is cleared by the carry: the account is not
// left per request).
func TestAllotmentOwedSpendCarriedOnceThenLocal(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	cost := ledger.USD(0.01)
	r := newAllotReplica(t, prefix, ledger.USD(10), time.Minute)
	warm(t, r, cost)
	spendLocal(t, r, 1, cost)
	if err := r.x.Flush(ctx, false); err != nil {
		t.Fatal(err)
	}
	unheld := ledger.USD(0.5)
	ledger.Spend([]*ledger.Account{r.key}, unheld)
	remote := r.x.Remote.Load()
	h, err := r.x.Reserve(ctx, []*ledger.Account{r.key}, cost)
	if err != nil {
		t.Fatal(err)
	}
	if r.x.Remote.Load() == remote {
		t.Fatal("the request after spend owed to Redis was decided against the allotment: nothing carried it")
	}
	h.Settle(cost)
	// One request, not more: the last flush sized the allotment from what
	// was asked per interval, scaled by how long the interval really was,
	// so on a slow machine it may have room for one request only (never
	// less: the largest hold asked).
	spendLocal(t, r, 1, cost) // fails unless decided against the allotment again
	if err := r.x.Close(ctx); err != nil {
		t.Fatal(err)
	}
	want := int64(unheld + 3*cost)
	if got := budField(c, prefix, "k", "spent"); got != strconv.FormatInt(want, 10) {
		t.Fatalf("Redis has spent %s, want %d (the owed spend carried once)", got, want)
	}
	if r.key.Spent() != ledger.Amount(want) {
		t.Fatalf("the view says %v, want %v", r.key.Spent(), ledger.Amount(want))
	}
}
