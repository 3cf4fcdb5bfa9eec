package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/tollgate/tollgate/internal/store"
)

// moveSpendLogs moves the spend_logs rows of a SQLite store written before
// spend blocks (migration 00018) into blocks, in the order they were
// written (rowid), spendBlockRows rows (or spendBlockBytes) per
// transaction. Each transaction inserts one block and records the last
// rowid it moved in spend_logs_move; the rows themselves stay until every
// one is moved, and a last transaction empties spend_logs (one statement
// with no WHERE, which SQLite runs by dropping the table's and indexes'
// pages rather than deleting row by row) and drops the marker. An
// interrupted move leaves every row either moved (at or below the marker)
// or not, and the next open carries on from the marker. It returns how
// many rows it moved. A row without a request id (NULL: only a hand edit
// makes one; SQLite allows it in a TEXT primary key) is not moved, so that
// it cannot stop every open.
//
// Deleting each chunk's rows as it went cost a B-tree deletion per row in
// the table and in each of its five indexes, and a re-sort per chunk: the
// review of spendwrite measured 30,000 rows in 5.5 s and 300,000 in about
// 3 minutes. A move by rowid reads the table once, in order.
func (s *DB) moveSpendLogs(ctx context.Context) (int, error) {
	var one int
	switch err := s.db.QueryRowContext(ctx, `SELECT 1 FROM spend_logs LIMIT 1`).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		_, err := s.db.ExecContext(ctx, `DROP TABLE IF EXISTS spend_logs_move`)
		return 0, err
	case err != nil:
		return 0, err
	}
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS spend_logs_move (upto INTEGER NOT NULL)`); err != nil {
		return 0, err
	}
	var upto sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT max(upto) FROM spend_logs_move`).Scan(&upto); err != nil {
		return 0, err
	}
	after, moved := upto.Int64, 0
	for {
		n, last, err := s.moveSpendChunk(ctx, after)
		if err != nil {
			return moved, err
		}
		if n == 0 {
			break
		}
		moved, after = moved+n, last
		if h := moveSpendHook; h != nil {
			if err := h(moved); err != nil {
				return moved, err
			}
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return moved, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM spend_logs`); err != nil {
		return moved, err
	}
	if _, err := tx.ExecContext(ctx, `DROP TABLE spend_logs_move`); err != nil {
		return moved, err
	}
	return moved, tx.Commit()
}

// moveSpendHook, when set (tests), is called after each chunk the move
// committed; an error it returns stops the move there, as a crash would.
var moveSpendHook func(moved int) error

// moveSpendChunk moves the rows after rowid after that fill a block, and
// returns how many it moved and the last one's rowid.
func (s *DB) moveSpendChunk(ctx context.Context, after int64) (int, int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT rowid, request_id, key_hash, user_id, team_id, end_user, model_group, deployment, provider,
		prompt_tokens, completion_tokens, cached_tokens, cost, status, latency_ms, started_at, ended_at,
		reported_prompt_tokens, reported_completion_tokens, usage_clamped, usage_estimated, response_id, call_type,
		request_tags, metadata, messages, response, cache_hit, cache_key, saved_cost, guardrails, error_information
		FROM spend_logs WHERE rowid > ? AND request_id IS NOT NULL ORDER BY rowid LIMIT ?`, after, spendBlockRows)
	if err != nil {
		return 0, 0, err
	}
	b := newSpendBlock()
	last := after
	for !b.full() && rows.Next() {
		var l store.SpendLog
		var started, ended, clamped, estimated, hit int64
		var tags, md, messages, response, guards, errInfo sql.NullString
		if err := rows.Scan(&last, &l.RequestID, &l.KeyHash, &l.UserID, &l.TeamID, &l.EndUser, &l.ModelGroup, &l.Deployment, &l.Provider,
			&l.PromptTokens, &l.CompletionTokens, &l.CachedTokens, &l.Cost, &l.Status, &l.LatencyMS, &started, &ended,
			&l.ReportedPromptTokens, &l.ReportedCompletionTokens, &clamped, &estimated, &l.ResponseID, &l.CallType,
			&tags, &md, &messages, &response, &hit, &l.CacheKey, &l.SavedCost, &guards, &errInfo); err != nil {
			rows.Close()
			return 0, 0, err
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
		return 0, 0, err
	}
	if b.rows == 0 {
		return 0, 0, nil
	}
	if _, err := tx.ExecContext(ctx, spendBlockInsert, int64(b.rows), b.minStarted, b.maxStarted, b.minEnded, b.maxEnded, b.ids, b.attrs, b.summaryBytes(), b.data); err != nil {
		return 0, 0, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM spend_logs_move`); err != nil {
		return 0, 0, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO spend_logs_move (upto) VALUES (?)`, last); err != nil {
		return 0, 0, err
	}
	return b.rows, last, tx.Commit()
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
