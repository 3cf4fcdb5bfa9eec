package sqlstore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// probeAttrRows are n rows of key, user and model group, each with tag,
// ended one millisecond apart from at.
func probeAttrRows(prefix string, n int, at time.Time, key, user, model, tag string) []store.SpendLog {
	rows := make([]store.SpendLog, n)
	for i := range rows {
		t := at.Add(time.Duration(i) * time.Millisecond)
		rows[i] = store.SpendLog{RequestID: fmt.Sprintf("%s-%04d", prefix, i), KeyHash: key, UserID: user, ModelGroup: model,
			RequestTags: []string{tag}, Cost: 1, Status: 200, StartedAt: t.Add(-time.Second), EndedAt: t}
	}
	return rows
}

// probeAttrFilters checks that the attribute filter of every stored block
// holds every value of every row the block holds.
func probeAttrFilters(t *testing.T, s *DB, when string) {
	t.Helper()
	rows, err := s.db.QueryContext(context.Background(), `SELECT id, attrs, data FROM spend_blocks ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var attrs, data []byte
		if err := rows.Scan(&id, &attrs, &data); err != nil {
			t.Fatal(err)
		}
		b := &spendBlock{attrs: attrs}
		d := spendRowReader{data: data}
		var r spendRow
		for d.next(&r) {
			l := r.log(false)
			for _, a := range []struct {
				kind byte
				v    string
			}{{attrKey, l.KeyHash}, {attrUser, l.UserID}, {attrTeam, l.TeamID}, {attrEndUser, l.EndUser}, {attrModel, l.ModelGroup}} {
				if a.v != "" && !b.mayHoldAttr(a.kind, a.v) {
					t.Errorf("%s: block %d holds row %s but its filter says no %c %q", when, id, l.RequestID, a.kind, a.v)
				}
			}
			for _, tag := range l.RequestTags {
				if !b.mayHoldAttr(attrTag, tag) {
					t.Errorf("%s: block %d holds row %s but its filter says no tag %q", when, id, l.RequestID, tag)
				}
			}
		}
		if d.err != nil {
			t.Fatal(d.err)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestProbeSpendAttrFilterAcrossBatches: the attribute filter skips a
// value its block's previous row added (spendSummary.lastAttr). Through
// batches extending the open block kept on the connection, a batch that
// extended it in memory and then rolled back, blocks filling in the middle
// of a run of one key, and the store reopened from disk, every stored
// block's filter holds every value of its rows, and a listing the filter
// serves (a key and a tag) finds every row.
func TestProbeSpendAttrFilterAcrossBatches(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tollgate.db")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	apply := func(rows []store.SpendLog) {
		t.Helper()
		if err := s.ApplySpend(ctx, rows); err != nil {
			t.Fatal(err)
		}
	}
	want := map[[2]string]int{} // key, tag -> rows
	count := func(rows []store.SpendLog) {
		for _, l := range rows {
			want[[2]string{l.KeyHash, l.RequestTags[0]}]++
		}
	}
	a := probeAttrRows("a", 10, at, "k1", "u1", "m1", "t1")
	b := probeAttrRows("b", 5, at.Add(time.Second), "k1", "u1", "m1", "t1") // the open block's run goes on
	apply(a)
	apply(b)
	count(a)
	count(b)

	// A batch that extends the open block in memory with new values (its
	// filter and the values its last row added), then rolls back: its
	// rows start another day, whose rollup row the trigger refuses.
	if _, err := s.db.ExecContext(ctx, `CREATE TRIGGER probe BEFORE INSERT ON spend_daily BEGIN SELECT RAISE(FAIL, 'probe'); END`); err != nil {
		t.Fatal(err)
	}
	c := probeAttrRows("c", 4, at.Add(48*time.Hour), "k2", "u2", "m2", "t2")
	if err := s.ApplySpend(ctx, c); err == nil {
		t.Fatal("the batch succeeded under the trigger")
	}
	if _, err := s.db.ExecContext(ctx, `DROP TRIGGER probe`); err != nil {
		t.Fatal(err)
	}
	// The same values again, in a batch that commits.
	d := probeAttrRows("d", 3, at.Add(2*time.Second), "k2", "u2", "m2", "t2")
	apply(d)
	count(d)
	probeAttrFilters(t, s, "after the rolled-back batch")

	// A run of one key across a block's end (512 rows), in one batch and
	// across two.
	e := probeAttrRows("e", spendBlockRows+40, at.Add(3*time.Second), "k3", "u3", "m3", "t3")
	apply(e[:300])
	apply(e[300:])
	count(e)
	probeAttrFilters(t, s, "after a run across a block's end")

	// Reopened: the open block is read from disk, and its next rows carry
	// on its last row's values.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = OpenSQLite(ctx, path); err != nil {
		t.Fatal(err)
	}
	f := probeAttrRows("f", 6, at.Add(4*time.Second), "k3", "u3", "m3", "t3")
	g := probeAttrRows("g", 6, at.Add(5*time.Second), "k1", "u1", "m1", "t1")
	apply(f)
	apply(g)
	count(f)
	count(g)
	probeAttrFilters(t, s, "after reopening")

	for kt, n := range want {
		rows, _, err := s.ListSpendLogs(ctx, store.SpendFilter{KeyHash: kt[0], Tag: kt[1], Page: store.Page{Number: 1, Size: 10 * spendBlockRows}})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != n {
			t.Errorf("key %s, tag %s: %d rows listed; want %d", kt[0], kt[1], len(rows), n)
		}
	}
}
