package sqlstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/tollgate/tollgate/internal/store"
)

// WALFrames checkpoints the WAL and returns the pages it held: the pages
// written since the last call. SQLite only.
func WALFrames(ctx context.Context, s *DB) (int, error) {
	var busy, frames, moved int
	if err := s.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &moved); err != nil {
		return 0, err
	}
	// TRUNCATE starts the next batch's frames at zero.
	_, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	return frames, err
}

// Exec runs a statement on the store's database.
func Exec(ctx context.Context, s *DB, q string) error {
	_, err := s.db.ExecContext(ctx, q)
	return err
}

// OpenSQLiteAt is OpenSQLite migrating only up to version.
func OpenSQLiteAt(ctx context.Context, path string, version int64) (*DB, error) {
	return openSQLite(ctx, path, version)
}

// OpenPostgresAt is OpenPostgres migrating only up to version.
func OpenPostgresAt(ctx context.Context, url string, version int64) (*DB, error) {
	return openPostgres(ctx, url, version)
}

// MigrateDownTo rolls the schema back to version.
func MigrateDownTo(ctx context.Context, s *DB, version int64) error {
	p, err := s.migrations()
	if err != nil {
		return err
	}
	_, err = p.DownTo(ctx, version)
	return err
}

// SpendLogsQueries is ListSpendLogs' count and page statements for f.
func SpendLogsQueries(f store.SpendFilter) (count, page string, args []any, err error) {
	return spendLogsQueries(f)
}

// Plan is the query plan of q: on SQLite EXPLAIN QUERY PLAN's details, on
// PostgreSQL EXPLAIN's lines, one string. PostgreSQL plans with
// enable_seqscan off, so that on a small table it shows an index it can
// use rather than the scan it would prefer.
func Plan(ctx context.Context, s *DB, q string, args ...any) (string, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	explain := "EXPLAIN "
	if s.dialect == goose.DialectSQLite3 {
		explain = "EXPLAIN QUERY PLAN "
	} else if _, err := tx.ExecContext(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
		return "", err
	}
	rows, err := tx.QueryContext(ctx, explain+q, args...)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", err
	}
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return "", err
		}
		out = append(out, fmt.Sprint(vals[len(vals)-1]))
	}
	return strings.Join(out, "\n"), rows.Err()
}

// QueryText runs q on the store's database and returns every row's
// columns as text (NULL as "<nil>").
func QueryText(ctx context.Context, s *DB, q string) ([][]string, error) {
	rows, err := s.db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out [][]string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make([]string, len(cols))
		for i, v := range vals {
			row[i] = fmt.Sprintf("%T:%v", v, v)
			if b, ok := v.([]byte); ok {
				row[i] = "bytes:" + string(b)
			}
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// QueryInt is the integer a one-value query (a PRAGMA) answers.
func QueryInt(ctx context.Context, s *DB, q string) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, q).Scan(&n)
	return n, err
}

// CloseIdle closes the store's idle connections, so the next query opens
// a new one.
func CloseIdle(s *DB) {
	s.db.SetMaxIdleConns(0)
	s.db.SetMaxIdleConns(2)
}

// SetClock makes f the time s's ResetBudget stamps with.
func SetClock(s *DB, f func() time.Time) { s.clock.Store(&f) }

// SpendBlock is one stored spend block as a test sees it.
type SpendBlock struct {
	ID, Rows                                   int64
	MinStarted, MaxStarted, MinEnded, MaxEnded int64
	Logs                                       []store.SpendLog // its rows decoded, in order
}

// SpendBlocks reads and decodes every spend block, in id order (SQLite).
func SpendBlocks(ctx context.Context, s *DB) ([]SpendBlock, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, row_count, min_started, max_started, min_ended, max_ended, data FROM spend_blocks ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []SpendBlock
	for rows.Next() {
		var b SpendBlock
		var data []byte
		if err := rows.Scan(&b.ID, &b.Rows, &b.MinStarted, &b.MaxStarted, &b.MinEnded, &b.MaxEnded, &data); err != nil {
			return nil, err
		}
		d := spendRowReader{data: data}
		var r spendRow
		for d.next(&r) {
			b.Logs = append(b.Logs, r.log(false))
		}
		if d.err != nil {
			return nil, fmt.Errorf("block %d: %w", b.ID, d.err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// SpendBlockLogs is every row of every spend block, in the order written.
func SpendBlockLogs(ctx context.Context, s *DB) ([]store.SpendLog, error) {
	blocks, err := SpendBlocks(ctx, s)
	var out []store.SpendLog
	for _, b := range blocks {
		out = append(out, b.Logs...)
	}
	return out, err
}

// SpendBlockCandidates is how many blocks the replay check of a batch
// whose rows ended from lo to hi (Unix µs) looks at.
func SpendBlockCandidates(ctx context.Context, s *DB, lo, hi int64) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+spendBlockCandidates+`)`, lo, hi).Scan(&n)
	return n, err
}

// SpendBlockCandidatesPlan is the query plan of the replay check's
// candidate query.
func SpendBlockCandidatesPlan(ctx context.Context, s *DB) (string, error) {
	return Plan(ctx, s, spendBlockCandidates, int64(0), int64(0))
}

// SpendBlockMetadata is the metadata text a block holds for the row of
// request id id.
func SpendBlockMetadata(ctx context.Context, s *DB, id string) (string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT data FROM spend_blocks ORDER BY id`)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return "", err
		}
		d := spendRowReader{data: data}
		var r spendRow
		for d.next(&r) {
			if r.RequestID == id {
				return r.metadata.s, nil
			}
		}
	}
	return "", fmt.Errorf("no row %s", id)
}

// SetMoveSpendHook sets moveSpendHook until the test ends.
func SetMoveSpendHook(t interface{ Cleanup(func()) }, h func(moved int) error) {
	moveSpendHook = h
	t.Cleanup(func() { moveSpendHook = nil })
}

// SetSpendChunkBytes sets the text one PostgreSQL spend insert carries at
// most (64 MiB) and returns what restores it.
func SetSpendChunkBytes(n int) (restore func()) {
	old := spendChunkBytes.Swap(int64(n))
	return func() { spendChunkBytes.Store(old) }
}
