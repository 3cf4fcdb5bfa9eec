package server

import (
	"context"
	"database/sql"
	"os"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// TestLongDeletionReachesOtherReplica: on PostgreSQL, another replica
// deletes a user with her keys in one transaction that stays open longer
// than the resync's 5 s overlap (here: held by a lock the test takes on
// the user's row, after the keys' deletion records were written). The
// replica under test must still learn of every deletion once it commits:
// the deleted keys are refused and their budget accounts dropped. Before
// branch delstamp the records carried the time each was written, older
// than the replica's cursor by the commit, and the replica never read
// them: the keys' accounts stayed (and a deleted key was served until a
// restart unless its owner's own record reached the replica).
func TestLongDeletionReachesOtherReplica(t *testing.T) {
	pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if pg == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set")
	}
	ctx := context.Background()
	dsn := storetest.PostgresSchema(t, pg)
	st, err := sqlstore.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })

	now := time.Now().UTC()
	keys := []string{"sk-delstamp-key-1", "sk-delstamp-key-2"}
	if err := st.CreateUser(ctx, &store.User{UserID: "leaver", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := st.CreateKey(ctx, &store.Key{TokenHash: sha(k), KeyName: "sk-...", UserID: "leaver", CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	e := startConfigWith(t, st, mockupstream.Options{}, pricedConfig, Options{ResyncInterval: 100 * time.Millisecond})
	chat := `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`
	for _, k := range keys {
		if _, ok := within(time.Minute, func() bool { s, _ := send(t, e.url+"/v1/chat/completions", k, chat); return s == 200 }); !ok {
			t.Fatalf("%s never served", k)
		}
		e.srv.book.Seed(store.KindKey, sha(k), ledger.Amount(1))
	}

	// The other replica's deletion waits, its keys' records written, for
	// the lock on the user's row.
	hold, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback()
	var holder int
	if err := hold.QueryRowContext(ctx, `SELECT pg_backend_pid() FROM users WHERE user_id = 'leaver' FOR UPDATE`).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		done <- st.DeleteUser(dctx, "leaver")
	}()
	if _, ok := within(time.Minute, func() bool {
		var n int
		err := raw.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, holder).Scan(&n)
		return err == nil && n > 0
	}); !ok {
		t.Fatal("the deletion never waited for the user's row")
	}
	// The records are written; the replica's resyncs go on until one that
	// started past the overlap (5 s) after them has completed.
	written := time.Now()
	if _, ok := within(time.Minute, func() bool { return time.Since(written) > 6*time.Second }); !ok {
		t.Fatal("unreachable")
	}
	seq := e.srv.resyncSeq.Load()
	if _, ok := within(time.Minute, func() bool { return e.srv.resyncDone.Load() > seq }); !ok {
		t.Fatal("no resync completed")
	}
	for _, k := range keys {
		if s, body := send(t, e.url+"/v1/chat/completions", k, chat); s != 200 {
			t.Fatalf("%s refused before its deletion committed: %d %s", k, s, body)
		}
	}
	if err := hold.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("delete user: %v", err)
	}
	// A resync that starts after the commit has completed.
	seq = e.srv.resyncSeq.Load()
	if _, ok := within(time.Minute, func() bool { return e.srv.resyncDone.Load() > seq }); !ok {
		t.Fatal("no resync completed after the deletion")
	}
	for _, k := range keys {
		if s, body := send(t, e.url+"/v1/chat/completions", k, chat); s != 401 {
			t.Errorf("%s, deleted by another replica, served: %d %s", k, s, body)
		}
		if _, ok := e.srv.book.Lookup(store.KindKey, sha(k)); ok {
			t.Errorf("%s, deleted by another replica, keeps its budget account", k)
		}
	}
}
