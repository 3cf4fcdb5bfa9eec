package sqlstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// blockRows are n rows of key k, ended one millisecond apart from at.
func blockRows(prefix string, n int, at time.Time) []store.SpendLog {
	rows := make([]store.SpendLog, n)
	for i := range rows {
		t := at.Add(time.Duration(i) * time.Millisecond)
		rows[i] = store.SpendLog{RequestID: fmt.Sprintf("%s-%04d", prefix, i), ResponseID: fmt.Sprintf("chatcmpl-%s%d", prefix, i),
			KeyHash: "k", ModelGroup: "m", Cost: 1, PromptTokens: 1, Status: 200, StartedAt: t.Add(-time.Second), EndedAt: t}
	}
	return rows
}

func openBlocks(t *testing.T) *sqlstore.DB {
	t.Helper()
	ctx := context.Background()
	s, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k"}); err != nil {
		t.Fatal(err)
	}
	return s
}

// blockIDs is the request ids of s's blocks, block by block, and the rows
// each block's row_count says it holds.
func blockIDs(t *testing.T, s *sqlstore.DB) (ids [][]string, counts []int64) {
	t.Helper()
	blocks, err := sqlstore.SpendBlocks(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		var in []string
		for _, l := range b.Logs {
			in = append(in, l.RequestID)
		}
		ids, counts = append(ids, in), append(counts, b.Rows)
	}
	return ids, counts
}

