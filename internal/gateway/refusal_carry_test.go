package gateway

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/rscript"
	"github.com/tollgate/tollgate/internal/store"
)

// TestRefusalBeforeAHoldCarriesAtOnce: a replica's own view refuses a key
// before any hold - the response cache's spentOut, a batch's MayAfford -
// while the key owes Redis spend booked when Redis was away. That refusal
// must start the carry itself: with no heartbeat running here, no sweep
// ever comes (owed.go sweeps only after an answered heartbeat), so the
// refusal's carry is the only thing that can take the spend to Redis, and
// other replicas, which ask Redis, would serve the key past its budget
// without it. Redis must then count the spend once.
func TestRefusalBeforeAHoldCarriesAtOnce(t *testing.T) {
	tests := []struct {
		name   string
		refuse func(m *Books, p *auth.Principal) error
	}{
		{"spentOut (the cache path)", func(m *Books, p *auth.Principal) error { return m.spentOut(p, "", nil, "gpt-4") }},
		{"MayAfford (a batch)", func(m *Books, p *auth.Principal) error { return m.MayAfford(p, "gpt-4") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd := os.Getenv("TOLLGATE_TEST_REDIS_URL")
			if rd == "" {
				t.Skip("TOLLGATE_TEST_REDIS_URL is not set: skipping a test of budgets on Redis")
			}
			o, err := redis.ParseURL(rd)
			if err != nil {
				t.Fatal(err)
			}
			c := redis.NewClient(o)
			t.Cleanup(func() { c.Close() })
			r := rscript.NewRunner(c, rscript.Options{Log: slog.New(slog.DiscardHandler)})
			if err := r.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			prefix := "refcarry-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			t.Cleanup(func() {
				keys, _ := c.Keys(context.Background(), "{"+prefix+"}:*").Result()
				if len(keys) > 0 {
					c.Del(context.Background(), keys...)
				}
			})
			// No Announce: no heartbeat, so no sweep.
			sh := ledger.NewShared(r, ledger.SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
			m := &Books{Book: ledger.NewBook(nil), Snap: auth.NewSnapshot(nil), Holder: sh}
			budget := 1.0
			p := &auth.Principal{KeyHash: "k", Key: &store.Key{TokenHash: "k", Limits: store.Limits{MaxBudget: &budget}}}
			accts := m.accounts(p, "", nil, "gpt-4")
			key := accts[len(accts)-1]
			field := func() string {
				v, _ := c.HGet(context.Background(), "{"+prefix+"}:bud:key:k", "spent").Result()
				return v
			}

			// One request on Redis: the account is there, and the carry
			// script is loaded (a carry of 0.01 without a hold).
			h, err := sh.Reserve(context.Background(), accts, ledger.USD(0.5))
			if err != nil {
				t.Fatal(err)
			}
			h.Settle(ledger.USD(0.1))
			ledger.Spend(accts, ledger.USD(0.01))
			sh.CarryUnheld(accts)
			before := strconv.FormatInt(int64(ledger.USD(0.11)), 10)
			for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && field() != before; time.Sleep(10 * time.Millisecond) {
			}
			if got := field(); got != before {
				t.Fatalf("Redis has spent %s before the outage, want %s", got, before)
			}

			// Redis away: spend booked without a hold (a charged cache
			// hit, a batch: BookUnheld) takes the key past its budget;
			// nothing is sent, the account is noted for the sweep.
			r.Degrade(errors.New("test: redis taken for away"))
			m.BookUnheld(p, store.SpendLog{RequestID: "offline", ModelGroup: "gpt-4", Cost: 1})
			if n := sh.Owed(); n != 1 {
				t.Fatalf("%d accounts noted as owing Redis spend, want 1 (the key)", n)
			}
			r.Recover()

			// Back: this replica's own view refuses the key before any
			// hold. The refusal carries the spend.
			err = tt.refuse(m, p)
			var ae *apierror.Error
			if !errors.As(err, &ae) || ae.Code != "budget_exceeded" {
				t.Fatalf("the refusal is %v, want budget_exceeded", err)
			}
			want := strconv.FormatInt(int64(ledger.USD(1.11)), 10)
			for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && field() != want; time.Sleep(10 * time.Millisecond) {
			}
			if got := field(); got != want {
				t.Fatalf("Redis has spent %s a minute after the refusal, want %s: the refusal before a hold did not carry the key's offline spend (no sweep runs here)", got, want)
			}
			if key.Spent() != ledger.USD(1.11) {
				t.Fatalf("the replica's view has spent %v, want 1.11", key.Spent().Dollars())
			}
		})
	}
}
