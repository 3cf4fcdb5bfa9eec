package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tollgate/tollgate/internal/store"
)

// SQLite's spend batches are written on a connection of their own, opened
// through SQLite's C API (modernc.org/sqlite/lib) rather than the driver,
// measured in docs/performance.md ("spend rows below the driver"):
//
//   - it is opened SQLITE_OPEN_NOMUTEX. The driver opens every connection
//     FULLMUTEX, and every call into SQLite (a bind, a step, a reset) then
//     takes and releases the connection's mutex, which in the transpiled
//     SQLite is a Go mutex. The writer's connection is used by one
//     goroutine at a time (rawWriter.mu), so SQLite's mutex guards nothing;
//   - a row's strings are copied into one buffer, reused from row to row,
//     and bound SQLITE_STATIC, where the driver allocates, copies and frees
//     each string in C memory, and asks SQLite each parameter's name;
//   - the statements are prepared SQLITE_PREPARE_PERSISTENT once and kept.
//
// The connection opens on the first batch (after the store's migrations)
// with the store's own settings (busy_timeout, synchronous, foreign_keys;
// WAL is the file's), and closes with the store. A batch that fails
// rolls back; if that fails too, the connection is closed and the next
// batch opens another. Management writes on the store's other connection
// and the writer's batches take SQLite's write lock in turn (BEGIN
// IMMEDIATE on both), each waiting up to busy_timeout for the other.

// rawBusyMillis is the writer connection's busy_timeout, the store's DSN's.
const rawBusyMillis = 10000

// rawWriter is the store's spend connection and its lock.
type rawWriter struct {
	path string // the database file, as the store opened it
	mu   sync.Mutex
	c    *rawConn    // nil until the first batch, and after a failed rollback
	shut bool        // closed with the store
	busy atomic.Bool // inside apply (tests wait for it)
}

// rawConn is one SQLite connection opened NOMUTEX, with its statements.
type rawConn struct {
	tls    *libc.TLS
	db     uintptr            // sqlite3*
	stmts  map[string]uintptr // by text: the statements but the row INSERTs
	shapes map[uint32]uintptr // the row INSERTs, by omitted columns (omitShape)
	// buf holds a statement's strings and blobs, bound SQLITE_STATIC: C
	// memory (SQLite reading Go memory trips -race's checkptr). Each
	// statement binds every parameter before it steps, so a binding left
	// pointing into a buffer since freed is never read.
	buf    uintptr
	bufCap int
	out    *uintptr // a C out-parameter (sqlite3**, sqlite3_stmt**)
	row    []any    // a row's values (spendArgs), reused
}

// rawError is an error SQLite returned, with its extended result code
// (as modernc.org/sqlite's Error carries; refused reads either).
type rawError struct {
	code int
	msg  string
}

func (e *rawError) Error() string { return e.msg }

// Code is the error's extended result code.
func (e *rawError) Code() int { return e.code }

// err is rc as an error with the connection's message (nil for SQLITE_OK
// and SQLITE_DONE).
func (c *rawConn) err(rc int32) error {
	if rc == sqlite3.SQLITE_OK || rc == sqlite3.SQLITE_DONE {
		return nil
	}
	code := int(sqlite3.Xsqlite3_extended_errcode(c.tls, c.db))
	if code&0xff != int(rc)&0xff {
		code = int(rc)
	}
	msg := libc.GoString(sqlite3.Xsqlite3_errmsg(c.tls, c.db))
	return &rawError{code: code, msg: fmt.Sprintf("%s (%d)", msg, code)}
}

// openRaw opens path (as the store's DSN names it, a file: URI) NOMUTEX
// with the store's settings.
func openRaw(path string) (*rawConn, error) {
	c := &rawConn{tls: libc.NewTLS(), stmts: map[string]uintptr{}, shapes: map[uint32]uintptr{}}
	c.out = new(uintptr)
	name, err := libc.CString("file:" + path)
	if err != nil {
		c.close()
		return nil, err
	}
	rc := sqlite3.Xsqlite3_open_v2(c.tls, name, uintptr(unsafe.Pointer(c.out)),
		sqlite3.SQLITE_OPEN_READWRITE|sqlite3.SQLITE_OPEN_NOMUTEX|sqlite3.SQLITE_OPEN_URI, 0)
	libc.Xfree(c.tls, name)
	c.db = *c.out
	if rc != sqlite3.SQLITE_OK {
		err := c.err(rc)
		c.close()
		return nil, fmt.Errorf("open spend connection: %w", err)
	}
	sqlite3.Xsqlite3_extended_result_codes(c.tls, c.db, 1)
	for _, q := range []string{"PRAGMA busy_timeout = 10000", "PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA foreign_keys = 1"} {
		if err := c.execText(q); err != nil {
			c.close()
			return nil, fmt.Errorf("open spend connection: %s: %w", q, err)
		}
	}
	c.row = make([]any, 0, spendCols)
	return c, nil
}

