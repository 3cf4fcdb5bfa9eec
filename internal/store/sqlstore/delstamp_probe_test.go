package sqlstore_test

import (
	"context"
	"database/sql"
	"maps"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// TestProbeChangeMarkSubtransactions: on PostgreSQL, a row written in a
// savepoint carries its top-level transaction's id, and a transaction
// that had no id yet when a mark was taken (it had only read) is still at
// or after that mark once it writes: ChangesFrom reads both once they
// commit. A write rolled back to its savepoint stamps nothing.
func TestProbeChangeMarkSubtransactions(t *testing.T) {
	pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if pg == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set")
	}
	ctx := context.Background()
	dsn := storetest.PostgresSchema(t, pg)
	s, err := sqlstore.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	// Another session's transaction, open across the whole test, holds the
	// cluster's snapshot xmin (the mark) below the rows written here, as
	// CI's other packages' transactions on the same PostgreSQL cluster do:
	// a mark then re-reads committed rows (conservative), so what is
	// checked below is the rows' state, not only their absence.
	other, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback()
	if _, err := other.ExecContext(ctx, `SELECT txid_current()`); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, id := range []string{"sub", "undone", "late"} {
		if err := s.CreateUser(ctx, &store.User{UserID: id, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	stamp := func(id string) (updated, xid int64) {
		t.Helper()
		if err := raw.QueryRowContext(ctx, `SELECT updated_at, changed_xid FROM users WHERE user_id = $1`, id).Scan(&updated, &xid); err != nil {
			t.Fatal(err)
		}
		return updated, xid
	}
	_, undoneXid := stamp("undone")
	sub, err := s.GetUser(ctx, "sub")
	if err != nil {
		t.Fatal(err)
	}
	subBefore := sub.UpdatedAt
	mark := func() uint64 {
		t.Helper()
		m, ok, err := s.ChangeMark(ctx)
		if err != nil || !ok {
			t.Fatalf("ChangeMark: %d %v %v", m, ok, err)
		}
		return m
	}
	users := func(from uint64) map[string]*store.User {
		t.Helper()
		snap, _, err := s.ChangesFrom(ctx, from)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*store.User{}
		for _, u := range snap.Users {
			got[u.UserID] = u
		}
		return got
	}
	exec := func(tx *sql.Tx, q string) {
		t.Helper()
		if _, err := tx.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	// A: begun and only read when the first mark is taken; writes in a
	// savepoint after a second mark, taken while it is open.
	a, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Rollback()
	exec(a, `SELECT 1`)
	m1 := mark()
	exec(a, `SAVEPOINT s1`)
	exec(a, `UPDATE users SET updated_at = updated_at + 1 WHERE user_id = 'sub'`)
	exec(a, `RELEASE SAVEPOINT s1`)
	exec(a, `SAVEPOINT s2`)
	exec(a, `UPDATE users SET updated_at = updated_at + 1 WHERE user_id = 'undone'`)
	exec(a, `ROLLBACK TO SAVEPOINT s2`)
	var top bool
	if err := a.QueryRowContext(ctx, `SELECT changed_xid = txid_current() FROM users WHERE user_id = 'sub'`).Scan(&top); err != nil {
		t.Fatal(err)
	}
	if !top {
		t.Errorf("a row written in a savepoint does not carry its top-level transaction's id")
	}
	m2 := mark()
	if u, ok := users(m2)["sub"]; ok && !u.UpdatedAt.Equal(subBefore) {
		t.Errorf("a write not yet committed was read: updated_at %v, committed %v", u.UpdatedAt, subBefore)
	}
	// B: begun, no id, when the third mark is taken; another transaction
	// commits in between; B then writes and commits.
	b, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Rollback()
	exec(b, `SELECT 1`)
	m3 := mark()
	if err := s.CreateUser(ctx, &store.User{UserID: "between", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	exec(b, `UPDATE users SET updated_at = updated_at + 1 WHERE user_id = 'late'`)
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]uint64{"m1": m1, "m2": m2} {
		if got := users(m); got["sub"] == nil {
			t.Errorf("from %s (%d): the savepoint's write of a transaction open at the mark was not read: %v", name, m, slices.Sorted(maps.Keys(got)))
		}
	}
	if got := users(m3); got["late"] == nil || got["between"] == nil {
		t.Errorf("from m3 (%d): a transaction without an id at the mark was not read: %v", m3, slices.Sorted(maps.Keys(got)))
	}
	if _, xid := stamp("undone"); xid != undoneXid {
		t.Errorf("a write rolled back to its savepoint stamped the row: changed_xid %d, was %d", xid, undoneXid)
	}
}

// TestProbeChangeMarksOfAnotherCluster: a database restored from a dump
// into another PostgreSQL cluster keeps the changed_xid its rows and
// deletion records carry, while the new cluster's transaction ids start
// lower. Those rows were all read when the replica started: ChangesFrom
// must not read them at every look (every replica's resync would read
// every key ever changed twice a second until the new cluster's ids
// caught up), while a row changed in the new cluster is read.
func TestProbeChangeMarksOfAnotherCluster(t *testing.T) {
	pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if pg == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set")
	}
	ctx := context.Background()
	s, err := sqlstore.OpenPostgres(ctx, storetest.PostgresSchema(t, pg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	now := time.Now().UTC()
	for _, id := range []string{"restored", "gone", "here"} {
		if err := s.CreateUser(ctx, &store.User{UserID: id, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteUser(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	// The old cluster's ids: far above this one's (the trigger leaves a
	// write that keeps updated_at alone).
	for _, q := range []string{
		`UPDATE users SET changed_xid = txid_current() + 1000000000 WHERE user_id = 'restored'`,
		`UPDATE deletions SET changed_xid = txid_current() + 1000000000`,
	} {
		if err := sqlstore.Exec(ctx, s, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	mark, ok, err := s.ChangeMark(ctx)
	if err != nil || !ok {
		t.Fatalf("ChangeMark: %v %v", ok, err)
	}
	u, err := s.GetUser(ctx, "here")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	snap, dels, err := s.ChangesFrom(ctx, mark)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range snap.Users {
		got = append(got, u.UserID)
	}
	if len(got) != 1 || got[0] != "here" || len(dels) != 0 {
		t.Errorf("from a mark after the restore: read users %v and %d deletions, want [here] and none", got, len(dels))
	}
}
