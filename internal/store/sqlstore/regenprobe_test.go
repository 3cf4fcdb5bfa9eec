package sqlstore_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeLateSpendAcrossASecondRegenerate: spend naming a key's old hash
// a (a -> b) is written while b is regenerated again (b -> c). The
// writer's fallback read key_replacements (a -> b) and waited for b's row,
// which the second ReplaceKey had deleted; when it committed the UPDATE
// found no row and the spend reached no key, though a now forwards to c.
//
// Forced: another transaction holds a managed_objects row of b, so the
// second ReplaceKey stops after deleting b; the writer is started once it
// waits, and the other transaction ends once the writer waits for b.
func TestProbeLateSpendAcrossASecondRegenerate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := pgStoreAndConn(t)
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := s.ReplaceKey(ctx, "a", &store.Key{TokenHash: "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`INSERT INTO managed_objects (id, kind, key_hash, object, created_at, updated_at) VALUES ('f1', 'file', 'b', '{}', 0, 0)`); err != nil {
		t.Fatal(err)
	}
	hold, holdPID := lock(t, raw, `SELECT 1 FROM managed_objects WHERE id = 'f1' FOR UPDATE`)
	replaced := make(chan error, 1)
	go func() { replaced <- s.ReplaceKey(ctx, "b", &store.Key{TokenHash: "c"}) }()
	replacerPID, ok := blockedBy(t, raw, []int{holdPID}, replaced)
	if !ok {
		t.Fatalf("the second regenerate did not wait: %v", <-replaced)
	}
	now := time.Now()
	written := make(chan error, 1)
	go func() {
		written <- s.ApplySpend(ctx, []store.SpendLog{{RequestID: "late", KeyHash: "a", Cost: 1, StartedAt: now, EndedAt: now,
			ModelGroup: "m", Budgets: []store.BudgetRef{{Kind: store.KindKeyModel, ID: "a/m"}}}})
	}()
	if _, ok := blockedBy(t, raw, []int{replacerPID}, written); !ok {
		t.Logf("the writer did not wait for the second regenerate: %v", <-written)
	}
	if err := hold.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-replaced; err != nil {
		t.Fatal(err)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	k, err := s.GetKey(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(k.Spend-1) > 1e-9 || math.Abs(k.ModelSpend["m"]-1) > 1e-9 {
		t.Errorf("key c (a -> b -> c): spend %v, model spend %v; want 1 and 1: the late spend of a was lost", k.Spend, k.ModelSpend)
	}
}