// execText runs q, stepping it to its end.
func (c *rawConn) execText(q string) error {
	st, err := c.prepare(q, 0)
	if err != nil {
		return err
	}
	defer sqlite3.Xsqlite3_finalize(c.tls, st)
	for {
		rc := sqlite3.Xsqlite3_step(c.tls, st)
		if rc == sqlite3.SQLITE_ROW {
			continue
		}
		return c.err(rc)
	}
}

// prepare compiles q.
func (c *rawConn) prepare(q string, flags uint32) (uintptr, error) {
	z, err := libc.CString(q)
	if err != nil {
		return 0, err
	}
	defer libc.Xfree(c.tls, z)
	*c.out = 0
	if rc := sqlite3.Xsqlite3_prepare_v3(c.tls, c.db, z, int32(len(q)+1), flags, uintptr(unsafe.Pointer(c.out)), 0); rc != sqlite3.SQLITE_OK {
		return 0, c.err(rc)
	}
	st := *c.out
	if st == 0 {
		return 0, fmt.Errorf("sqlite: no statement in %.40q", q)
	}
	return st, nil
}

// stmt returns the prepared q, preparing it on first use.
func (c *rawConn) stmt(q string) (uintptr, error) {
	if st := c.stmts[q]; st != 0 {
		return st, nil
	}
	st, err := c.prepare(q, sqlite3.SQLITE_PREPARE_PERSISTENT)
	if err != nil {
		return 0, err
	}
	c.stmts[q] = st
	return st, nil
}

// insertFor returns the row INSERT omitting the columns in omit, as
// sqliteSpendStmts.insertFor does.
func (c *rawConn) insertFor(omit uint32) (uintptr, uint32, error) {
	if st := c.shapes[omit]; st != 0 {
		return st, omit, nil
	}
	if len(c.shapes) >= sqliteSpendShapes {
		omit = 0
		if st := c.shapes[0]; st != 0 {
			return st, 0, nil
		}
	}
	st, err := c.prepare(sqliteSpendInsertOf(omit), sqlite3.SQLITE_PREPARE_PERSISTENT)
	if err != nil {
		return 0, 0, err
	}
	c.shapes[omit] = st
	return st, omit, nil
}

// close finalizes c's statements and closes it; sqlite3_close (not _v2)
// fails rather than leave a zombie holding the files, which no statement
// left makes it do.
func (c *rawConn) close() error {
	var err error
	for _, st := range c.stmts {
		sqlite3.Xsqlite3_finalize(c.tls, st)
	}
	for _, st := range c.shapes {
		sqlite3.Xsqlite3_finalize(c.tls, st)
	}
	c.stmts, c.shapes = nil, nil
	if c.db != 0 {
		if rc := sqlite3.Xsqlite3_close_v2(c.tls, c.db); rc != sqlite3.SQLITE_OK {
			err = c.err(rc)
		}
		c.db = 0
	}
	if c.buf != 0 {
		libc.Xfree(c.tls, c.buf)
		c.buf = 0
	}
	c.tls.Close()
	return err
}

// run binds args to st, steps it to its end and resets it; n is the rows
// it changed.
func (c *rawConn) run(st uintptr, args []any) (n int, err error) {
	// The strings first, into the buffer, grown to hold all of them so
	// that no binding is left pointing into a freed one.
	size := 1
	for i, a := range args {
		switch x := a.(type) {
		case nil, int64, int, float64, bool:
		case string:
			size += len(x)
		case []byte:
			size += len(x)
		default:
			// What database/sql would convert it to (a named string
			// type, a smaller integer); a type it refuses is an error.
			v, err := driver.DefaultParameterConverter.ConvertValue(a)
			if err != nil {
				return 0, err
			}
			switch y := v.(type) {
			case string:
				size += len(y)
			case []byte:
				size += len(y)
			}
			args[i] = v
		}
	}
	if size > c.bufCap {
		if c.buf != 0 {
			libc.Xfree(c.tls, c.buf)
		}
		grown := max(size, 2*c.bufCap, 4096)
		c.buf, c.bufCap = libc.Xmalloc(c.tls, libc.Tsize_t(grown)), grown
		if c.buf == 0 {
			c.bufCap = 0
			return 0, errors.New("sqlite: out of memory")
		}
	}
	mem := unsafe.Slice((*byte)(unsafe.Pointer(c.buf)), c.bufCap)
	off := 0
	for i, a := range args {
		p := int32(i + 1)
		var rc int32
		switch x := a.(type) {
		case nil:
			rc = sqlite3.Xsqlite3_bind_null(c.tls, st, p)
		case string:
			// An empty string is text of length 0 at a valid pointer (a
			// null pointer would bind NULL).
			copy(mem[off:], x)
			rc = sqlite3.Xsqlite3_bind_text(c.tls, st, p, c.buf+uintptr(off), int32(len(x)), 0)
			off += len(x)
		case []byte:
			copy(mem[off:], x)
			rc = sqlite3.Xsqlite3_bind_blob(c.tls, st, p, c.buf+uintptr(off), int32(len(x)), 0)
			off += len(x)
		case int64:
			rc = sqlite3.Xsqlite3_bind_int64(c.tls, st, p, x)
		case int:
			rc = sqlite3.Xsqlite3_bind_int64(c.tls, st, p, int64(x))
		case float64:
			rc = sqlite3.Xsqlite3_bind_double(c.tls, st, p, x)
		case bool:
			v := int64(0)
			if x {
				v = 1
			}
			rc = sqlite3.Xsqlite3_bind_int64(c.tls, st, p, v)
		default:
			return 0, fmt.Errorf("sqlite: parameter %d: unsupported type %T", p, a)
		}
		if rc != sqlite3.SQLITE_OK {
			return 0, c.err(rc)
		}
	}
	rc := sqlite3.Xsqlite3_step(c.tls, st)
	for rc == sqlite3.SQLITE_ROW {
		rc = sqlite3.Xsqlite3_step(c.tls, st)
	}
	if rc != sqlite3.SQLITE_DONE {
		err = c.err(rc)
		sqlite3.Xsqlite3_reset(c.tls, st)
		return 0, err
	}
	n = int(sqlite3.Xsqlite3_changes(c.tls, c.db))
	sqlite3.Xsqlite3_reset(c.tls, st)
	return n, nil
}

