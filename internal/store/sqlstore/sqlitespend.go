package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/tollgate/tollgate/internal/store"
)

// SQLite's ApplySpend runs below database/sql: its statements are prepared
// once on the store's one connection (sql.Conn.Raw) and executed by the
// driver directly, with parameter slices reused from row to row. Two
// costs go with that, measured in docs/performance.md ("third pass"):
//
//   - database/sql's per-statement work (connection-statement lookup,
//     converting every argument, a result wrapper) for 31 parameters a
//     row;
//   - modernc.org/sqlite starts a goroutine and a progress handler for
//     every statement executed with a context that can end. The batch's
//     statements are executed without one; the batch's context is
//     checked between statements instead, and before the COMMIT, so a
//     batch past its deadline still fails and rolls back. BEGIN and COMMIT,
//     the two steps that can wait for a lock, still run under the batch's
//     context (one watcher each).

// sqliteSpendStmts are ApplySpend's statements prepared on one
// sqliteConn.
type sqliteSpendStmts struct {
	conn   *sqliteConn
	stmts  map[string]driver.StmtExecContext // by text
	shapes map[uint32]driver.StmtExecContext // the row INSERTs, by omitted columns (omitShape)
	row    []any                             // a row's values (spendArgs), reused
	args   []driver.NamedValue               // a statement's parameters, reused
}

// sqliteSpendInsert is SQLite's single-row spend_logs INSERT with every
// column. Its parameters are anonymous ("?"): the driver asks SQLite for
// each parameter's name before binding it, and a numbered one ("?7") costs
// a lookup in SQLite and a parse in the driver, 31 times a row. A
// multi-row INSERT, even prepared once, is slower on SQLite (measured in
// docs/performance.md, branch writer: among other things the answer-id
// index's expression makes SQLite keep a statement journal for any
// statement that writes several rows).
var sqliteSpendInsert = sqliteSpendInsertOf(0)

// spendColumns are spend_logs' columns in spendInsert's (and spendArgs')
// order.
var spendColumns = func() []string {
	list := spendInsert[strings.Index(spendInsert, "(")+1 : strings.Index(spendInsert, ")")]
	cols := strings.Split(list, ",")
	for i, c := range cols {
		cols[i] = strings.TrimSpace(c)
	}
	if len(cols) != spendCols {
		panic(fmt.Sprintf("spendInsert names %d columns, want %d", len(cols), spendCols))
	}
	return cols
}()

// spendDefaulted is the set of columns (bit i: spendColumns[i]) whose
// default in the schema is the value spendArgs binds for a zero field:
// the empty string for the TEXT NOT NULL columns whose default is empty,
// 0 for the numeric NOT NULL DEFAULT 0 ones, NULL for the nullable JSON
// ones (no default). Every column but request_id, started_at and ended_at
// (NOT NULL, no default).
// TestSpendRowsOmittingDefaults compares every column's stored value and
// type both ways.
const spendDefaulted = (1<<spendCols - 1) &^ (1<<0 | 1<<14 | 1<<15)

// sqliteSpendShapes bounds the INSERTs prepared per connection, one per
// set of omitted columns seen; past it a row is written with every column.
// The gateway's rows come in a few shapes (keyless or keyed, answered or
// failed, tagged, cached).
const sqliteSpendShapes = 64

// sqliteSpendInsertOf is the INSERT of the columns not in omit: the omitted
// ones take their default, which for a column in spendDefaulted is what
// spendArgs would bind for it when omitShape left it out.
func sqliteSpendInsertOf(omit uint32) string {
	var cols []string
	for i, c := range spendColumns {
		if omit&(1<<i) == 0 {
			cols = append(cols, c)
		}
	}
	return "INSERT INTO spend_logs (" + strings.Join(cols, ", ") + ") VALUES (" +
		strings.Repeat("?,", len(cols)-1) + "?) ON CONFLICT (request_id) DO NOTHING"
}

// omitShape is the set of row's values (spendArgs) that its column's
// default stores as they are: the columns in spendDefaulted holding "", an
// integer 0, a float64 +0 or nil. Binding fewer parameters is most of
// what a row costs the driver (a call into SQLite under its mutex each,
// a C copy of each string) and SQLite a register load each.
func omitShape(row []any) uint32 {
	var omit uint32
	for i, v := range row {
		if spendDefaulted&(1<<i) == 0 {
			continue
		}
		var zero bool
		switch x := v.(type) {
		case nil:
			zero = true
		case string:
			zero = x == ""
		case int64:
			zero = x == 0
		case int:
			zero = x == 0
		case float64:
			zero = x == 0 && !math.Signbit(x)
		}
		if zero {
			omit |= 1 << i
		}
	}
	return omit
}

