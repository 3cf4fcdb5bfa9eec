package sqlstore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// TestSQLitePageCacheSize: the store's connection has a page cache of
// 500 KiB (cache_size -500), not SQLite's default 2,000 KiB, which under
// modernc's allocator (a 4 KiB page in an 8 KiB slot) cost ≈ 4 MB of
// anonymous memory once the keys were read (1 MiB before branch mem79). Read back with PRAGMA, on the
// connection the store opened and on one it opens after closing its idle
// ones (the setting is in the DSN, so every connection has it).
func TestSQLitePageCacheSize(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, when := range []string{"as opened", "on a new connection"} {
		if when == "on a new connection" {
			sqlstore.CloseIdle(s)
		}
		n, err := sqlstore.QueryInt(ctx, s, `PRAGMA cache_size`)
		if err != nil {
			t.Fatal(err)
		}
		if n != -500 {
			t.Errorf("%s: PRAGMA cache_size = %d, want -500 (500 KiB)", when, n)
		}
	}
}
