package sqlstore_test

import (
	"context"
	"fmt"
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
// TOLLGATE_TEST_POSTGRES_URL, each test in a database of its own (a copy of a migrated template).
func TestPostgres(t *testing.T) {
	t.Parallel()
	base := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if base == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL store suite (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	storetest.Run(t, func(t *testing.T) store.Store { return storetest.OpenPostgres(t, base) })
}

// TestLoadKeysPageBound: a SQL store reads its keys store.KeyPage at a
// time (the conformance suite checks what the pages hold).
func TestLoadKeysPageBound(t *testing.T) {
	ctx := context.Background()
	s, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range store.KeyPage + 1 {
		if err := s.CreateKey(ctx, &store.Key{TokenHash: fmt.Sprintf("h%05d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var sizes []int
	if err := s.LoadKeys(ctx, func(p []*store.Key) error { sizes = append(sizes, len(p)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(sizes) != 2 || sizes[0] != store.KeyPage || sizes[1] != 1 {
		t.Fatalf("page sizes %v, want [%d 1]", sizes, store.KeyPage)
	}
}
