package sqlstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
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

// failingCtx is a context with a deadline (ApplySpend adds none) whose Err
// reports it cancelled from its at-th call on.
type failingCtx struct {
	context.Context
	calls *atomic.Int64
	at    int64
}

func (c failingCtx) Err() error {
	if c.calls.Add(1) >= c.at {
		return context.Canceled
	}
	return nil
}

// blockState is the rows of s's blocks by request id and the key's spend.
func blockState(t *testing.T, s *sqlstore.DB) (map[string]int, float64) {
	t.Helper()
	logs, err := sqlstore.SpendBlockLogs(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	for _, l := range logs {
		ids[l.RequestID]++
	}
	return ids, keySpend(t, s)
}

// fullRows are n rows with every column set, content of size bytes.
func fullRows(prefix string, n, size int, at time.Time) []store.SpendLog {
	rows := make([]store.SpendLog, n)
	content := json.RawMessage(`[{"role":"user","content":"` + strings.Repeat("x", size) + `"}]`)
	for i := range rows {
		t := at.Add(time.Duration(i) * time.Millisecond)
		rows[i] = store.SpendLog{RequestID: fmt.Sprintf("%s-%04d", prefix, i), KeyHash: "k", UserID: "u", TeamID: "t", EndUser: "e",
			ModelGroup: "m", Deployment: "d", Provider: "p", PromptTokens: 123456, CompletionTokens: -1, CachedTokens: 7, Cost: 1,
			Status: 500, LatencyMS: 99999, StartedAt: t.Add(-time.Hour), EndedAt: t, ReportedPromptTokens: 5, ReportedCompletionTokens: 6,
			UsageClamped: true, UsageEstimated: true, ResponseID: "chatcmpl-" + prefix + fmt.Sprint(i), CallType: "acompletion",
			RequestTags: []string{"a", "b"}, Metadata: map[string]any{"n": 1.5}, Messages: content, Response: content,
			CacheHit: true, CacheKey: "ck", SavedCost: 0.5, Guardrails: json.RawMessage(`[{"g":1}]`),
			ErrorInformation: &store.ErrorInformation{ErrorCode: "500", ErrorMessage: "boom"}}
	}
	return rows
}

// TestProbeSpendBlocksCancelMidBatch: a batch whose context ends before
// any one of its statements (the open block's read, the block writes, the
// spend UPDATEs) changes nothing; the one that commits counts each row
// once, and replays of it (whole, halved as the writer's bisection does)
// count nothing more.
func TestProbeSpendBlocksCancelMidBatch(t *testing.T) {
	ctx := context.Background()
	s := openBlocks(t)
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	if err := s.ApplySpend(ctx, blockRows("a", 300, at)); err != nil {
		t.Fatal(err)
	}
	batch := blockRows("b", 600, at.Add(300*time.Millisecond)) // fills the open block, then another and a half
	far, cancel := context.WithDeadline(ctx, time.Now().Add(time.Hour))
	defer cancel()
	committed, failed := false, 0
	for at := int64(1); at < 200 && !committed; at++ {
		err := s.ApplySpend(failingCtx{far, new(atomic.Int64), at}, batch)
		ids, spend := blockState(t, s)
		if err == nil {
			committed = true
			continue
		}
		failed++
		if len(ids) != 300 || spend != 300 {
			t.Fatalf("cancelled at Err call %d (%v): %d rows, spend %v; want 300, 300", at, err, len(ids), spend)
		}
	}
	if !committed || failed < 5 {
		t.Fatalf("the batch committed %v after %d cancelled tries, want after 5 or more (the open block's read, the candidates, two block writes, the spend)", committed, failed)
	}
	t.Logf("cancelled at each of %d points, then committed", failed)
	for _, again := range [][]store.SpendLog{batch, batch[:300], batch[300:], batch[150:450]} {
		if err := s.ApplySpend(ctx, again); err != nil {
			t.Fatal(err)
		}
	}
	ids, spend := blockState(t, s)
	for id, n := range ids {
		if n != 1 {
			t.Errorf("%s stored %d times", id, n)
		}
	}
	if len(ids) != 900 || spend != 900 {
		t.Errorf("%d rows, spend %v; want 900, 900", len(ids), spend)
	}
}

// TestProbeSpendBlocksBigRowsReplay: rows with every column set and
// content that fills blocks by bytes (1 MiB) before rows, one row larger
// than a block, a request id repeated in the batch, rows of an old and a
// new ended_at: each row stored and counted once, and the replays the
// writer makes (the batch again, its halves, the rescue rows stripRow
// makes: no content, metadata, tags or end user, same id and end) count
// nothing more.
func TestProbeSpendBlocksBigRowsReplay(t *testing.T) {
	ctx := context.Background()
	s := openBlocks(t)
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	old := fullRows("old", 50, 100, at)
	if err := s.ApplySpend(ctx, old); err != nil {
		t.Fatal(err)
	}
	batch := fullRows("new", 700, 2000, at.Add(time.Hour)) // ~4 KB a row: 1 MiB at ~250 rows
	huge := fullRows("huge", 1, 1<<20+10, at.Add(time.Hour+time.Second))[0]
	batch = append(batch[:300], append([]store.SpendLog{huge, batch[5], old[3]}, batch[300:]...)...)
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		ids, spend := blockState(t, s)
		for id, n := range ids {
			if n != 1 {
				t.Errorf("%s: %s stored %d times", when, id, n)
			}
		}
		if len(ids) != 751 || spend != 751 {
			t.Errorf("%s: %d rows, spend %v; want 751, 751", when, len(ids), spend)
		}
	}
	check("first write")
	stripped := make([]store.SpendLog, len(batch))
	for i, l := range batch {
		l.Messages, l.Response, l.Metadata, l.RequestTags, l.EndUser = nil, nil, nil, nil, ""
		stripped[i] = l
	}
	for _, again := range [][]store.SpendLog{batch, batch[:len(batch)/2], batch[len(batch)/2:], stripped, stripped[290:310], old} {
		if err := s.ApplySpend(ctx, again); err != nil {
			t.Fatal(err)
		}
		check("replays")
	}
	blocks, err := sqlstore.SpendBlocks(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if b.Rows != int64(len(b.Logs)) {
			t.Errorf("block %d: row_count %d, %d rows", b.ID, b.Rows, len(b.Logs))
		}
	}
}

