package ledger_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// TestResetLandsBetweenPeriods: spend queued before a budget reset belongs
// to the old period and spend queued after it to the new one, whatever the
// order in which the writer gets to them; a reset that arrives late never
// zeroes the newer period.
func TestResetLandsBetweenPeriods(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	old := time.Now().Add(-time.Hour).UTC()
	dur := "1d"
	if err := st.CreateKey(ctx, &store.Key{TokenHash: "k", KeyName: "sk-...k", Limits: store.Limits{BudgetDuration: &dur, BudgetResetAt: &old}}); err != nil {
		t.Fatal(err)
	}
	w := ledger.NewWriter(st, slog.New(slog.DiscardHandler))
	w.FlushEvery = time.Hour // only explicit flushes
	go w.Run()
	defer w.Close()
	now := time.Now()
	w.Enqueue(store.SpendLog{RequestID: "old-period", KeyHash: "k", Cost: 1, StartedAt: now, EndedAt: now})
	next := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	w.Reset(store.KindKey, "k", next)
	w.Enqueue(store.SpendLog{RequestID: "new-period", KeyHash: "k", Cost: 2, StartedAt: now, EndedAt: now})
	w.Flush()
	k, _ := st.GetKey(ctx, "k")
	if k.Spend != 2 || k.BudgetResetAt == nil || !k.BudgetResetAt.Equal(next) {
		t.Fatalf("after the reset: spend %v (want 2, the new period's), reset at %v", k.Spend, k.BudgetResetAt)
	}
	// A late reset to an earlier period boundary changes nothing.
	if err := st.ResetBudget(ctx, store.KindKey, "k", next.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if k, _ := st.GetKey(ctx, "k"); k.Spend != 2 || !k.BudgetResetAt.Equal(next) {
		t.Fatalf("a late reset zeroed the current period: %v %v", k.Spend, k.BudgetResetAt)
	}
}

// BenchmarkSpendLogging is spend logging's whole cost per request: queueing
// a row, and the writer batching it into SQLite on the other core.
func BenchmarkSpendLogging(b *testing.B) {
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "t.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	w := ledger.NewWriter(st, slog.New(slog.DiscardHandler))
	go w.Run()
	defer w.Close()
	now := time.Now()
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := n.Add(1)
			w.Enqueue(store.SpendLog{RequestID: "r" + strconv.FormatInt(id, 10), KeyHash: "k", ModelGroup: "gpt-4o",
				PromptTokens: 12, CompletionTokens: 9, Cost: 1e-4, Status: 200, StartedAt: now, EndedAt: now})
		}
	})
}
