package sqlstore_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// TestLateSpendFollowsReplacedKeys: spend that names a regenerated key's
// old hash (a request in flight across the regenerate) lands on the key
// that replaced it, through a chain of regenerates, model budget
// included; once that key is deleted it lands on no key (and the batch
// still succeeds).
func TestLateSpendFollowsReplacedKeys(t *testing.T) {
	bothEngines(t, func(t *testing.T, s *sqlstore.DB) {
		ctx := context.Background()
		at := time.Now().UTC()
		spend := func(id, hash string) {
			t.Helper()
			err := s.ApplySpend(ctx, []store.SpendLog{{RequestID: id, KeyHash: hash, Cost: 1, StartedAt: at, ModelGroup: "m",
				Budgets: []store.BudgetRef{{Kind: store.KindKeyModel, ID: hash + "/m"}}}})
			if err != nil {
				t.Fatal(err)
			}
		}
		check := func(hash string, want float64) {
			t.Helper()
			k, err := s.GetKey(ctx, hash)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(k.Spend-want) > 1e-9 || math.Abs(k.ModelSpend["m"]-want) > 1e-9 {
				t.Fatalf("key %s: spend %v, model spend %v; want %v", hash, k.Spend, k.ModelSpend, want)
			}
		}
		if err := s.CreateKey(ctx, &store.Key{TokenHash: "a"}); err != nil {
			t.Fatal(err)
		}
		spend("r1", "a")
		if err := s.ReplaceKey(ctx, "a", &store.Key{TokenHash: "b"}); err != nil {
			t.Fatal(err)
		}
		spend("r2", "a") // in flight across a -> b
		check("b", 2)
		if err := s.ReplaceKey(ctx, "b", &store.Key{TokenHash: "c"}); err != nil {
			t.Fatal(err)
		}
		spend("r3", "a") // across both regenerates
		spend("r4", "b")
		check("c", 4)
		// Regenerated back to a hash it had: a's own spend is its own.
		if err := s.ReplaceKey(ctx, "c", &store.Key{TokenHash: "a"}); err != nil {
			t.Fatal(err)
		}
		spend("r5", "a")
		spend("r6", "c")
		check("a", 6)
		if err := s.DeleteKey(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		spend("r7", "b")
		if err := s.CreateKey(ctx, &store.Key{TokenHash: "d"}); err != nil {
			t.Fatal(err)
		}
		spend("r8", "c")
		check("d", 0)
		if n, err := sqlstore.QueryInt(ctx, s, `SELECT COUNT(*) FROM key_replacements`); err != nil || n != 0 {
			t.Fatalf("%d forwardings left after the key was deleted (%v)", n, err)
		}
	})
}