// TestProbeMoveSpendLogsOddRows: the move at open takes rows whose JSON
// columns are not what the gateway writes (not JSON, the wrong shape,
// empty) as they are, and opens.
func TestProbeMoveSpendLogsOddRows(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tollgate.db")
	old, err := sqlstore.OpenSQLiteAt(ctx, path, 17)
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlstore.Exec(ctx, old, `INSERT INTO spend_logs (request_id, key_hash, started_at, ended_at, request_tags, metadata, messages, error_information, cost)
		VALUES ('odd-1', 'k', 1, 1, 'not json', '', '{', 'garbage', 0.5), ('odd-2', 'k', 2, 2, '[1,2]', '[]', NULL, '{}', 1),
		('odd-3', 'k', 3, 3, NULL, NULL, NULL, NULL, 2)`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s, err := sqlstore.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := spendLogRows(t, s); n != 0 {
		t.Errorf("%d spend_logs rows left", n)
	}
	blocks, err := sqlstore.SpendBlocks(ctx, s)
	if err != nil || len(blocks) != 1 || len(blocks[0].Logs) != 3 {
		t.Fatalf("blocks %+v (%v), want one of 3 rows", blocks, err)
	}
	if md, err := sqlstore.SpendBlockMetadata(ctx, s, "odd-1"); err != nil || md != "" {
		t.Errorf("odd-1's metadata %q (%v), want the stored empty text", md, err)
	}
}

// TestProbeSpendBlocksZeroEnd: rows with no ended_at (stored as 0) in a
// batch of rows that have one are found again on a replay, counted once.
func TestProbeSpendBlocksZeroEnd(t *testing.T) {
	ctx := context.Background()
	s := openBlocks(t)
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	batch := blockRows("z", 40, at)
	for i := range 10 {
		batch[i*3].EndedAt = time.Time{}
	}
	for range 3 {
		if err := s.ApplySpend(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ApplySpend(ctx, batch[:10]); err != nil {
		t.Fatal(err)
	}
	if ids, spend := blockState(t, s); len(ids) != 40 || spend != 40 {
		t.Errorf("%d rows, spend %v; want 40, 40", len(ids), spend)
	}
}