// underCtx runs q (BEGIN, COMMIT) so that ctx ending interrupts it, as the
// driver does (sqlite3_interrupt from another goroutine, a TLS of its own).
func (c *rawConn) underCtx(ctx context.Context, q string) error {
	st, err := c.stmt(q)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan struct{})
	db := c.db
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		tls := libc.NewTLS()
		sqlite3.Xsqlite3_interrupt(tls, db)
		tls.Close()
	})
	_, err = c.run(st, nil)
	if !stop() {
		<-done
		if err != nil {
			return errors.Join(ctx.Err(), err)
		}
	}
	return err
}

// apply writes batch in one transaction on w's connection, opening it first
// if need be.
func (w *rawWriter) apply(ctx context.Context, batch []store.SpendLog, noRows, whole bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.busy.Store(true)
	defer w.busy.Store(false)
	if w.shut {
		return errors.New("sqlite: store closed")
	}
	if w.c == nil {
		c, err := openRaw(w.path)
		if err != nil {
			return err
		}
		w.c = c
	}
	c := w.c
	if err := c.underCtx(ctx, "BEGIN IMMEDIATE"); err != nil {
		if sqlite3.Xsqlite3_get_autocommit(c.tls, c.db) == 0 {
			return w.rollback(err)
		}
		return err
	}
	err := applySpend(&rawSpendTx{ctx: ctx, c: c, whole: whole}, batch, noRows)
	if err == nil {
		err = ctx.Err() // past the deadline after the last statement: not committed
	}
	if err == nil {
		err = c.underCtx(ctx, "COMMIT")
		if err == nil || sqlite3.Xsqlite3_get_autocommit(c.tls, c.db) != 0 {
			return err
		}
	}
	return w.rollback(err)
}

// rollback ends the failed transaction (err its cause); a connection that
// cannot is closed, and the next batch opens another.
func (w *rawWriter) rollback(err error) error {
	c := w.c
	if rbErr := c.execText("ROLLBACK"); rbErr != nil || sqlite3.Xsqlite3_get_autocommit(c.tls, c.db) == 0 {
		w.c = nil
		return errors.Join(err, rbErr, c.close())
	}
	return err
}

// close closes w's connection, if open; no batch runs after.
func (w *rawWriter) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.shut = true
	if w.c == nil {
		return nil
	}
	c := w.c
	w.c = nil
	return c.close()
}

// rawSpendTx is spendTx on a rawConn; ctx, the batch's, is checked before
// each statement.
type rawSpendTx struct {
	ctx   context.Context
	c     *rawConn
	whole bool // bind every column (DB.spendWhole)
}

func (t *rawSpendTx) insertRows(rows []store.SpendLog, inserted map[string]bool) error {
	c := t.c
	defer clear(c.row[:spendCols]) // hold no row's strings past the batch
	for i := range rows {
		if err := t.ctx.Err(); err != nil {
			return fmt.Errorf("insert spend logs: %w", err)
		}
		c.row = spendArgs(c.row[:0], &rows[i])
		var omit uint32
		if !t.whole {
			omit = omitShape(c.row)
		}
		st, omit, err := c.insertFor(omit)
		if err != nil {
			return fmt.Errorf("insert spend logs: %w", err)
		}
		if omit != 0 {
			kept := c.row[:0]
			for col, v := range c.row {
				if omit&(1<<col) == 0 {
					kept = append(kept, v)
				}
			}
			clear(c.row[len(kept):])
			c.row = kept
		}
		n, err := c.run(st, c.row)
		if err != nil {
			return fmt.Errorf("insert spend logs: %w", err)
		}
		if n == 1 {
			inserted[rows[i].RequestID] = true
		}
	}
	return nil
}

func (t *rawSpendTx) exec(q string, args ...any) error {
	if err := t.ctx.Err(); err != nil {
		return err
	}
	st, err := t.c.stmt(q)
	if err != nil {
		return err
	}
	_, err = t.c.run(st, args)
	return err
}
