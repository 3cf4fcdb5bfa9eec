// Package sqlstore implements store.Store on database/sql with one SQL text
// for SQLite (modernc.org/sqlite, pure Go) and PostgreSQL (pgx). The engines
// differ only in how they are opened.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"

	"github.com/tollgate/tollgate/internal/store"
)

// DB is a store on a SQL database.
type DB struct {
	db      *sql.DB
	dialect goose.Dialect
	// noSpendLogs: ApplySpend writes spend and rollups, not spend_logs rows.
	noSpendLogs atomic.Bool
	// timeout bounds each call whose context has no deadline of its own.
	timeout atomic.Int64
	// clock, when set (tests), is the time ResetBudget stamps with: a
	// clock stopped on a stamp stands for writes in one microsecond.
	clock atomic.Pointer[func() time.Time]
}

// now is the time a record write stamps (time.Now unless a test set the clock).
func (s *DB) now() time.Time {
	if f := s.clock.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

// DefaultTimeout bounds every store call whose caller set no deadline (a
// management request, a CLI command): a database that accepts connections
// and never answers costs a caller this long, then an error wrapping
// context.DeadlineExceeded, which the API answers with 503. Callers with
// their own deadline (the spend writer, resync, startup) keep it.
const DefaultTimeout = 5 * time.Second

// SetTimeout changes the bound of calls without a deadline (0: DefaultTimeout).
func (s *DB) SetTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultTimeout
	}
	s.timeout.Store(int64(d))
}

// bound gives ctx the store's deadline unless it has one already.
func (s *DB) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, time.Duration(s.timeout.Load()))
}

var _ store.Store = (*DB)(nil)

// Open opens the store named by url: a postgres:// or postgresql:// URL, or
// a SQLite file path (optionally prefixed sqlite://). It migrates the schema.
func Open(ctx context.Context, url string) (*DB, error) {
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		return OpenPostgres(ctx, url)
	}
	return OpenSQLite(ctx, strings.TrimPrefix(url, "sqlite://"))
}

// OpenSQLite opens (creating if needed) the SQLite file at path. All access
// goes through one connection: writes serialize without SQLITE_BUSY, and the
// store is off the request path, so one connection is plenty.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	return openSQLite(ctx, path, 0)
}

// sqliteCacheKiB is the page cache of the store's one connection, in KiB
// (PRAGMA cache_size's negative form; SQLite's default is 2,000). Under
// modernc's allocator a 4 KiB page and its header take an 8 KiB slot, so
// the cache costs twice this in anonymous memory: 500 KiB holds the pages
// the spend writer and the resync touch on every batch (the B-trees'
// interior pages and the right edges spend_logs grows on) and costs ≈ 3 MB
// less than the default (measured: modernc's mapped bytes after loading
// 100,000 keys, 5.0 MB with the default, 3.0 MB with 1 MiB, 2.0 MB with
// this). The price is page reads from the OS page cache: with 100,000 keys
// and rows on random keys, 12.7 a spend row against 8.8 with 1 MiB, ≈ 5 µs
// of CPU a row (BenchmarkSpendReadsByCacheSize; docs/performance.md,
// branch mem79), off the request path.
const sqliteCacheKiB = 500

// openSQLite is OpenSQLite migrating up to version (0: every migration).
func openSQLite(ctx context.Context, path string, version int64) (*DB, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)" +
		"&_pragma=cache_size(-" + strconv.Itoa(sqliteCacheKiB) + ")&_txlock=immediate"
	// The connector wraps modernc's connections so that ApplySpend's
	// statements, prepared below database/sql, close with their connection
	// (sqliteConn).
	base, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(sqliteConnector{base})
	db.SetMaxOpenConns(1)
	return open(ctx, db, goose.DialectSQLite3, version)
}

// OpenPostgres opens a PostgreSQL store. Unless the URL sets its own, a
// connection attempt gives up after connect_timeout=5 seconds (libpq's
// parameter, which pgx reads), whatever the caller's deadline.
func OpenPostgres(ctx context.Context, url string) (*DB, error) {
	return openPostgres(ctx, url, 0)
}

