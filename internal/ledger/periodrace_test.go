package ledger

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestPeriodRolloverSeedsNewPeriodWithNewSpend: holds run on an account
// while its budget period rolls over (Book.Account past the reset time).
// A hold that reads the new period must read the new period's spend with
// it: before, the reset time was published first and the spend set to zero
// after, and a hold between the two seeded Redis's new period with the
// whole of last period's spend (refusing the account until an edit or the
// next period). Redis's new period must start from zero, round after
// round.
func TestPeriodRolloverSeedsNewPeriodWithNewSpend(t *testing.T) {
	c, r, prefix := redisRig(t, "period")
	s := NewShared(r, SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	ctx := context.Background()

	var now atomic.Int64
	now.Store(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixNano())
	b := NewBook(nil) // Redis follows through the holds' period alone
	b.now = func() time.Time { return time.Unix(0, now.Load()) }
	budget, dur := 1e6, "1s"
	first := time.Unix(0, now.Load()).Add(time.Second)
	a := b.Account(store.KindKey, "k", Spec{Budget: &budget, BudgetDuration: &dur, ResetAt: &first})
	spec := Spec{Budget: &budget, BudgetDuration: &dur}
	last := USD(1000) // last period's spend
	key := s.key(a)

	const rounds, holders = 1000, 8
	for round := range rounds {
		a.SetSpent(last)
		var stop atomic.Bool
		var after atomic.Int64 // holds begun after the rollover
		var rolled atomic.Bool
		var wg sync.WaitGroup
		for range holders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					was := rolled.Load()
					h, err := s.Reserve(ctx, []*Account{a}, 1)
					if err != nil {
						t.Error(err)
						return
					}
					h.Release()
					if was {
						after.Add(1)
					}
				}
			}()
		}
		now.Add(int64(time.Second)) // the period ends
		b.Account(store.KindKey, "k", spec)
		rolled.Store(true)
		for deadline := time.Now().Add(30 * time.Second); after.Load() < holders && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		stop.Store(true)
		wg.Wait()
		if t.Failed() {
			return
		}
		period := strconv.FormatInt(a.resetAt.Load(), 10)
		got, err := c.HMGet(ctx, key, "spent", "period").Result()
		if err != nil {
			t.Fatal(err)
		}
		if got[1] != period {
			t.Fatalf("round %d: Redis has period %v, the account %s: no hold carried the new period", round, got[1], period)
		}
		if got[0] != "0" {
			t.Fatalf("round %d: Redis started the new period with spent %v: a hold read the new period with last period's spend (%d)", round, got[0], last)
		}
	}
}
