package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"

	"github.com/tollgate/tollgate/internal/store"
)

// SQLite's ApplySpend runs below database/sql: its statements are prepared
// once on the store's one connection (sql.Conn.Raw) and executed by the
// driver directly, with one parameter slice reused from statement to
// statement. Two costs go with that, measured in docs/performance.md
// ("third pass", when a row was a statement of 31 parameters):
//
//   - database/sql's per-statement work (connection-statement lookup,
//     converting every argument, a result wrapper);
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
	conn  *sqliteConn
	stmts map[string]driver.StmtExecContext // by text
	args  []driver.NamedValue               // a statement's parameters, reused
}

// SQLite's spend rows go into spend_blocks (spendblock.go), not
// spend_logs: the rows of a batch are added to the open block (the newest,
// while not full), which is read, extended and written back, and to new
// blocks as each fills. A row costs the writer its encoding and its share
// of one blob instead of a B-tree entry in a table and in each of its
// indexes.
//
// The replay check (ApplySpend is idempotent: the spend writer runs a batch
// again after an error whose commit may have landed, and replays after a
// crash) looks for a batch's request ids in the blocks whose range of
// ended_at overlaps the batch's (spendBlockCandidates, served by
// spend_blocks_ended): a block whose id filter may hold an id is decoded,
// once, and its request ids compared exactly. It assumes that a row
// replayed has the ended_at it had when first written, which holds for the
// writer, which retries the very rows it tried: a row sent again under the
// same request id with another ended_at is found only if the block holding
// the first falls in the new batch's ended range, and written a second time
// (spend counted twice) otherwise. For a batch in the usual order the
// candidates are the open block and at most the one before it.
const (
	// spendBlockOpen is the newest block if it takes more rows.
	spendBlockOpen = `SELECT id, row_count, min_started, max_started, min_ended, max_ended, ids, attrs, summary, data FROM spend_blocks
	WHERE id = (SELECT max(id) FROM spend_blocks) AND format = 1 AND row_count < 512 AND length(data) < 1048576`
	// spendBlockCandidates are the blocks whose ended range overlaps
	// [?1, ?2], with their id filters.
	spendBlockCandidates = `SELECT id, ids FROM spend_blocks WHERE max_ended >= ? AND min_ended <= ?`
	spendBlockData       = `SELECT data FROM spend_blocks WHERE id = ?`
	spendBlockInsert     = `INSERT INTO spend_blocks (format, row_count, min_started, max_started, min_ended, max_ended, ids, attrs, summary, data)
	VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	spendBlockUpdate = `UPDATE spend_blocks SET row_count = ?, min_started = ?, max_started = ?, min_ended = ?, max_ended = ?,
	ids = ?, attrs = ?, summary = ?, data = ? WHERE id = ?`
)

func init() {
	// spendBlockOpen spells the format and the limits out (a literal lets
	// SQLite check them without a parameter).
	if spendBlockFormat != 1 || spendBlockRows != 512 || spendBlockBytes != 1048576 {
		panic("spendBlockOpen does not match spendblock.go's constants")
	}
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
	texts := []string{spendBlockOpen, spendBlockCandidates, spendBlockData, spendBlockInsert, spendBlockUpdate,
		endUserSpend, budgetSpend, keyBudgetSpend, memberBudgetSpend, dailyRollup, tagRollup}
	for _, q := range entitySpend {
		texts = append(texts, q)
	}
	sp := &sqliteSpendStmts{conn: c, stmts: make(map[string]driver.StmtExecContext, len(texts))}
	for _, q := range texts {
		ex, err := sp.prepare(ctx, q)
		if err != nil {
			sp.close()
			return nil, err
		}
		sp.stmts[q] = ex
	}
	sp.args = make([]driver.NamedValue, 0, 9)
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
		err = applySpend(&sqliteSpendTx{ctx: ctx, sp: sp}, batch, noRows, nil)
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

// insertRows adds rows, in order, to the open block and to new blocks as
// each fills, skipping a request id repeated in rows (the first is kept)
// and the rows already stored (storedIDs).
func (t *sqliteSpendTx) insertRows(rows []store.SpendLog, inserted map[string]bool) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := t.openBlock()
	if err != nil {
		return fmt.Errorf("insert spend logs: %w", err)
	}
	stored, err := t.storedIDs(rows, b)
	if err != nil {
		return fmt.Errorf("insert spend logs: %w", err)
	}
	if b == nil {
		b = newSpendBlock()
	}
	added := 0 // rows added to b
	for i := range rows {
		id := rows[i].RequestID
		if inserted[id] || stored[id] {
			continue
		}
		b.add(&rows[i])
		inserted[id] = true
		added++
		if b.full() {
			if err := t.writeBlock(b); err != nil {
				return fmt.Errorf("insert spend logs: %w", err)
			}
			b, added = newSpendBlock(), 0
		}
	}
	if added > 0 {
		if err := t.writeBlock(b); err != nil {
			return fmt.Errorf("insert spend logs: %w", err)
		}
	}
	return nil
}

// openBlock reads the open block: the newest, if it takes more rows (nil
// otherwise).
func (t *sqliteSpendTx) openBlock() (*spendBlock, error) {
	var b *spendBlock
	err := t.query(spendBlockOpen, nil, func(v []driver.Value) error {
		b = &spendBlock{}
		var ok [7]bool
		b.id, ok[0] = v[0].(int64)
		var rows int64
		rows, ok[1] = v[1].(int64)
		b.rows = int(rows)
		b.minStarted, ok[2] = v[2].(int64)
		b.maxStarted, ok[3] = v[3].(int64)
		b.minEnded, ok[4] = v[4].(int64)
		b.maxEnded, ok[5] = v[5].(int64)
		b.ids, _ = v[6].([]byte)
		b.attrs, _ = v[7].([]byte)
		sum, _ := v[8].([]byte)
		b.data, ok[6] = v[9].([]byte)
		if ok != [7]bool{true, true, true, true, true, true, true} || len(b.ids) != spendIDFilterBytes || len(b.attrs) != spendAttrFilterBytes ||
			!b.setSummary(sum) {
			b = nil // not what the writer writes: leave it, start another
		}
		return nil
	})
	return b, err
}

// storedIDs returns the request ids of rows that a block already holds:
// the blocks whose ended range overlaps rows' (open, read already, among
// them) whose id filter may hold one, each decoded once. See the comment
// on spendBlockCandidates for what it assumes of a replay.
func (t *sqliteSpendTx) storedIDs(rows []store.SpendLog, open *spendBlock) (map[string]bool, error) {
	lo, hi := micros(rows[0].EndedAt), micros(rows[0].EndedAt)
	for i := range rows[1:] {
		e := micros(rows[i+1].EndedAt)
		lo, hi = min(lo, e), max(hi, e)
	}
	type candidate struct {
		id  int64
		ids []byte
	}
	var cands []candidate
	err := t.query(spendBlockCandidates, []any{lo, hi}, func(v []driver.Value) error {
		id, _ := v[0].(int64)
		ids, _ := v[1].([]byte)
		cands = append(cands, candidate{id, ids})
		return nil
	})
	if err != nil {
		return nil, err
	}
	var stored map[string]bool
	var maybe map[string]bool // rows' ids a candidate's filter may hold
	for _, c := range cands {
		clear(maybe)
		for i := range rows {
			if id := rows[i].RequestID; filterHas(c.ids, 0, id) && !stored[id] {
				if maybe == nil {
					maybe = map[string]bool{}
				}
				maybe[id] = true
			}
		}
		if len(maybe) == 0 {
			continue
		}
		var data []byte
		if open != nil && c.id == open.id {
			data = open.data
		} else if err := t.query(spendBlockData, []any{c.id}, func(v []driver.Value) error {
			data, _ = v[0].([]byte)
			return nil
		}); err != nil {
			return nil, err
		}
		d := spendRowReader{data: data}
		for id, ok := d.nextRequestID(); ok; id, ok = d.nextRequestID() {
			if maybe[string(id)] {
				if stored == nil {
					stored = map[string]bool{}
				}
				stored[string(id)] = true
			}
		}
		if d.err != nil {
			return nil, fmt.Errorf("spend block %d: %w", c.id, d.err)
		}
	}
	return stored, nil
}

// writeBlock stores b: an UPDATE of the open block, an INSERT of a new one.
func (t *sqliteSpendTx) writeBlock(b *spendBlock) error {
	args := []any{int64(b.rows), b.minStarted, b.maxStarted, b.minEnded, b.maxEnded, b.ids, b.attrs, b.summaryBytes(), b.data}
	q := spendBlockInsert
	if b.id != 0 {
		q, args = spendBlockUpdate, append(args, b.id)
	}
	_, err := t.execResult(q, args)
	return err
}

// query runs q with args and calls fn with each row's values.
func (t *sqliteSpendTx) query(q string, args []any, fn func([]driver.Value) error) error {
	st, err := t.stmt(q)
	if err != nil {
		return err
	}
	qs, ok := st.(driver.StmtQueryContext)
	if !ok {
		return fmt.Errorf("sqlite driver statement %T cannot query with a context", st)
	}
	vals := t.sp.args[:0]
	for i, a := range args {
		v, err := driver.DefaultParameterConverter.ConvertValue(a)
		if err != nil {
			clear(vals)
			return err
		}
		vals = append(vals, driver.NamedValue{Ordinal: i + 1, Value: v})
	}
	t.sp.args = vals
	rows, err := qs.QueryContext(context.Background(), vals)
	clear(vals)
	if err != nil {
		return err
	}
	defer rows.Close()
	dest := make([]driver.Value, len(rows.Columns()))
	for {
		switch err := rows.Next(dest); {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		}
		if err := fn(dest); err != nil {
			return err
		}
	}
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
	var v any
	found := false
	err := t.query(q, []any{arg}, func(row []driver.Value) error {
		if !found {
			v, found = row[0], true
		}
		return nil
	})
	if err != nil || !found {
		return "", false, err
	}
	switch v := v.(type) {
	case string:
		return v, true, nil
	case []byte:
		return string(v), true, nil
	}
	return "", false, fmt.Errorf("sqlite lookup: %T is no text", v)
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

// nextRequestID returns the next row's request id, not copied (it is valid
// while the block's data is), skipping the rest of the row; false at the
// end or on a malformed row (err then says so). The replay check's
// decoding: no other field is read.
func (d *spendRowReader) nextRequestID() ([]byte, bool) {
	if len(d.data) == 0 || d.err != nil {
		return nil, false
	}
	n := d.uvarint()
	if n > uint64(len(d.data)) {
		d.fail()
		return nil, false
	}
	id := d.data[:n:n]
	d.data = d.data[n:]
	// The row's fields after request_id, in spendBlockFormat's order.
	const text, varint, float, flags, nullable = 't', 'v', 'f', 'b', 'n'
	for _, f := range "tttttttvvvfvvvvvvbttnnnntfnn" {
		switch f {
		case text:
			d.skip(d.uvarint())
		case varint:
			d.varint()
		case float:
			d.skip(8)
		case flags:
			d.skip(1)
		case nullable:
			if n := d.uvarint(); n > 0 {
				d.skip(n - 1)
			}
		}
	}
	return id, d.err == nil
}

// skip passes n bytes.
func (d *spendRowReader) skip(n uint64) {
	if n > uint64(len(d.data)) {
		d.fail()
		return
	}
	d.data = d.data[n:]
}
