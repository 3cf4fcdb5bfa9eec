package sqlstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// streamRows are n rows as the gateway writes them (random call and
// answer ids), ended 1 ms apart from at.
func streamRows(n int, at time.Time) []store.SpendLog {
	rows := make([]store.SpendLog, n)
	for i := range rows {
		var b [16]byte
		rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		t := at.Add(time.Duration(i) * time.Millisecond)
		rows[i] = store.SpendLog{RequestID: id, ResponseID: "chatcmpl-" + id[:24], KeyHash: "k", ModelGroup: "m", Cost: 1,
			Status: 200, StartedAt: t.Add(-time.Second), EndedAt: t}
	}
	return rows
}

// TestProbeSpendReplayDecodesInAStream: in a steady stream of batches in
// order, each overlapping the one before a little (rows that ended before
// the previous batch was cut, queued after it), the replay check decodes a
// block only on an id filter's false positive for one of the overlapping
// rows: rarely. Before, every row of the batch was tested against the
// open block: 26 decodes in 60 batches of 500 rows, 9 for 100.
func TestProbeSpendReplayDecodesInAStream(t *testing.T) {
	ctx := context.Background()
	for _, size := range []int{100, 500} {
		s := openBlocks(t)
		at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
		const batches = 60
		before := sqlstore.SpendReplayDecodeCount()
		for i := range batches {
			batch := streamRows(size, at.Add(time.Duration(i*(size-20))*time.Millisecond))
			if err := s.ApplySpend(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		decodes := sqlstore.SpendReplayDecodeCount() - before
		t.Logf("batches of %d rows: %d block decodes in %d batches", size, decodes, batches)
		if decodes > batches/5 {
			t.Errorf("batches of %d rows: %d block decodes in %d batches, want at most %d", size, decodes, batches, batches/5)
		}
	}
}

// TestProbeSpendReplayOutlierDecodes: a batch of new rows with one row
// that ended long before them (a late rescue, a clock stepped back) makes
// every block between the two a candidate; each is tested only for the
// rows whose ended_at its range holds, so its filter's false positives on
// the new rows do not decode it (before: ~every candidate was decoded,
// reading its whole data, on each batch). The replay is still found.
func TestProbeSpendReplayOutlierDecodes(t *testing.T) {
	ctx := context.Background()
	s := openBlocks(t)
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	for i := range 8 { // 8 full blocks, ended in order
		if err := s.ApplySpend(ctx, streamRows(512, at.Add(time.Duration(i*512)*time.Millisecond))); err != nil {
			t.Fatal(err)
		}
	}
	batch := streamRows(500, at.Add(8*512*time.Millisecond))
	old := streamRows(1, at.Add(10*time.Millisecond))[0] // within the first block's range
	batch = append(batch, old)
	before := sqlstore.SpendReplayDecodeCount()
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	first := sqlstore.SpendReplayDecodeCount() - before
	if err := s.ApplySpend(ctx, batch); err != nil { // the replay: found, counted once
		t.Fatal(err)
	}
	if sp := keySpend(t, s); sp != 8*512+501 {
		t.Errorf("key spend %v, want %d", sp, 8*512+501)
	}
	if first > 1 {
		t.Errorf("the replay check of a new batch decoded %d blocks, want at most 1 (a false positive on the one old row)", first)
	}
}
