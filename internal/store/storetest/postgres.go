package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"testing"

	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// OpenPostgres opens a store on the PostgreSQL at base in a fresh schema,
// dropped at cleanup, so tests run in parallel and re-run cleanly.
func OpenPostgres(t testing.TB, base string) *sqlstore.DB {
	t.Helper()
	s, err := sqlstore.OpenPostgres(context.Background(), PostgresSchema(t, base))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// PostgresSchema makes a fresh schema on the PostgreSQL at base, dropped at
// cleanup, and returns base with its search_path set to it: for tests that
// open the store themselves (at a migration version, more than once).
func PostgresSchema(t testing.TB, base string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:])
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		if a, err := sql.Open("pgx", base); err == nil {
			_, _ = a.Exec("DROP SCHEMA " + schema + " CASCADE")
			a.Close()
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
