package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

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

	// The open block as the last committed batch left it (open, nil if
	// the newest block takes no more rows or there is none) and its
	// rows' request ids, exact; openKnown says they are current. A batch
	// starts from them instead of reading the block back and, for the
	// open block, checks replays against openIDs instead of its filter
	// and decoding its rows. They stay current because this connection is
	// the only writer of spend_blocks once the store is open (one
	// connection; the move of old spend_logs rows runs before any batch):
	// a batch clears openKnown when it starts and sets it again only once
	// its COMMIT succeeded, so a batch that failed or rolled back leaves
	// the next to read the block. Should another connection write the
	// database nonetheless (a second process on the same file, the sqlite3
	// shell), its commit changes PRAGMA data_version, dataVersion no longer
	// matches, and the block is read again rather than its rows
	// overwritten with the cached copy. Any code of this process that
	// writes spend_blocks after open must drop the cache.
	open        *spendBlock
	openIDs     map[string]struct{}
	openKnown   bool
	dataVersion int64 // as the batch that cached open saw it
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
// spend_blocks_ended): a block whose id filter may hold the id of a row
// that ended within the block's range is decoded, once, and its request ids
// compared exactly (a row is not tested against the blocks whose range
// does not hold its ended_at: one late row would otherwise make every
// block since it decoded on a filter's false positive for the others). It
// assumes that a row replayed has the ended_at it had when first written,
// which holds for the writer, which retries the very rows it tried: a row
// sent again under the same request id with another ended_at is found only
// if the range of the block holding the first holds it, and written a
// second time (spend counted twice) otherwise. For a batch in the usual order the
// candidates are the open block and at most the one before it.
const (
	// spendBlockOpen is the newest block if it takes more rows.
	spendBlockOpen = `SELECT id, row_count, min_started, max_started, min_ended, max_ended, ids, attrs, summary, data FROM spend_blocks
	WHERE id = (SELECT max(id) FROM spend_blocks) AND format = 1 AND row_count < 512 AND length(data) < 1048576`
	// spendBlockCandidates are the blocks whose ended range overlaps
	// [?1, ?2], with their ranges and id filters.
	spendBlockCandidates = `SELECT id, min_ended, max_ended, ids FROM spend_blocks WHERE max_ended >= ? AND min_ended <= ?`
	spendBlockData       = `SELECT data FROM spend_blocks WHERE id = ?`
	spendDataVersion     = `PRAGMA data_version`
	spendBlockInsert     = `INSERT INTO spend_blocks (format, row_count, min_started, max_started, min_ended, max_ended, ids, attrs, summary, data)
	VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	spendBlockUpdate = `UPDATE spend_blocks SET row_count = ?, min_started = ?, max_started = ?, min_ended = ?, max_ended = ?,
	ids = ?, attrs = ?, summary = ?, data = ? WHERE id = ?`
)

// spendReplayDecodes counts the blocks the replay check decoded (tests).
var spendReplayDecodes atomic.Int64

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
	texts := []string{spendBlockOpen, spendBlockCandidates, spendBlockData, spendDataVersion, spendBlockInsert, spendBlockUpdate,
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
		t := &sqliteSpendTx{ctx: ctx, sp: sp, open: sp.open, openIDs: sp.openIDs, openKnown: sp.openKnown, dataVersion: sp.dataVersion}
		// The cached open block is the batch's to extend: current again
		// only after the COMMIT.
		sp.open, sp.openIDs, sp.openKnown = nil, nil, false
		err = applySpend(t, batch, noRows, nil)
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
		if err := tx.Commit(); err != nil {
			return err
		}
		sp.open, sp.openIDs, sp.openKnown, sp.dataVersion = t.open, t.openIDs, t.openKnown, t.dataVersion
		return nil
	})
}

// sqliteSpendTx is SQLite's spendTx. Its statements run with a context
// that cannot end (no watcher goroutine in the driver); ctx, the batch's,
// is checked before each.
type sqliteSpendTx struct {
	ctx context.Context
	sp  *sqliteSpendStmts
	// The open block and its request ids (sqliteSpendStmts), as this
	// batch leaves them; openKnown false until read or if unknown.
	open        *spendBlock
	openIDs     map[string]struct{}
	openKnown   bool
	dataVersion int64
}

// insertRows adds rows, in order, to the open block and to new blocks as
// each fills, skipping a request id repeated in rows (the first is kept)
// and the rows already stored (storedIDs).
func (t *sqliteSpendTx) insertRows(rows []store.SpendLog, inserted map[string]bool) error {
	if len(rows) == 0 {
		return nil
	}
	// Inside the transaction (BEGIN IMMEDIATE: no other writer until it
	// ends), so no commit of another connection comes after the check.
	dv, err := t.dataVersionNow()
	if err != nil {
		return fmt.Errorf("insert spend logs: %w", err)
	}
	if dv != t.dataVersion {
		t.openKnown, t.dataVersion = false, dv
	}
	if !t.openKnown {
		b, err := t.openBlock()
		if err != nil {
			return fmt.Errorf("insert spend logs: %w", err)
		}
		t.open, t.openIDs, t.openKnown = b, nil, true
		if b != nil {
			if t.openIDs, err = blockRequestIDs(b); err != nil {
				// Not what the writer writes: leave it, start another (the
				// replay check still looks at it, as at any closed block).
				t.open, t.openIDs = nil, nil
			}
		}
	}
	b, ids := t.open, t.openIDs
	stored, err := t.storedIDs(rows, b, ids)
	if err != nil {
		return fmt.Errorf("insert spend logs: %w", err)
	}
	// From here the open block changes; on an error the batch rolls back
	// and the caller drops what t holds.
	t.openKnown = false
	if b == nil {
		b, ids = newSpendBlock(), make(map[string]struct{}, spendBlockRows)
	}
	added := 0 // rows added to b
	for i := range rows {
		id := rows[i].RequestID
		if inserted[id] || stored[id] {
			continue
		}
		b.add(&rows[i])
		ids[id] = struct{}{}
		inserted[id] = true
		added++
		if b.full() {
			if err := t.writeBlock(b); err != nil {
				return fmt.Errorf("insert spend logs: %w", err)
			}
			// b is stored (the driver copied its blobs): its buffers and id
			// set serve the next block.
			b.reset()
			clear(ids)
			added = 0
		}
	}
	if added > 0 {
		if err := t.writeBlock(b); err != nil {
			return fmt.Errorf("insert spend logs: %w", err)
		}
	}
	t.open, t.openIDs, t.openKnown = b, ids, true
	if b.id == 0 {
		t.open, t.openIDs = nil, nil // empty, not stored: no open block
	}
	return nil
}

// dataVersionNow is PRAGMA data_version: it changes when another
// connection commits, not when this one does.
func (t *sqliteSpendTx) dataVersionNow() (int64, error) {
	var dv int64
	found := false
	err := t.query(spendDataVersion, nil, func(v []driver.Value) error {
		dv, found = v[0].(int64)
		return nil
	})
	if err == nil && !found {
		err = errors.New("PRAGMA data_version: no integer")
	}
	return dv, err
}

// blockRequestIDs is the set of b's rows' request ids.
func blockRequestIDs(b *spendBlock) (map[string]struct{}, error) {
	ids := make(map[string]struct{}, b.rows)
	d := spendRowReader{data: b.data}
	for id, ok := d.nextRequestID(); ok; id, ok = d.nextRequestID() {
		ids[string(id)] = struct{}{}
	}
	return ids, d.err
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
// the blocks whose ended range overlaps rows' whose id filter may hold
// one, each decoded once; the open block (nil if none), among them, is
// checked against its exact set of request ids, openIDs. See the comment
// on spendBlockCandidates for what it assumes of a replay.
func (t *sqliteSpendTx) storedIDs(rows []store.SpendLog, open *spendBlock, openIDs map[string]struct{}) (map[string]bool, error) {
	lo, hi := micros(rows[0].EndedAt), micros(rows[0].EndedAt)
	for i := range rows[1:] {
		e := micros(rows[i+1].EndedAt)
		lo, hi = min(lo, e), max(hi, e)
	}
	type candidate struct {
		id, lo, hi int64 // hi, lo: its ended range
		ids        []byte
	}
	var cands []candidate
	err := t.query(spendBlockCandidates, []any{lo, hi}, func(v []driver.Value) error {
		id, _ := v[0].(int64)
		lo, _ := v[1].(int64)
		hi, _ := v[2].(int64)
		ids, _ := v[3].([]byte)
		cands = append(cands, candidate{id, lo, hi, ids})
		return nil
	})
	if err != nil {
		return nil, err
	}
	var stored map[string]bool
	var maybe map[string]bool // rows' ids a candidate's filter may hold
	for _, c := range cands {
		if open != nil && c.id == open.id {
			for i := range rows {
				if id := rows[i].RequestID; !stored[id] {
					if _, ok := openIDs[id]; ok {
						if stored == nil {
							stored = map[string]bool{}
						}
						stored[id] = true
					}
				}
			}
			continue
		}
		clear(maybe)
		for i := range rows {
			// Only the rows that ended within c's range can be in c: the
			// others' false positives in its filter would decode it for
			// nothing (a batch's range may span many blocks).
			if e := micros(rows[i].EndedAt); e < c.lo || e > c.hi {
				continue
			}
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
		if err := t.query(spendBlockData, []any{c.id}, func(v []driver.Value) error {
			data, _ = v[0].([]byte)
			return nil
		}); err != nil {
			return nil, err
		}
		spendReplayDecodes.Add(1)
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

// writeBlock stores b: an UPDATE of the open block, an INSERT of a new one
// (b.id is then its id).
func (t *sqliteSpendTx) writeBlock(b *spendBlock) error {
	args := []any{int64(b.rows), b.minStarted, b.maxStarted, b.minEnded, b.maxEnded, b.ids, b.attrs, b.summaryBytes(), b.data}
	if b.id != 0 {
		_, err := t.execResult(spendBlockUpdate, append(args, b.id))
		return err
	}
	res, err := t.execResult(spendBlockInsert, args)
	if err != nil {
		return err
	}
	b.id, err = res.LastInsertId()
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
