package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
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
	stmts map[string]driver.StmtExecContext // by text
	row   []any                             // a row's values (spendArgs), reused
	args  []driver.NamedValue               // a statement's parameters, reused
}

// sqliteSpendInsert is SQLite's single-row spend_logs INSERT. Its
// parameters are anonymous ("?"): the driver asks SQLite for each
// parameter's name before binding it, and a numbered one ("?7") costs a
// lookup in SQLite and a parse in the driver, 31 times a row. A multi-row
// INSERT is slower on SQLite: it is parsed anew for each batch and keeps a
// statement journal (BenchmarkApplySpend measured both).
var sqliteSpendInsert = spendInsert + "(" + strings.Repeat("?,", spendCols-1) + "?) ON CONFLICT (request_id) DO NOTHING"

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

// spendStatements returns the statements prepared on c, preparing them on
// first use.
func (c *sqliteConn) spendStatements(ctx context.Context) (*sqliteSpendStmts, error) {
	if c.spend != nil {
		return c.spend, nil
	}
	texts := []string{sqliteSpendInsert, endUserSpend, budgetSpend, dailyRollup, tagRollup}
	for _, q := range entitySpend {
		texts = append(texts, q)
	}
	sp := &sqliteSpendStmts{stmts: make(map[string]driver.StmtExecContext, len(texts))}
	for _, q := range texts {
		st, err := c.PrepareContext(ctx, q)
		if err != nil {
			sp.close()
			return nil, err
		}
		ex, ok := st.(driver.StmtExecContext)
		if !ok {
			st.Close()
			sp.close()
			return nil, fmt.Errorf("sqlite driver statement %T cannot execute with a context", st)
		}
		sp.stmts[q] = ex
	}
	sp.row = make([]any, 0, spendCols)
	sp.args = make([]driver.NamedValue, 0, spendCols)
	c.spend = sp
	return sp, nil
}

func (sp *sqliteSpendStmts) close() {
	for _, st := range sp.stmts {
		st.(driver.Stmt).Close()
	}
	sp.stmts = nil
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
		err = applySpend(&sqliteSpendTx{ctx: ctx, sp: sp}, batch, noRows)
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
	ctx context.Context
	sp  *sqliteSpendStmts
}

func (t *sqliteSpendTx) insertRows(rows []store.SpendLog, inserted map[string]bool) error {
	st := t.sp.stmts[sqliteSpendInsert]
	defer clear(t.sp.row[:spendCols]) // hold no row's strings past the batch
	for i := range rows {
		if err := t.ctx.Err(); err != nil {
			return fmt.Errorf("insert spend logs: %w", err)
		}
		t.sp.row = spendArgs(t.sp.row[:0], &rows[i])
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
	if err := t.ctx.Err(); err != nil {
		return err
	}
	st := t.sp.stmts[q]
	if st == nil {
		return fmt.Errorf("sqlite spend statement not prepared: %.40q", q)
	}
	_, err := t.run(st, args)
	return err
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
