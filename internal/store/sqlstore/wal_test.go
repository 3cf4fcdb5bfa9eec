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
// to the WAL (and so copies back at the checkpoint), on a table of 5,000
// rows with time-ordered request ids and random response ids, as the
// gateway writes them. With the response-id index of migration 00008 (its
// keys random) nearly every row dirtied a page of its own; the index of
// 00014 leads with the id's last character, so a batch appends to a few
// pages. Both layouts are measured here, the old one by swapping the index
// back.
func TestSpendWALPagesPerRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	n := 0
	batch := func() []store.SpendLog {
		b := make([]store.SpendLog, 100)
		now := time.Now()
		for i := range b {
			n++
			var r [10]byte
			_, _ = rand.Read(r[:])
			b[i] = store.SpendLog{RequestID: fmt.Sprintf("%012x%s", 1_000_000+n, hex.EncodeToString(r[:])), ResponseID: "chatcmpl-" + hex.EncodeToString(r[:]),
				KeyHash: "k", ModelGroup: "gpt-4", PromptTokens: 10, CompletionTokens: 8, Cost: 0.0001, Status: 200, StartedAt: now, EndedAt: now}
		}
		return b
	}
	pagesPerRow := func(t *testing.T, swap string) float64 {
		s, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "tollgate.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if swap != "" {
			if err := sqlstore.Exec(ctx, s, swap); err != nil {
				t.Fatal(err)
			}
		}
		for range 300 {
			if err := s.ApplySpend(ctx, batch()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := sqlstore.WALFrames(ctx, s); err != nil {
			t.Fatal(err)
		}
		frames := 0
		for range 5 {
			if err := s.ApplySpend(ctx, batch()); err != nil {
				t.Fatal(err)
			}
			f, err := sqlstore.WALFrames(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			frames += f
		}
		return float64(frames) / 500
	}
	random := pagesPerRow(t, `DROP INDEX spend_logs_response_tail; CREATE INDEX spend_logs_response ON spend_logs (response_id)`)
	tail := pagesPerRow(t, "")
	t.Logf("WAL pages per row: %.2f with the random-key index, %.2f with the last-character index", random, tail)
	if random == 0 || tail > 0.8 || tail > random*2/3 {
		t.Errorf("WAL pages per row: %.2f with the last-character index, %.2f with the random-key one", tail, random)
	}
}