// sqliteDriverConn is what the store uses of modernc's connection.
type sqliteDriverConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// sqliteConnector opens the store's SQLite connections as sqliteConns.
type sqliteConnector struct{ driver.Connector }

func (c sqliteConnector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	inner, ok := dc.(sqliteDriverConn)
	if !ok {
		dc.Close()
		return nil, fmt.Errorf("sqlite driver connection %T lacks a context method", dc)
	}
	return &sqliteConn{sqliteDriverConn: inner}, nil
}

// sqliteConn is modernc's connection carrying ApplySpend's statements,
// which database/sql does not know of: they are prepared on the connection
// on its first batch and finalized when database/sql closes it (DB.Close,
// or a connection it drops after ErrBadConn or an interrupted statement).
// Left open, they would keep the closed connection alive as a zombie
// (sqlite3_close_v2) holding the database, WAL and shm files. spend is
// only touched with the connection held (Raw) or by Close, which
// database/sql serializes.
type sqliteConn struct {
	sqliteDriverConn
	spend *sqliteSpendStmts
}

func (c *sqliteConn) Close() error {
	if c.spend != nil {
		c.spend.close()
		c.spend = nil
	}
	return c.sqliteDriverConn.Close()
}

// lazySpendStatements are the spend statements prepared only when a batch
// first needs them: the lookup of a regenerated key's replacement, which
// only spend naming a hash without a keys row runs.
var lazySpendStatements = map[string]bool{keyReplacement: true}

// spendStatements returns the statements prepared on c, preparing them on
// first use.
func (c *sqliteConn) spendStatements(ctx context.Context) (*sqliteSpendStmts, error) {
	if c.spend != nil {
		return c.spend, nil
	}
	texts := []string{sqliteSpendInsert, endUserSpend, budgetSpend, keyBudgetSpend, memberBudgetSpend, dailyRollup, tagRollup}
	for _, q := range entitySpend {
		texts = append(texts, q)
	}
	sp := &sqliteSpendStmts{conn: c, stmts: make(map[string]driver.StmtExecContext, len(texts)),
		shapes: make(map[uint32]driver.StmtExecContext)}
	for _, q := range texts {
		ex, err := sp.prepare(ctx, q)
		if err != nil {
			sp.close()
			return nil, err
		}
		sp.stmts[q] = ex
	}
	sp.shapes[0] = sp.stmts[sqliteSpendInsert]
	sp.row = make([]any, 0, spendCols)
	sp.args = make([]driver.NamedValue, 0, spendCols)
	c.spend = sp
	return sp, nil
}

// prepare prepares q on sp's connection.
func (sp *sqliteSpendStmts) prepare(ctx context.Context, q string) (driver.StmtExecContext, error) {
	st, err := sp.conn.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	ex, ok := st.(driver.StmtExecContext)
	if !ok {
		st.Close()
		return nil, fmt.Errorf("sqlite driver statement %T cannot execute with a context", st)
	}
	return ex, nil
}

// insertFor returns the row INSERT omitting the columns in omit, preparing
// it on first use, or the one of every column once sqliteSpendShapes are
// prepared (omit 0 then).
func (sp *sqliteSpendStmts) insertFor(ctx context.Context, omit uint32) (driver.StmtExecContext, uint32, error) {
	if st := sp.shapes[omit]; st != nil {
		return st, omit, nil
	}
	if len(sp.shapes) >= sqliteSpendShapes {
		return sp.shapes[0], 0, nil
	}
	st, err := sp.prepare(ctx, sqliteSpendInsertOf(omit))
	if err != nil {
		return nil, 0, err
	}
	sp.shapes[omit] = st
	return st, omit, nil
}

func (sp *sqliteSpendStmts) close() {
	for _, st := range sp.stmts {
		st.(driver.Stmt).Close()
	}
	for omit, st := range sp.shapes {
		if omit != 0 { // shapes[0] is in stmts
			st.(driver.Stmt).Close()
		}
	}
	sp.stmts, sp.shapes = nil, nil
}

// applySpendSQLite writes batch in one transaction on SQLite's connection.
func (s *DB) applySpendSQLite(ctx context.Context, batch []store.SpendLog, noRows bool) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(c any) error {
		dc, ok := c.(*sqliteConn)
		if !ok {
			return fmt.Errorf("sqlite driver connection %T is not the store's", c)
		}
		sp, err := dc.spendStatements(ctx)
		if err != nil {
			return fmt.Errorf("insert spend logs: %w", err)
		}
		// BEGIN (IMMEDIATE: _txlock) and, through the driver's Tx, COMMIT run
		// under ctx: a wait for the write lock ends with it.
		tx, err := dc.BeginTx(ctx, driver.TxOptions{})
		if err != nil {
			return err
		}
		err = applySpend(&sqliteSpendTx{ctx: ctx, sp: sp, whole: s.spendWhole}, batch, noRows, nil)
		if err == nil {
			err = ctx.Err() // past the deadline after the last statement: not committed
		}
		if err != nil {
			if rbErr := tx.Rollback(); rbErr != nil {
				// Still inside the transaction: database/sql must not reuse
				// the connection (ErrBadConn makes Raw's release close it).
				return errors.Join(err, rbErr, driver.ErrBadConn)
			}
			return err
		}
		return tx.Commit()
	})
}

