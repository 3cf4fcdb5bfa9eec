package sqlstore_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

func TestSQLite(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "tollgate.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestPostgres runs the suite on the PostgreSQL named by
// TOLLGATE_TEST_POSTGRES_URL, each test in a schema of its own.
func TestPostgres(t *testing.T) {
	t.Parallel()
	base := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if base == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL store suite (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	storetest.Run(t, func(t *testing.T) store.Store { return storetest.OpenPostgres(t, base) })
}
