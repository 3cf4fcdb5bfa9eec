package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestRefusedHoldOnFreshAccountExpires: a hold refused on an account Redis
// had not seen (a fresh key whose budget one request's worst case
// passes) seeds the account's hash before the refusal; the hash must get
// its expiry (a week) all the same, or every such key stays on Redis for
// good. Strict, up to and flex refusals alike; and a refused hold on a
// hash not touched for a day renews its expiry as a granted one does.
func TestRefusedHoldOnFreshAccountExpires(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	r := newAllotReplica(t, prefix, ledger.USD(1), time.Minute)
	tests := []struct {
		name string
		hold func(a *ledger.Account) (ledger.Hold, error)
	}{
		{"strict", func(a *ledger.Account) (ledger.Hold, error) {
			return r.s.Reserve(ctx, []*ledger.Account{a}, ledger.USD(2))
		}},
		{"up to", func(a *ledger.Account) (ledger.Hold, error) {
			return r.s.ReserveUpTo(ctx, []*ledger.Account{a}, ledger.USD(2))
		}},
		{"flex", func(a *ledger.Account) (ledger.Hold, error) {
			return r.s.ReserveFlex(ctx, []*ledger.Account{a}, ledger.Flex{Worst: ledger.USD(2), Estimate: ledger.USD(1), Capped: ledger.USD(1)})
		}},
	}
	for _, tt := range tests {
		id := "fresh-" + tt.name
		// Spent already past the budget (up to and flex refuse only then).
		a := ledger.NewAccount(store.KindKey, id, ledger.USD(1.5), ledger.USD(1))
		_, err := tt.hold(a)
		var ex *ledger.ExceededError
		if !errors.As(err, &ex) {
			t.Fatalf("%s: a hold past the budget of a fresh account was not refused: %v", tt.name, err)
		}
		k := "{" + prefix + "}:bud:key:" + id
		if n, _ := c.Exists(ctx, k).Result(); n != 1 {
			t.Fatalf("%s: the refused hold did not seed %s", tt.name, k)
		}
		if ttl, err := c.PTTL(ctx, k).Result(); err != nil || ttl <= 24*time.Hour {
			t.Fatalf("%s: the hash of a fresh account refused its first hold has expiry %v (%v), want about a week", tt.name, ttl, err)
		}
	}
	// A hash last touched more than a day ago: a refusal renews its expiry.
	k := "{" + prefix + "}:bud:key:old"
	old := time.Now().Add(-48 * time.Hour).UnixMilli()
	if err := c.HSet(ctx, k, "spent", int64(ledger.USD(1.5)), "period", 0, "y", old).Err(); err != nil {
		t.Fatal(err)
	}
	c.PExpire(ctx, k, time.Hour)
	a := ledger.NewAccount(store.KindKey, "old", ledger.USD(1.5), ledger.USD(1))
	if _, err := r.s.Reserve(ctx, []*ledger.Account{a}, ledger.USD(0.1)); err == nil {
		t.Fatal("a hold past the budget was not refused")
	}
	if ttl, _ := c.PTTL(ctx, k).Result(); ttl <= 24*time.Hour {
		t.Fatalf("a refused hold on a hash untouched for two days left its expiry at %v", ttl)
	}
}
