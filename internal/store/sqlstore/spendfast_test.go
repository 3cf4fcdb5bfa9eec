package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// flatIDs is every block's request ids, in order.
func flatIDs(t *testing.T, s *sqlstore.DB) []string {
	t.Helper()
	ids, counts := blockIDs(t, s)
	var out []string
	for i, in := range ids {
		if counts[i] != int64(len(in)) {
			t.Errorf("block %d: row_count %d, %d rows", i, counts[i], len(in))
		}
		out = append(out, in...)
	}
	return out
}

func requestIDs(batches ...[]store.SpendLog) []string {
	var out []string
	for _, b := range batches {
		for _, l := range b {
			out = append(out, l.RequestID)
		}
	}
	return out
}

// TestSpendOpenBlockAfterFailedBatch: the writer keeps the open block, and
// its request ids, in memory between batches. A batch that fails after it
// extended that block (its UPDATE refused; a rollup refused after the
// UPDATE, the transaction rolled back) must leave the next batch to read
// the block as stored: the failed batch retried, as the spend writer
// does, is written and counted (not taken for a replay of the rows the
// failed batch only held in memory), and a batch after it does not write
// the rolled-back rows along with its own.
func TestSpendOpenBlockAfterFailedBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct{ name, trigger string }{
		{"update refused", `CREATE TRIGGER probe BEFORE UPDATE ON spend_blocks BEGIN SELECT RAISE(ABORT, 'probe'); END`},
		{"rollup refused", `CREATE TRIGGER probe BEFORE INSERT ON spend_daily BEGIN SELECT RAISE(FAIL, 'probe'); END`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openBlocks(t)
			at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
			a, b, c := blockRows("a", 10, at), blockRows("b", 5, at.Add(time.Minute)), blockRows("c", 4, at.Add(2*time.Hour*24))
			if err := s.ApplySpend(ctx, a); err != nil {
				t.Fatal(err)
			}
			if err := sqlstore.Exec(ctx, s, tc.trigger); err != nil {
				t.Fatal(err)
			}
			// c's rows start on another day: a new spend_daily row, which
			// the rollup trigger refuses.
			if err := s.ApplySpend(ctx, c); err == nil {
				t.Fatal("batch succeeded under the trigger")
			}
			if err := sqlstore.Exec(ctx, s, `DROP TRIGGER probe`); err != nil {
				t.Fatal(err)
			}
			if got, want := flatIDs(t, s), requestIDs(a); !reflect.DeepEqual(got, want) {
				t.Fatalf("after the failed batch the blocks hold %v, want %v", got, want)
			}
			// A batch of new rows, then the failed one again.
			if err := s.ApplySpend(ctx, b); err != nil {
				t.Fatal(err)
			}
			if got, want := flatIDs(t, s), requestIDs(a, b); !reflect.DeepEqual(got, want) {
				t.Errorf("after the next batch the blocks hold %v, want %v", got, want)
			}
			if err := s.ApplySpend(ctx, c); err != nil {
				t.Fatal(err)
			}
			if got, want := flatIDs(t, s), requestIDs(a, b, c); !reflect.DeepEqual(got, want) {
				t.Errorf("after the retry the blocks hold %v, want %v", got, want)
			}
			if sp := keySpend(t, s); sp != 19 {
				t.Errorf("key spend %v, want 19", sp)
			}
		})
	}
}

// TestSpendOpenBlockRetriedBatch: the failed batch retried at once (the
// spend writer's retry of the very rows it tried) is written whole, its
// UPDATE having been refused the first time.
func TestSpendOpenBlockRetriedBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openBlocks(t)
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	a, b := blockRows("a", 10, at), blockRows("b", 5, at.Add(time.Minute))
	if err := s.ApplySpend(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := sqlstore.Exec(ctx, s, `CREATE TRIGGER probe BEFORE UPDATE ON spend_blocks BEGIN SELECT RAISE(ABORT, 'probe'); END`); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, b); err == nil {
		t.Fatal("batch succeeded under the trigger")
	}
	if err := sqlstore.Exec(ctx, s, `DROP TRIGGER probe`); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got, want := flatIDs(t, s), requestIDs(a, b); !reflect.DeepEqual(got, want) {
		t.Errorf("the blocks hold %v, want %v", got, want)
	}
	if sp := keySpend(t, s); sp != 15 {
		t.Errorf("key spend %v, want 15", sp)
	}
}

// TestSpendOpenBlockReplay: replays checked against the open block kept in
// memory (its exact request ids) and the block before it (its filter and
// rows): batches that fill a block and open another, then the same rows
// again, in part and mixed with new ones, add only the new rows, once,
// also after the store is reopened (the open block read back).
func TestSpendOpenBlockReplay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openBlocks(t)
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	all := blockRows("r", 700, at)
	a, b := all[:300], all[300:]
	for _, batch := range [][]store.SpendLog{a, b, a[250:], b, all[290:310]} {
		if err := s.ApplySpend(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	fresh := blockRows("n", 3, at.Add(699*time.Millisecond))
	mixed := append(append([]store.SpendLog{}, all[650:]...), fresh...)
	for range 2 {
		if err := s.ApplySpend(ctx, mixed); err != nil {
			t.Fatal(err)
		}
	}
	sqlstore.CloseIdle(s) // the next batch runs on a new connection
	if err := s.ApplySpend(ctx, mixed); err != nil {
		t.Fatal(err)
	}
	more := blockRows("m", 2, at.Add(800*time.Millisecond))
	if err := s.ApplySpend(ctx, append(append([]store.SpendLog{}, mixed...), more...)); err != nil {
		t.Fatal(err)
	}
	want := requestIDs(all, fresh, more)
	if got := flatIDs(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("the blocks hold %d rows, want %d in order", len(got), len(want))
	}
	if ids, _ := blockIDs(t, s); len(ids) != 2 || len(ids[0]) != 512 {
		t.Errorf("%d blocks, want a full one and the open one", len(ids))
	}
	if sp := keySpend(t, s); sp != float64(len(want)) {
		t.Errorf("key spend %v, want %d", sp, len(want))
	}
}

// TestSpendOpenBlockWrittenByAnotherConnection: should another connection
// write the database (a second process on the same file), a store's next
// batch reads the open block again (PRAGMA data_version changed) instead of
// writing its cached copy over the other's rows.
func TestSpendOpenBlockWrittenByAnotherConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tollgate.db")
	var stores [2]*sqlstore.DB
	for i := range stores {
		s, err := sqlstore.OpenSQLite(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	if err := stores[0].CreateKey(ctx, &store.Key{TokenHash: "k"}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	var batches [][]store.SpendLog
	for i, s := range []*sqlstore.DB{stores[0], stores[1], stores[0], stores[1], stores[0]} {
		b := blockRows(fmt.Sprintf("s%d", i), 5, at.Add(time.Duration(i)*time.Second))
		batches = append(batches, b)
		if err := s.ApplySpend(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := flatIDs(t, stores[1]), requestIDs(batches...); !reflect.DeepEqual(got, want) {
		t.Errorf("the blocks hold %v, want %v", got, want)
	}
	if sp := keySpend(t, stores[0]); sp != 25 {
		t.Errorf("key spend %v, want 25", sp)
	}
}