// openPostgres is OpenPostgres migrating up to version (0: every migration).
func openPostgres(ctx context.Context, url string, version int64) (*DB, error) {
	isURL := strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
	if isURL && !strings.Contains(url, "connect_timeout=") {
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		url += sep + "connect_timeout=5"
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return open(ctx, db, goose.DialectPostgres, version)
}

func open(ctx context.Context, db *sql.DB, dialect goose.Dialect, version int64) (*DB, error) {
	s := &DB{db: db, dialect: dialect}
	s.SetTimeout(DefaultTimeout)
	if err := s.migrate(ctx, version); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Migrate applies the embedded migrations that have not run yet.
func (s *DB) Migrate(ctx context.Context) error { return s.migrate(ctx, 0) }

// migrate applies the migrations up to version (0: all of them).
func (s *DB) migrate(ctx context.Context, version int64) error {
	p, err := s.migrations()
	if err != nil {
		return err
	}
	if version > 0 {
		_, err = p.UpTo(ctx, version)
	} else {
		_, err = p.Up(ctx)
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if s.dialect == goose.DialectSQLite3 && (version == 0 || version >= spendBlocksVersion) {
		// Spend rows an older version wrote as spend_logs rows go into
		// blocks, where ApplySpend writes and ListSpendLogs reads them.
		n, err := s.moveSpendLogs(ctx)
		logMoved(n)
		if err != nil {
			return fmt.Errorf("migrate: move spend logs into blocks: %w", err)
		}
	}
	return nil
}

// spendBlocksVersion is the migration that made spend_blocks (00018).
const spendBlocksVersion = 18

// migrations is goose's runner of the embedded migrations on s.
func (s *DB) migrations() (*goose.Provider, error) {
	sub, err := fs.Sub(store.Migrations, "migrations")
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(s.dialect, s.db, sub, goose.WithGoMigrations(s.changeMarksMigration()))
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// Ping checks the database answers.
func (s *DB) Ping(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.db.PingContext(ctx)
}

// Close closes the database.
func (s *DB) Close() error {
	return s.db.Close()
}

// Engine names the engine: "sqlite3" or "postgres".
func (s *DB) Engine() string { return string(s.dialect) }

// param is the n-th numbered placeholder in the engine's syntax, for
// statements with many parameters ($n on PostgreSQL, ?n on SQLite).
func (s *DB) param(n int) string {
	if s.dialect == goose.DialectSQLite3 {
		return "?" + strconv.Itoa(n)
	}
	return "$" + strconv.Itoa(n)
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.UnixMicro(n).UTC()
}

// classify maps driver errors to the store's sentinels.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	msg := err.Error()
	if strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "SQLSTATE 23505") || strings.Contains(msg, "duplicate key value") {
		return fmt.Errorf("%w: %v", store.ErrConflict, err)
	}
	return err
}

// refused marks err with store.ErrRejected when the database refused the
// data rather than failed to take it: PostgreSQL's data exceptions
// (SQLSTATE class 22: a byte sequence invalid in UTF-8, a NUL byte, a
// value out of range), integrity violations (23, but for a unique
// violation, which is a race) and program limits (54: a value too large); SQLite's constraint, too-big and mismatch errors;
// and a record that cannot be encoded. Anything else (a lost connection, a
// timeout, a lock, a missing table) is not the rows' fault and is left as
// it is, so the spend writer retries it.
func refused(err error) error {
	if err == nil || errors.Is(err, store.ErrRejected) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505":
			// A unique violation is a race with another writer (two
			// replicas creating one end user): retried, not refused.
		case strings.HasPrefix(pe.Code, "22"), strings.HasPrefix(pe.Code, "23"), strings.HasPrefix(pe.Code, "54"):
			return fmt.Errorf("%w: %w", store.ErrRejected, err)
		}
		return err
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch code := se.Code(); {
		case code == 2067 || code == 1555: // SQLITE_CONSTRAINT_UNIQUE, _PRIMARYKEY: as 23505
		case code&0xff == 18, code&0xff == 19, code&0xff == 20: // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH
			return fmt.Errorf("%w: %w", store.ErrRejected, err)
		}
	}
	return err
}

// encode is a record as the JSON of its data column. Records carry what
// callers sent, so encoding can fail (a time past year 9999, say): that is
// an error for the caller, never a panic.
func encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("sqlstore: cannot store %T: %w: %w", v, store.ErrRejected, err)
	}
	return string(b), nil
}

// txAttempts bounds how often tx runs a transaction that PostgreSQL aborted
// to break a deadlock or a serialization conflict.
const txAttempts = 3

// tx runs fn in a transaction. One that PostgreSQL aborted as a deadlock's
// victim (40P01) or for a serialization failure (40001) is run again, whole:
// nothing of it was applied, and the transaction it waited for has gone
// (the writes that take rows in one order, applySpend and deleteOwner, do
// not deadlock each other; a write beside another transaction, an
// operator's say, still can). fn must be safe to run again.
func (s *DB) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := s.txOnce(ctx, fn)
		if attempt == txAttempts || ctx.Err() != nil || !retryable(err) {
			return err
		}
	}
}

// retryable reports whether err is PostgreSQL aborting a transaction that
// may succeed when run again: a deadlock or a serialization failure.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

func (s *DB) txOnce(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}