func keySpend(t *testing.T, s *sqlstore.DB) float64 {
	t.Helper()
	k, err := s.GetKey(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	return k.Spend
}

func spendLogRows(t *testing.T, s *sqlstore.DB) int64 {
	t.Helper()
	n, err := sqlstore.QueryInt(context.Background(), s, `SELECT COUNT(*) FROM spend_logs`)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSpendRowsGoIntoBlocks: SQLite's ApplySpend adds a batch's rows, in
// order, to the open block and then to new ones as each fills
// (spendBlockRows, 512), and writes no spend_logs row; each block's
// row_count and ranges are its rows'.
func TestSpendRowsGoIntoBlocks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openBlocks(t)
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	var all []store.SpendLog
	for i, n := range []int{10, 600, 5, 1100} {
		b := blockRows(fmt.Sprintf("b%d", i), n, at.Add(time.Duration(i)*time.Minute))
		all = append(all, b...)
		if err := s.ApplySpend(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	ids, counts := blockIDs(t, s)
	var sizes []int
	var got []string
	for i, in := range ids {
		sizes = append(sizes, len(in))
		if counts[i] != int64(len(in)) {
			t.Errorf("block %d: row_count %d, %d rows", i, counts[i], len(in))
		}
		got = append(got, in...)
	}
	// 10 | +502 = 512, 98 | +5 = 103, +409 = 512 | 512 | 179
	if want := []int{512, 512, 512, 179}; !reflect.DeepEqual(sizes, want) {
		t.Errorf("blocks of %v rows, want %v", sizes, want)
	}
	var want []string
	for _, l := range all {
		want = append(want, l.RequestID)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the blocks' rows are not the batches' rows in order (%d rows, want %d)", len(got), len(want))
	}
	blocks, err := sqlstore.SpendBlocks(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		first, last := b.Logs[0], b.Logs[len(b.Logs)-1]
		if b.MinEnded != first.EndedAt.UnixMicro() || b.MaxEnded != last.EndedAt.UnixMicro() ||
			b.MinStarted != first.StartedAt.UnixMicro() || b.MaxStarted != last.StartedAt.UnixMicro() {
			t.Errorf("block %d: ranges %+v, rows from %v to %v", b.ID, b, first.EndedAt, last.EndedAt)
		}
	}
	if n := spendLogRows(t, s); n != 0 {
		t.Errorf("%d spend_logs rows, want none", n)
	}
	if sp := keySpend(t, s); sp != float64(len(all)) {
		t.Errorf("key spend %v, want %d", sp, len(all))
	}
}

// TestSpendBlocksReplay: a batch written again, whole or in part, with new
// rows among it, adds only the new rows and counts only their spend, across
// blocks; a request id repeated inside a batch keeps its first row.
func TestSpendBlocksReplay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openBlocks(t)
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	first := blockRows("r", 700, at) // a block and a half
	if err := s.ApplySpend(ctx, first); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.ApplySpend(ctx, first); err != nil {
			t.Fatal(err)
		}
	}
	// Part of it again, between new rows that end within its range.
	next := blockRows("n", 3, at.Add(100*time.Millisecond))
	mixed := append(append([]store.SpendLog{next[0]}, first[400:600]...), next[1:]...)
	dup := next[1]
	dup.Cost, dup.ModelGroup = 50, "other"
	mixed = append(mixed, dup)
	if err := s.ApplySpend(ctx, mixed); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, mixed); err != nil {
		t.Fatal(err)
	}
	ids, _ := blockIDs(t, s)
	seen := map[string]int{}
	n := 0
	for _, in := range ids {
		for _, id := range in {
			seen[id]++
			n++
		}
	}
	if n != 703 || len(seen) != 703 {
		t.Errorf("%d rows stored, %d ids; want 703 each", n, len(seen))
	}
	if sp := keySpend(t, s); sp != 703 {
		t.Errorf("key spend %v, want 703", sp)
	}
	logs, err := sqlstore.SpendBlockLogs(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range logs {
		if l.RequestID == dup.RequestID && (l.Cost != 1 || l.ModelGroup != "m") {
			t.Errorf("repeated id %s kept %+v, want the batch's first row", l.RequestID, l)
		}
	}
}

// TestSpendBlocksReplayNeedsTheSameEnd: the replay check looks for a row's
// id in the blocks whose ended range overlaps the batch's (a replayed row
// has the ended_at of its first write). A row sent again with another
// ended_at inside the range of the block that holds it is found; one whose
// ended_at falls outside every block holding its id (a near miss: same id,
// another block) is written, and counted, again, as documented.
func TestSpendBlocksReplayNeedsTheSameEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openBlocks(t)
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	first := blockRows("r", 512, at) // one full block: ended at .. at+511ms
	if err := s.ApplySpend(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, blockRows("later", 10, at.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	inside := first[7]
	inside.EndedAt = at.Add(300 * time.Millisecond) // within the full block's range
	if err := s.ApplySpend(ctx, []store.SpendLog{inside}); err != nil {
		t.Fatal(err)
	}
	if sp := keySpend(t, s); sp != 522 {
		t.Fatalf("a row replayed within its block's range was counted again: spend %v, want 522", sp)
	}
	miss := first[7]
	miss.EndedAt = at.Add(time.Hour + 5*time.Millisecond) // the open block's range, which lacks it
	if err := s.ApplySpend(ctx, []store.SpendLog{miss}); err != nil {
		t.Fatal(err)
	}
	if sp := keySpend(t, s); sp != 523 {
		t.Errorf("near miss: spend %v, want 523 (written again)", sp)
	}
	ids, _ := blockIDs(t, s)
	if len(ids) != 2 || len(ids[0]) != 512 || len(ids[1]) != 11 || ids[1][10] != miss.RequestID {
		t.Errorf("blocks %d, want the full one and an open one of 11 rows ending with %s", len(ids), miss.RequestID)
	}
}

// TestSpendBlocksReplayCandidates: the replay check of a batch in the
// usual order (ended after the rows before it) reads at most the open block
// and the one before it, through spend_blocks_ended.
func TestSpendBlocksReplayCandidates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openBlocks(t)
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	for i := range 8 {
		if err := s.ApplySpend(ctx, blockRows(fmt.Sprintf("b%d", i), 300, at.Add(time.Duration(i)*300*time.Millisecond))); err != nil {
			t.Fatal(err)
		}
	}
	blocks, err := sqlstore.SpendBlocks(ctx, s)
	if err != nil || len(blocks) != 5 {
		t.Fatalf("%d blocks (%v), want 5", len(blocks), err)
	}
	// The next batch, overlapping the last rows a little (rows that ended
	// before the previous batch was cut, queued after it).
	lo := at.Add(8*300*time.Millisecond - 50*time.Millisecond).UnixMicro()
	hi := lo + (300 * time.Millisecond).Microseconds()
	if n, err := sqlstore.SpendBlockCandidates(ctx, s, lo, hi); err != nil || n < 1 || n > 2 {
		t.Errorf("a batch in order has %d candidate blocks (%v), want 1 or 2", n, err)
	}
	plan, err := sqlstore.SpendBlockCandidatesPlan(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan, "spend_blocks_ended") {
		t.Errorf("the candidates' query does not use spend_blocks_ended:\n%s", plan)
	}
}

// TestMoveSpendLogs: a SQLite store written by a version before spend
// blocks (spend_logs rows, migration 00017) has its rows moved into blocks
// when opened, every row once, in the order of ended_at, with every column
// as it was; spend_logs is left empty, and rows left there by a move that
// was interrupted are moved by the next open.
func TestMoveSpendLogs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tollgate.db")
	old, err := sqlstore.OpenSQLiteAt(ctx, path, 17)
	if err != nil {
		t.Fatal(err)
	}
	// 1,200 plain rows, ended in the reverse order of their ids, and one
	// with every column set.
	if err := sqlstore.Exec(ctx, old, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
		INSERT INTO spend_logs (request_id, response_id, key_hash, model_group, cost, status, started_at, ended_at)
		SELECT printf('old-%04d', i), 'chatcmpl-' || i, 'k', 'gpt-4', 0.5, 200, 1764000000000000 + i, 1764000000000000 + 5000 - i FROM n`); err != nil {
		t.Fatal(err)
	}
	if err := sqlstore.Exec(ctx, old, `INSERT INTO spend_logs (request_id, key_hash, user_id, team_id, end_user, model_group, deployment, provider,
		prompt_tokens, completion_tokens, cached_tokens, cost, status, latency_ms, started_at, ended_at,
		reported_prompt_tokens, reported_completion_tokens, usage_clamped, usage_estimated, response_id, call_type,
		request_tags, metadata, messages, response, cache_hit, cache_key, saved_cost, guardrails, error_information)
		VALUES ('full', 'kh', 'u', 't', 'e', 'm', 'd', 'p', 11, 7, 3, 0.25, 500, 42, 1764000000000000, 1764000000000001,
		12, 8, 1, 1, 'chatcmpl-full', 'acompletion', '["prod","job:1"]', '{"n":12345678901234567890,"a":"b"}',
		'[{"role":"user","content":"hi"}]', '{"id":"x"}', 1, 'ck', 0.5, '[{"guardrail":"g"}]',
		'{"error_code":"500","error_class":"E","llm_provider":"p","error_message":"m"}')`); err != nil {
		t.Fatal(err)
	}
	old.Close()

	s, err := sqlstore.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := spendLogRows(t, s); n != 0 {
		t.Errorf("%d spend_logs rows left, want none", n)
	}
	logs, err := sqlstore.SpendBlockLogs(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(logs) != 1201 {
		t.Fatalf("%d rows in blocks, want 1201", len(logs))
	}
	seen := map[string]bool{}
	for i, l := range logs {
		if seen[l.RequestID] {
			t.Errorf("row %s moved twice", l.RequestID)
		}
		seen[l.RequestID] = true
		// In the order they were written (rowid): old-0001 ... old-1200, full.
		if want := fmt.Sprintf("old-%04d", i+1); i < 1200 && l.RequestID != want {
			t.Errorf("row %d is %s, want %s", i, l.RequestID, want)
		}
	}
	for i := 1; i <= 1200; i++ {
		if !seen[fmt.Sprintf("old-%04d", i)] {
			t.Errorf("row old-%04d not moved", i)
		}
	}
	var full store.SpendLog
	for _, l := range logs {
		if l.RequestID == "full" {
			full = l
		}
	}
	want := store.SpendLog{RequestID: "full", KeyHash: "kh", UserID: "u", TeamID: "t", EndUser: "e", ModelGroup: "m", Deployment: "d", Provider: "p",
		PromptTokens: 11, CompletionTokens: 7, CachedTokens: 3, Cost: 0.25, Status: 500, LatencyMS: 42,
		StartedAt: time.UnixMicro(1764000000000000).UTC(), EndedAt: time.UnixMicro(1764000000000001).UTC(),
		ReportedPromptTokens: 12, ReportedCompletionTokens: 8, UsageClamped: true, UsageEstimated: true, ResponseID: "chatcmpl-full",
		CallType: "acompletion", RequestTags: []string{"prod", "job:1"}, Metadata: full.Metadata,
		Messages: json.RawMessage(`[{"role":"user","content":"hi"}]`), Response: json.RawMessage(`{"id":"x"}`), CacheHit: true, CacheKey: "ck",
		SavedCost: 0.5, Guardrails: json.RawMessage(`[{"guardrail":"g"}]`),
		ErrorInformation: &store.ErrorInformation{ErrorCode: "500", ErrorClass: "E", LLMProvider: "p", ErrorMessage: "m"}}
	if !reflect.DeepEqual(full, want) {
		t.Errorf("moved row:\n%+v\nwant\n%+v", full, want)
	}
	if md, _ := json.Marshal(full.Metadata); string(md) != `{"a":"b","n":12345678901234567000}` {
		t.Errorf("moved metadata %s", md)
	}
	// The block keeps the stored text itself: a big number survives.
	if text, err := sqlstore.SpendBlockMetadata(ctx, s, "full"); err != nil || text != `{"n":12345678901234567890,"a":"b"}` {
		t.Errorf("moved metadata text %q (%v), want the column's text", text, err)
	}
	s.Close()

	// Rows an interrupted move left behind (here: written after it) are
	// moved by the next open, and the ones moved stay once.
	s2, err := sqlstore.OpenSQLiteAt(ctx, path, 18)
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlstore.Exec(ctx, s2, `INSERT INTO spend_logs (request_id, key_hash, started_at, ended_at) VALUES ('late-1', 'k', 1, 1), ('late-2', 'k', 2, 2)`); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	s3, err := sqlstore.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	logs, err = sqlstore.SpendBlockLogs(ctx, s3)
	if err != nil || len(logs) != 1203 {
		t.Fatalf("%d rows in blocks after the second open (%v), want 1203", len(logs), err)
	}
	if n := spendLogRows(t, s3); n != 0 {
		t.Errorf("%d spend_logs rows left, want none", n)
	}
}

// A move stopped after some blocks (a crash, a timeout at open) leaves
// every row either in a block or still to move: the next open moves the
// rest, none twice, and spend_logs ends empty.
func TestMoveSpendLogsInterrupted(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tollgate.db")
	old, err := sqlstore.OpenSQLiteAt(ctx, path, 17)
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlstore.Exec(ctx, old, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
		INSERT INTO spend_logs (request_id, key_hash, cost, started_at, ended_at)
		SELECT printf('r-%04d', i), 'k', 0.5, 1764000000000000 + i, 1764000000000000 + i FROM n`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	stop := errors.New("stopped")
	sqlstore.SetMoveSpendHook(t, func(moved int) error {
		if moved >= 1000 {
			return stop
		}
		return nil
	})
	if s, err := sqlstore.OpenSQLite(ctx, path); !errors.Is(err, stop) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("open with the move stopped: %v, want it to fail", err)
	}
	sqlstore.SetMoveSpendHook(t, nil)
	s, err := sqlstore.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	logs, err := sqlstore.SpendBlockLogs(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, l := range logs {
		seen[l.RequestID]++
	}
	if len(logs) != 2000 || len(seen) != 2000 {
		t.Fatalf("%d rows in blocks (%d distinct), want 2000 once each", len(logs), len(seen))
	}
	if n := spendLogRows(t, s); n != 0 {
		t.Errorf("%d spend_logs rows left, want none", n)
	}
	if n, err := sqlstore.QueryInt(ctx, s, `SELECT COUNT(*) FROM sqlite_master WHERE name = 'spend_logs_move'`); err != nil || n != 0 {
		t.Errorf("the move's marker left behind (%d, %v)", n, err)
	}
}
