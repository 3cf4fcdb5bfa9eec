package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/tollgate/tollgate/internal/store"
)

// moveSpendLogs moves the spend_logs rows of a SQLite store written before
// spend blocks (migration 00018) into blocks, spendBlockRows rows (or
// spendBlockBytes) per transaction, in the order of (ended_at, request_id):
// each transaction inserts one block and deletes the rows it holds, so an
// interrupted move leaves every row in exactly one of the two tables and
// the next open carries on. It returns how many rows it moved. The rows go
// into new blocks (the open block, if any, is left as it is): their ended
// ranges are the past, before any block the writer started.
//
// A temporary index on (ended_at, request_id), dropped at the end, keeps
// each chunk's read from scanning and sorting the whole table.
func (s *DB) moveSpendLogs(ctx context.Context) (int, error) {
	var one int
	switch err := s.db.QueryRowContext(ctx, `SELECT 1 FROM spend_logs LIMIT 1`).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		_, err := s.db.ExecContext(ctx, `DROP INDEX IF EXISTS spend_logs_move`)
		return 0, err
	case err != nil:
		return 0, err
	}
	if _, err := s.db.ExecContext(ctx, `CREATE INDEX IF NOT EXISTS spend_logs_move ON spend_logs (ended_at, request_id)`); err != nil {
		return 0, err
	}
	moved := 0
	for {
		n, err := s.moveSpendChunk(ctx)
		if err != nil {
			return moved, err
		}
		if n == 0 {
			break
		}
		moved += n
	}
	_, err := s.db.ExecContext(ctx, `DROP INDEX IF EXISTS spend_logs_move`)
	return moved, err
}

// moveSpendChunk moves the first rows of spend_logs that fill a block.
func (s *DB) moveSpendChunk(ctx context.Context) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT request_id, key_hash, user_id, team_id, end_user, model_group, deployment, provider,
		prompt_tokens, completion_tokens, cached_tokens, cost, status, latency_ms, started_at, ended_at,
		reported_prompt_tokens, reported_completion_tokens, usage_clamped, usage_estimated, response_id, call_type,
		request_tags, metadata, messages, response, cache_hit, cache_key, saved_cost, guardrails, error_information
		FROM spend_logs ORDER BY ended_at, request_id LIMIT ?`, spendBlockRows)
	if err != nil {
		return 0, err
	}
	b := newSpendBlock()
	for !b.full() && rows.Next() {
		var l store.SpendLog
		var started, ended, clamped, estimated, hit int64
		var tags, md, messages, response, guards, errInfo sql.NullString
		if err := rows.Scan(&l.RequestID, &l.KeyHash, &l.UserID, &l.TeamID, &l.EndUser, &l.ModelGroup, &l.Deployment, &l.Provider,
			&l.PromptTokens, &l.CompletionTokens, &l.CachedTokens, &l.Cost, &l.Status, &l.LatencyMS, &started, &ended,
			&l.ReportedPromptTokens, &l.ReportedCompletionTokens, &clamped, &estimated, &l.ResponseID, &l.CallType,
			&tags, &md, &messages, &response, &hit, &l.CacheKey, &l.SavedCost, &guards, &errInfo); err != nil {
			rows.Close()
			return 0, err
		}
		l.StartedAt, l.EndedAt = fromMicros(started), fromMicros(ended)
		l.UsageClamped, l.UsageEstimated, l.CacheHit = clamped != 0, estimated != 0, hit != 0
		if tags.Valid {
			_ = json.Unmarshal([]byte(tags.String), &l.RequestTags) // for the filter; stored as it is
		}
		// The JSON columns go into the block as the text stored.
		b.addTexts(&l, spendTexts{nullable(tags), nullable(md), nullable(messages), nullable(response), nullable(guards), nullable(errInfo)})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if b.rows == 0 {
		return 0, nil
	}
	if _, err := tx.ExecContext(ctx, spendBlockInsert, int64(b.rows), b.minStarted, b.maxStarted, b.minEnded, b.maxEnded, b.ids, b.attrs, b.summaryBytes(), b.data); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM spend_logs WHERE request_id IN
		(SELECT request_id FROM spend_logs ORDER BY ended_at, request_id LIMIT ?)`, b.rows)
	if err != nil {
		return 0, err
	}
	if n, err := res.RowsAffected(); err != nil || n != int64(b.rows) {
		return 0, fmt.Errorf("move spend logs: deleted %d rows of %d moved (%v)", n, b.rows, err)
	}
	return b.rows, tx.Commit()
}

// nullable is a column's text as spendTexts holds it.
func nullable(v sql.NullString) any {
	if !v.Valid {
		return nil
	}
	return v.String
}

// logMoved says how many spend_logs rows an open moved into blocks.
func logMoved(n int) {
	if n > 0 {
		slog.Info("spend logs moved into spend blocks", "rows", n)
	}
}
