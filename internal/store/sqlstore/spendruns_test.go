package sqlstore

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// discardTx is a spendTx that inserts every row and records the other
// statements' float arguments.
type discardTx struct{ floats []float64 }

func (d *discardTx) insertRows(rows []store.SpendLog, inserted map[string]bool) error {
	for _, l := range rows {
		inserted[l.RequestID] = true
	}
	return nil
}

func (d *discardTx) exec(q string, args ...any) error {
	for _, a := range args {
		if f, ok := a.(float64); ok {
			d.floats = append(d.floats, f)
		}
	}
	return nil
}

func (d *discardTx) execN(q string, args ...any) (int64, error) { return 1, d.exec(q, args...) }

func (d *discardTx) lookup(q string, arg any) (string, bool, error) { return "", false, nil }

// TestApplySpendRunsOfOneKey: a batch of runs of one key's rows (what the
// writer sees under load: one key, one user, one model) makes the key's
// spend id once a run and looks its rollup up once, not once a row (the id
// is the 64-digit hash and the key's incarnation: a string a row), and
// books the same sums, added in the rows' order, as rows alternating
// between keys.
func TestApplySpendRunsOfOneKey(t *testing.T) {
	day := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	hash := func(i int) string { return strings.Repeat(fmt.Sprint(i%10), 64) }
	batch := func(n int, keyOf func(int) int) []store.SpendLog {
		rows := make([]store.SpendLog, n)
		for i := range rows {
			k := keyOf(i)
			rows[i] = store.SpendLog{RequestID: fmt.Sprint("r", i), KeyHash: hash(k), KeyCreatedAt: day.Add(-time.Duration(k) * time.Hour),
				UserID: "u", ModelGroup: "m", StartedAt: day, Cost: 0.1 + float64(i)*1e-7, PromptTokens: 3, CompletionTokens: 5}
		}
		return rows
	}
	want := func(rows []store.SpendLog, k int) float64 {
		s := 0.0
		for _, l := range rows {
			if l.KeyHash == hash(k) {
				s += l.Cost
			}
		}
		return s
	}
	has := func(fs []float64, f float64) bool {
		for _, g := range fs {
			if g == f {
				return true
			}
		}
		return false
	}
	runs := batch(400, func(i int) int { return i / 100 })    // four runs of 100
	alter := batch(400, func(i int) int { return i % 4 })     // alternating
	mixed := batch(400, func(i int) int { return i / 7 % 3 }) // short runs, returning keys
	for name, rows := range map[string][]store.SpendLog{"runs": runs, "alternating": alter, "mixed": mixed} {
		d := &discardTx{}
		if err := applySpend(d, rows, false, nil); err != nil {
			t.Fatal(err)
		}
		for k := range 4 {
			if w := want(rows, k); w != 0 && !has(d.floats, w) {
				t.Errorf("%s: key %d's spend %v not booked (%v)", name, k, w, d.floats)
			}
		}
	}
	inRuns := testing.AllocsPerRun(20, func() { _ = applySpend(&discardTx{}, runs, false, nil) })
	alternating := testing.AllocsPerRun(20, func() { _ = applySpend(&discardTx{}, alter, false, nil) })
	// Alternating rows make an id a row (two allocations: the
	// incarnation's digits and the id; 868 on main for both), runs four.
	if inRuns > alternating-600 {
		t.Errorf("runs of one key: %.0f allocations, alternating keys %.0f: want ~800 fewer", inRuns, alternating)
	}
	t.Logf("runs of one key: %.0f allocations, alternating keys: %.0f", inRuns, alternating)
}
