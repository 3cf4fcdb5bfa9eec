package sqlstore_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
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

// TestProbeLateSpendOfAReplacedKeyLocksInOrder: the writer locks keys by
// hash, as deleteOwner does, so that the two wait for each other rather
// than deadlock. Spend naming a regenerated key's old hash (z, replaced
// by b) was booked on b when the UPDATE of z found no row: after the keys
// sorting between b and z, which the writer already held. A deletion of
// the owner of b and k1 took b, then waited for k1 (the writer's), and
// the writer waited for b: a cycle that PostgreSQL breaks after
// deadlock_timeout by aborting one of them (run again by DB.tx).
//
// Forced: another transaction holds k2, so the writer stops holding k1;
// the deletion is started once it waits, and the other transaction ends
// once the deletion waits for the writer. The probe then watches for the
// cycle until both are done.
func TestProbeLateSpendOfAReplacedKeyLocksInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := pgStoreAndConn(t)
	for _, u := range []string{"leaver", "stays"} {
		if err := s.CreateUser(ctx, &store.User{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []store.Key{{TokenHash: "z", UserID: "leaver"}, {TokenHash: "k1", UserID: "leaver"}, {TokenHash: "k2", UserID: "stays"}} {
		if err := s.CreateKey(ctx, &k); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ReplaceKey(ctx, "z", &store.Key{TokenHash: "b", UserID: "leaver"}); err != nil {
		t.Fatal(err)
	}
	hold, holdPID := lock(t, raw, `SELECT 1 FROM keys WHERE token_hash = 'k2' FOR UPDATE`)
	now := time.Now()
	written := make(chan error, 1)
	go func() {
		written <- s.ApplySpend(ctx, []store.SpendLog{
			{RequestID: "r1", KeyHash: "k1", UserID: "leaver", Cost: 1, StartedAt: now, EndedAt: now},
			{RequestID: "r2", KeyHash: "k2", UserID: "stays", Cost: 1, StartedAt: now, EndedAt: now},
			{RequestID: "r3", KeyHash: "z", UserID: "leaver", Cost: 1, StartedAt: now, EndedAt: now},
		})
	}()
	writerPID, ok := blockedBy(t, raw, []int{holdPID}, written)
	if !ok {
		t.Fatalf("the writer did not wait for k2: %v", <-written)
	}
	deleted := make(chan error, 1)
	go func() { deleted <- s.DeleteUser(ctx, "leaver") }()
	deleterPID, ok := blockedBy(t, raw, []int{writerPID}, deleted)
	if !ok {
		t.Fatalf("the deletion did not wait for the writer: %v", <-deleted)
	}
	if err := hold.Commit(); err != nil {
		t.Fatal(err)
	}
	var errs [2]error
	var got [2]bool
	cycle := false
	for end := time.Now().Add(2 * time.Minute); !(got[0] && got[1]) && time.Now().Before(end); {
		var n int
		if err := raw.QueryRow(`SELECT count(*) FROM pg_stat_activity
			WHERE pid = $1 AND $2 = ANY(pg_blocking_pids($1)) AND $1 = ANY(pg_blocking_pids($2))`, writerPID, deleterPID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		cycle = cycle || n > 0
		select {
		case errs[0] = <-written:
			got[0] = true
		case errs[1] = <-deleted:
			got[1] = true
		case <-time.After(2 * time.Millisecond):
		}
	}
	if !got[0] || !got[1] {
		t.Fatalf("the writer (%v) or the deletion (%v) did not end within two minutes", got[0], got[1])
	}
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("writer: %v; deletion: %v", errs[0], errs[1])
	}
	if cycle {
		t.Errorf("the writer and the deletion each waited for the other (a deadlock, aborted and run again): the replaced key's spend was booked out of the keys' order")
	}
	if _, err := s.GetKey(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("key b outlived its user: %v", err)
	}
	// Booked once, whatever runs the batch took.
	if k, err := s.GetKey(ctx, "k2"); err != nil || math.Abs(k.Spend-1) > 1e-9 {
		t.Errorf("key k2: %+v, %v; want spend 1", k, err)
	}
	if u, err := s.GetUser(ctx, "stays"); err != nil || math.Abs(u.Spend-1) > 1e-9 {
		t.Errorf("user stays: %+v, %v; want spend 1", u, err)
	}
	if n, err := sqlstore.QueryInt(ctx, s, `SELECT COUNT(*) FROM spend_logs`); err != nil || n != 3 {
		t.Errorf("%d spend rows (%v), want 3", n, err)
	}
}
