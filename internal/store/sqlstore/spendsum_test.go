package sqlstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// TestSpendSummaryAcrossBatches: rows written by SQLite's spend writer in
// batches of random sizes, by two stores on one file in turn (so that each
// reads the open block the other wrote and rebuilds its summary from the
// stored one), with more distinct keys than a
// dictionary searches linearly, list as the same listing done in Go for
// random filters, those read from the summaries among them.
func TestSpendSummaryAcrossBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 11))
	rows := randomListedRows(r, 900)
	for i := range rows {
		if i%3 == 0 {
			rows[i].KeyHash = fmt.Sprintf("k%d", r.IntN(40)) // k1..k3 among them
		}
	}
	written := writeOrder(r, rows)
	path := filepath.Join(t.TempDir(), "tollgate.db")
	s := storetest.OpenSQLite(t, path)
	writers := []*sqlstore.DB{s, storetest.OpenSQLite(t, path)}
	for k, rest := 0, written; len(rest) > 0; k++ {
		n := min(len(rest), 1+r.IntN(60))
		if err := writers[k%2].ApplySpend(ctx, rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	for i := range 300 {
		f := randomSpendFilter(r, rows)
		if i%2 == 0 {
			f.RequestID, f.Tag = "", "" // the summaries' listings
		}
		got, total, err := s.ListSpendLogs(ctx, f)
		if err != nil {
			t.Fatalf("filter %d %+v: %v", i, f, err)
		}
		ids, omitted, want := referenceList(rows, f)
		var gotIDs []string
		var gotOmitted []bool
		for _, l := range got {
			gotIDs, gotOmitted = append(gotIDs, l.RequestID), append(gotOmitted, l.ContentOmitted)
		}
		if total != want || !slices.Equal(gotIDs, ids) || !slices.Equal(gotOmitted, omitted) {
			t.Fatalf("filter %d %+v:\n got %d %v %v\nwant %d %v %v", i, f, total, gotIDs, gotOmitted, want, ids, omitted)
		}
	}
}

// TestSpendSummaryCorruptIsAnError: a listing read from the summaries
// fails with an error naming the block whose summary does not decode or
// disagrees with its row count or started range.
func TestSpendSummaryCorruptIsAnError(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, damage string }{
		{"truncated", `UPDATE spend_blocks SET summary = substr(summary, 1, length(summary) - 3) WHERE id = 2`},
		{"garbage", `UPDATE spend_blocks SET summary = x'ffffffffffffffffffffff' WHERE id = 2`},
		{"row count", `UPDATE spend_blocks SET row_count = row_count - 1 WHERE id = 2`},
		{"range", `UPDATE spend_blocks SET min_started = max_started WHERE id = 2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rows := randomListedRows(rand.New(rand.NewPCG(1, 2)), 60)
			s := blockStore(t, rows, 20)
			f := store.SpendFilter{Status: "failure", Page: store.Page{Size: 1}}
			if _, _, err := s.ListSpendLogs(ctx, f); err != nil {
				t.Fatalf("before: %v", err)
			}
			if err := sqlstore.Exec(ctx, s, tt.damage); err != nil {
				t.Fatal(err)
			}
			got, total, err := s.ListSpendLogs(ctx, f)
			if err == nil || !strings.Contains(err.Error(), "spend block 2") {
				t.Fatalf("listing a damaged block: %d rows, total %d, error %v; want an error naming spend block 2", len(got), total, err)
			}
		})
	}
}

// TestSpendSummaryReadsOnlyPageBlocks: a listing by status reads the data
// of the blocks holding its page only: an older block whose data is
// garbage is counted from its summary (the total is exact), and fails the
// listing once its rows are on the page.
func TestSpendSummaryReadsOnlyPageBlocks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rows := randomListedRows(rand.New(rand.NewPCG(3, 4)), 60)
	slices.SortStableFunc(rows, byStarted)
	s := blockStore(t, rows, 20) // block 1 the oldest rows, block 3 the newest
	if err := sqlstore.Exec(ctx, s, `UPDATE spend_blocks SET data = x'ffffffffffffffffffffff' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	f := store.SpendFilter{Status: "success", Page: store.Page{Size: 2}}
	ids, _, want := referenceList(rows, f)
	got, total, err := s.ListSpendLogs(ctx, f)
	if err != nil || total != want || len(got) != len(ids) || got[0].RequestID != ids[0] {
		t.Fatalf("first page: %d rows, total %d, %v; want %v, total %d", len(got), total, err, ids, want)
	}
	f.Size = 1000
	if got, total, err := s.ListSpendLogs(ctx, f); err == nil || !strings.Contains(err.Error(), "spend block 1") {
		t.Fatalf("every row: %d rows, total %d, error %v; want an error naming spend block 1", len(got), total, err)
	}
}
