package sqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// TestDeleteUserBesideSpendWriter: deleting a user whose keys' spend is
// being written at the same moment waits for the writer (or the writer for
// it) and succeeds. deleteOwner locked the user's keys in the order the
// table returned them (insertion order) while the spend writer locks keys
// by hash: with a user's second key sorting before its first, the two
// transactions took one key each and waited for the other's, PostgreSQL
// aborted the deletion with a deadlock (40P01) and /user/delete answered 500.
//
// The interleaving is forced, not hoped for: a third transaction holds the
// budget row of the user's first key, so the deletion stops right after
// locking that key; the writer is started once it waits, and the third
// transaction ends once the writer waits too.
func TestDeleteUserBesideSpendWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := pgStoreAndConn(t)

	// "b" is created first, so the table returns it first; the writer
	// locks "a" first.
	const first, second = "bbbb", "aaaa"
	if err := s.CreateUser(ctx, &store.User{UserID: "leaver"}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{first, second} {
		if err := s.CreateKey(ctx, &store.Key{TokenHash: h, UserID: "leaver"}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	if err := s.ApplySpend(ctx, []store.SpendLog{{RequestID: "r0", KeyHash: first, UserID: "leaver", Cost: 1, StartedAt: now, EndedAt: now,
		Budgets: []store.BudgetRef{{Kind: store.KindKeyModel, ID: first + "/gpt-4"}}}}); err != nil {
		t.Fatal(err)
	}

	// Another user's key, sorting between the two, which the writer locks
	// between them.
	const between = "abbb"
	if err := s.CreateUser(ctx, &store.User{UserID: "stays"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, &store.Key{TokenHash: between, UserID: "stays"}); err != nil {
		t.Fatal(err)
	}

	// Two other transactions hold the first key's budget row and the key
	// in between.
	holdBudget, budgetPID := lock(t, raw, `SELECT 1 FROM budget_spend WHERE key_hash = $1 FOR UPDATE`, first)
	holdKey, keyPID := lock(t, raw, `SELECT 1 FROM keys WHERE token_hash = $1 FOR UPDATE`, between)

	deleted := make(chan error, 1)
	go func() { deleted <- s.DeleteUser(ctx, "leaver") }()
	deleterPID, ok := blockedBy(t, raw, []int{budgetPID}, deleted)
	if !ok {
		t.Fatalf("the deletion did not wait for the budget row: %v", <-deleted)
	}
	written := make(chan error, 1)
	go func() {
		written <- s.ApplySpend(ctx, []store.SpendLog{
			{RequestID: "r1", KeyHash: first, UserID: "leaver", Cost: 1, StartedAt: now, EndedAt: now},
			{RequestID: "r2", KeyHash: second, UserID: "leaver", Cost: 1, StartedAt: now, EndedAt: now},
			{RequestID: "r3", KeyHash: between, UserID: "stays", Cost: 1, StartedAt: now, EndedAt: now},
		})
	}()
	writerPID, ok := blockedBy(t, raw, []int{keyPID, deleterPID}, written)
	if !ok {
		t.Fatalf("the writer did not wait: %v", <-written)
	}
	// The deletion goes on; it may wait for the writer (the old order:
	// the writer holds the user's second key).
	if err := holdBudget.Commit(); err != nil {
		t.Fatal(err)
	}
	blockedBy(t, raw, []int{writerPID}, deleted)
	if err := holdKey.Commit(); err != nil {
		t.Fatal(err)
	}

	if err := <-deleted; err != nil {
		t.Errorf("DeleteUser beside the spend writer: %v", err)
	}
	if err := <-written; err != nil {
		t.Errorf("ApplySpend beside a user's deletion: %v", err)
	}
	if _, err := s.GetUser(ctx, "leaver"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the user is still there: %v", err)
	}
	for _, h := range []string{first, second} {
		if _, err := s.GetKey(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("key %s is still there: %v", h, err)
		}
	}
}

// lock runs query in a transaction of its own, left open, and returns it
// with its backend's pid.
func lock(t *testing.T, db *sql.DB, query string, args ...any) (*sql.Tx, int) {
	t.Helper()
	tx, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	var pid int
	if err := tx.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(query, args...); err != nil {
		t.Fatal(err)
	}
	return tx, pid
}

// blockedBy waits (up to two minutes) for a backend to wait on a lock that
// one of pids holds and returns its pid; false if done delivered first
// (the transaction did not wait; its result is put back) or the bound
// passed.
func blockedBy(t *testing.T, db *sql.DB, pids []int, done chan error) (int, bool) {
	t.Helper()
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); {
		var waiter int
		err := db.QueryRow(`SELECT pid FROM pg_stat_activity WHERE pg_blocking_pids(pid) && $1::int[] AND NOT pid = ANY($1::int[]) LIMIT 1`, pids).Scan(&waiter)
		switch {
		case err == nil:
			return waiter, true
		case !errors.Is(err, sql.ErrNoRows):
			t.Fatal(err)
		}
		select {
		case err := <-done:
			done <- err
			return 0, false
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Errorf("no backend waited on %v within two minutes", pids)
	return 0, false
}

// TestDeleteUserRetriesADeadlock: a deletion that PostgreSQL aborts to break
// a deadlock with another transaction (here one that locks the user's keys
// in the other order, as an operator's might) is run again and succeeds,
// rather than failing the request with a 500 that changed nothing.
func TestDeleteUserRetriesADeadlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := pgStoreAndConn(t)
	if err := s.CreateUser(ctx, &store.User{UserID: "leaver"}); err != nil {
		t.Fatal(err)
	}
	const first, last = "aaaa", "bbbb" // the order the deletion locks them in
	for _, h := range []string{first, last} {
		if err := s.CreateKey(ctx, &store.Key{TokenHash: h, UserID: "leaver"}); err != nil {
			t.Fatal(err)
		}
	}

	// The other transaction holds the last key; the deletion takes the
	// first and waits for it; the other then asks for the first: a cycle,
	// which PostgreSQL breaks by aborting the deletion (it waited first,
	// so its deadlock check runs first).
	other, otherPID := lock(t, raw, `SELECT 1 FROM keys WHERE token_hash = $1 FOR UPDATE`, last)
	deleted := make(chan error, 1)
	go func() { deleted <- s.DeleteUser(ctx, "leaver") }()
	if _, ok := blockedBy(t, raw, []int{otherPID}, deleted); !ok {
		t.Fatalf("the deletion did not wait for the other transaction: %v", <-deleted)
	}
	if _, err := other.Exec(`SELECT 1 FROM keys WHERE token_hash = $1 FOR UPDATE`, first); err != nil {
		t.Fatalf("the other transaction was the deadlock's victim, not the deletion: %v", err)
	}
	if err := other.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("DeleteUser after a deadlock: %v", err)
	}
	if _, err := s.GetUser(ctx, "leaver"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the user is still there: %v", err)
	}
	for _, h := range []string{first, last} {
		if _, err := s.GetKey(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("key %s is still there: %v", h, err)
		}
	}
}

// pgStoreAndConn is a store on a fresh PostgreSQL schema and a plain
// connection pool to the same schema (for the transactions a test holds
// open beside the store's); it skips without TOLLGATE_TEST_POSTGRES_URL.
func pgStoreAndConn(t *testing.T) (*sqlstore.DB, *sql.DB) {
	t.Helper()
	base := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if base == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	url := storetest.PostgresSchema(t, base)
	s, err := sqlstore.OpenPostgres(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	raw, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return s, raw
}

// TestReplaceKeyKeepsSpendCommittedMeanwhile: /key/regenerate (ReplaceKey)
// read the old key's spend, then deleted the row: a spend batch holding the
// row (adding to the key's spend) when the read ran, committing before the
// delete, lost its increment, since the new key was written with the spend
// read before it.
func TestReplaceKeyKeepsSpendCommittedMeanwhile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := pgStoreAndConn(t)
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "old-key", Spend: 0.25}); err != nil {
		t.Fatal(err)
	}
	hold, holdPID := lock(t, raw, `UPDATE keys SET spend = spend + 1.5 WHERE token_hash = $1`, "old-key")
	replaced := make(chan error, 1)
	go func() { replaced <- s.ReplaceKey(ctx, "old-key", &store.Key{TokenHash: "new-key"}) }()
	if _, ok := blockedBy(t, raw, []int{holdPID}, replaced); !ok {
		t.Fatalf("the replacement did not wait for the spend batch: %v", <-replaced)
	}
	if err := hold.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-replaced; err != nil {
		t.Fatalf("ReplaceKey: %v", err)
	}
	k, err := s.GetKey(ctx, "new-key")
	if err != nil {
		t.Fatal(err)
	}
	if k.Spend != 1.75 {
		t.Errorf("the regenerated key's spend is %v, want 1.75 (0.25 before, 1.5 booked by the batch it waited for)", k.Spend)
	}
}