// sqliteSpendTx is SQLite's spendTx. Its statements run with a context
// that cannot end (no watcher goroutine in the driver); ctx, the batch's,
// is checked before each.
type sqliteSpendTx struct {
	ctx   context.Context
	sp    *sqliteSpendStmts
	whole bool // bind every column (DB.spendWhole)
}

func (t *sqliteSpendTx) insertRows(rows []store.SpendLog, inserted map[string]bool) error {
	defer clear(t.sp.row[:spendCols]) // hold no row's strings past the batch
	for i := range rows {
		if err := t.ctx.Err(); err != nil {
			return fmt.Errorf("insert spend logs: %w", err)
		}
		t.sp.row = spendArgs(t.sp.row[:0], &rows[i])
		var omit uint32
		if !t.whole {
			omit = omitShape(t.sp.row)
		}
		st, omit, err := t.sp.insertFor(t.ctx, omit)
		if err != nil {
			return fmt.Errorf("insert spend logs: %w", err)
		}
		if omit != 0 {
			// The row's values without the omitted ones, in place.
			kept := t.sp.row[:0]
			for c, v := range t.sp.row {
				if omit&(1<<c) == 0 {
					kept = append(kept, v)
				}
			}
			clear(t.sp.row[len(kept):])
			t.sp.row = kept
		}
		res, err := t.run(st, t.sp.row)
		if err != nil {
			return fmt.Errorf("insert spend logs: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			inserted[rows[i].RequestID] = true
		}
	}
	return nil
}

func (t *sqliteSpendTx) exec(q string, args ...any) error {
	_, err := t.execResult(q, args)
	return err
}

func (t *sqliteSpendTx) execN(q string, args ...any) (int64, error) {
	res, err := t.execResult(q, args)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *sqliteSpendTx) execResult(q string, args []any) (driver.Result, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return t.run(st, args)
}

// stmt is q's statement on the connection, prepared now if it is one of
// lazySpendStatements not yet prepared.
func (t *sqliteSpendTx) stmt(q string) (driver.StmtExecContext, error) {
	if err := t.ctx.Err(); err != nil {
		return nil, err
	}
	st := t.sp.stmts[q]
	if st == nil {
		if !lazySpendStatements[q] {
			return nil, fmt.Errorf("sqlite spend statement not prepared: %.40q", q)
		}
		var err error
		if st, err = t.sp.prepare(t.ctx, q); err != nil {
			return nil, err
		}
		t.sp.stmts[q] = st
	}
	return st, nil
}

func (t *sqliteSpendTx) lookup(q string, arg any) (string, bool, error) {
	st, err := t.stmt(q)
	if err != nil {
		return "", false, err
	}
	qs, ok := st.(driver.StmtQueryContext)
	if !ok {
		return "", false, fmt.Errorf("sqlite driver statement %T cannot query with a context", st)
	}
	v, err := driver.DefaultParameterConverter.ConvertValue(arg)
	if err != nil {
		return "", false, err
	}
	rows, err := qs.QueryContext(context.Background(), []driver.NamedValue{{Ordinal: 1, Value: v}})
	if err != nil {
		return "", false, err
	}
	defer rows.Close()
	dest := make([]driver.Value, len(rows.Columns()))
	switch err := rows.Next(dest); {
	case errors.Is(err, io.EOF):
		return "", false, nil
	case err != nil:
		return "", false, err
	}
	switch v := dest[0].(type) {
	case string:
		return v, true, nil
	case []byte:
		return string(v), true, nil
	}
	return "", false, fmt.Errorf("sqlite lookup: %T is no text", dest[0])
}

// run executes st with args, converted as database/sql converts them
// (the driver's value types pass as they are), in the reused parameter
// slice, with a context that cannot end.
func (t *sqliteSpendTx) run(st driver.StmtExecContext, args []any) (driver.Result, error) {
	vals := t.sp.args[:0]
	for i, a := range args {
		v, err := driver.DefaultParameterConverter.ConvertValue(a)
		if err != nil {
			clear(vals)
			return nil, err
		}
		vals = append(vals, driver.NamedValue{Ordinal: i + 1, Value: v})
	}
	t.sp.args = vals
	res, err := st.ExecContext(context.Background(), vals)
	clear(vals) // hold no value past the statement
	return res, err
}
