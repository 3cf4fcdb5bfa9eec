package sqlstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// TestSpendWALPagesPerRow counts the pages one batch of spend rows writes
// to the WAL (and so copies back at the checkpoint), after 20,000 rows,
// with time-ordered request ids and random response ids, as the gateway
// writes them. As spend_logs rows (before migration 00018) a row dirtied
// 0.61-0.66 pages of the table and its indexes; in spend blocks a batch
// rewrites the open block (a few pages per 100 rows of it) and the rollups.
func TestSpendWALPagesPerRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	n := 0
	batch := func(size int) []store.SpendLog {
		b := make([]store.SpendLog, size)
		now := time.Now()
		for i := range b {
			n++
			var r [10]byte
			_, _ = rand.Read(r[:])
			b[i] = store.SpendLog{RequestID: fmt.Sprintf("%012x%s", n, hex.EncodeToString(r[:])), ResponseID: "chatcmpl-" + hex.EncodeToString(r[:]),
				KeyHash: "k", ModelGroup: "gpt-4", PromptTokens: 10, CompletionTokens: 8, Cost: 0.0001, Status: 200, StartedAt: now, EndedAt: now}
		}
		return b
	}
	s, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 20 {
		if err := s.ApplySpend(ctx, batch(1000)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sqlstore.WALFrames(ctx, s); err != nil {
		t.Fatal(err)
	}
	frames := 0
	for range 5 {
		if err := s.ApplySpend(ctx, batch(100)); err != nil {
			t.Fatal(err)
		}
		f, err := sqlstore.WALFrames(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		frames += f
	}
	perRow := float64(frames) / 500
	t.Logf("WAL pages per row: %.2f", perRow)
	if perRow == 0 || perRow > 0.3 {
		t.Errorf("WAL pages per row: %.2f, want at most 0.3 (0.61-0.66 as spend_logs rows)", perRow)
	}
}
