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

// WriteSpendRowsWhole makes s's SQLite spend writer bind every column of
// every row (whole = true) instead of leaving the ones that hold their
// default out (sqliteSpendInsertOf).
func WriteSpendRowsWhole(s *DB, whole bool) { s.spendWhole = whole }

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
