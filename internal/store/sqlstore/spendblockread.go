package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/store"
)

// SQLite's ListSpendLogs reads the spend blocks (spendblock.go) with the
// semantics of the spend_logs statements PostgreSQL still runs
// (spendLogsQueries and the scan loop of ListSpendLogs): the same filters,
// the same order (started_at DESC, then request_id in byte order, SQLite's
// BINARY collation), the same page bounds, the exact total and the same
// content budget.
//
// Cost model, for B blocks (about rows / 512) of which C may hold what the
// filter asks for:
//
//   - One statement reads every block's small columns (id, row count,
//     started range and the Bloom filter the query needs: 128 bytes of ids
//     or 512 of attributes) whose range meets [From, To), newest
//     max_started first (index spend_blocks_started): B rows of under 600
//     bytes, never the data.
//   - A block whose filter says it cannot hold the call id, answer id, key,
//     user, team, end user, model group or tag asked for is skipped (about
//     1 % of those that do not hold it are read anyway).
//   - Unfiltered (no filter but the time bounds), the total is the sum of
//     the row counts of the blocks wholly inside [From, To), plus the rows
//     counted in the few blocks straddling a bound; the page decodes the
//     newest blocks until the next block's newest row is older than the
//     page's last row: a first page costs one or two blocks' data
//     whatever the log's size; page n costs about n pages' blocks.
//   - Filtered, the total needs every candidate block's rows: C blocks'
//     data read (one statement each) and walked row by row, only the
//     fields the filter compares looked at and nothing copied
//     (spendRowView); only the rows of the page are decoded in full.
//     A filter that many blocks hold (a key used all day) walks about the
//     whole log in its time range: a filtered listing costs like a count
//     over a table without an index on that column, which the listing's
//     time bounds narrow.
//
// No statement holds SQLite's one connection while rows are decoded: the
// spend writer waits for a block's read, not for the listing. A block
// appended to meanwhile is read as it is when its data is read (its row
// count and range read again with it); like the count and page statements
// of spend_logs, the total and the page are not one snapshot.

// spendQuery is a SpendFilter prepared for testing block rows.
type spendQuery struct {
	f           store.SpendFilter
	status      func(int64) bool // nil: any
	tagIn       [2][]byte        // `["tag"` and `,"tag"`: request_tags holds the tag exactly
	hasTag      bool
	from, to    int64
	hasFrom     bool
	hasTo       bool
	attrs       []spendAttr // the equality filters a block's attribute filter answers
	onlyTime    bool        // no filter but the time bounds
	limit, skip int
}

type spendAttr struct {
	kind byte
	v    string
}

func newSpendQuery(f store.SpendFilter) (*spendQuery, error) {
	q := &spendQuery{f: f}
	switch f.Status {
	case "":
	case "success":
		q.status = func(s int64) bool { return s > 0 && s < 400 }
	case "failure":
		q.status = func(s int64) bool { return s >= 400 || s == 0 }
	default:
		code, err := strconv.Atoi(f.Status)
		if err != nil {
			return nil, fmt.Errorf("spend filter: status %q is not success, failure or a number", f.Status)
		}
		q.status = func(s int64) bool { return s == int64(code) }
	}
	if f.Tag != "" {
		// As spendLogsQueries: the tag's JSON string after `[` or `,` in the
		// stored array text.
		quoted, _ := json.Marshal(f.Tag)
		q.tagIn = [2][]byte{append([]byte("["), quoted...), append([]byte(","), quoted...)}
		q.hasTag = true
		// The attribute filter holds the tags as given, the text their JSON:
		// an invalid UTF-8 sequence is written as \ufffd, so the text of
		// different tags may be the same. A tag of valid UTF-8 has a JSON
		// text no other tag has, and only then may the filter skip a block.
		if utf8.ValidString(f.Tag) {
			q.attrs = append(q.attrs, spendAttr{attrTag, f.Tag})
		}
	}
	for _, a := range []spendAttr{{attrKey, f.KeyHash}, {attrUser, f.UserID}, {attrTeam, f.TeamID}, {attrEndUser, f.EndUser}, {attrModel, f.ModelGroup}} {
		if a.v != "" {
			q.attrs = append(q.attrs, a)
		}
	}
	if !f.From.IsZero() {
		q.from, q.hasFrom = micros(f.From), true
	}
	if !f.To.IsZero() {
		q.to, q.hasTo = micros(f.To), true
	}
	q.onlyTime = f.RequestID == "" && f.KeyHash == "" && f.UserID == "" && f.TeamID == "" && f.EndUser == "" &&
		f.ModelGroup == "" && q.status == nil && !q.hasTag
	q.limit, q.skip = f.PageBounds()
	return q, nil
}

// match reports whether the row v is one the listing keeps.
func (q *spendQuery) match(v *spendRowView) bool {
	f := &q.f
	switch {
	case q.hasFrom && v.started < q.from, q.hasTo && v.started >= q.to:
		return false
	case f.RequestID != "" && string(v.requestID) != f.RequestID && string(v.responseID) != f.RequestID:
		return false
	case f.KeyHash != "" && string(v.key) != f.KeyHash,
		f.UserID != "" && string(v.user) != f.UserID,
		f.TeamID != "" && string(v.team) != f.TeamID,
		f.EndUser != "" && string(v.endUser) != f.EndUser,
		f.ModelGroup != "" && string(v.model) != f.ModelGroup:
		return false
	case q.status != nil && !q.status(v.status):
		return false
	case q.hasTag && !bytes.Contains(v.tags, q.tagIn[0]) && !bytes.Contains(v.tags, q.tagIn[1]):
		return false
	}
	return true
}

// mayHold reports whether block b's filters allow a row q keeps.
func (q *spendQuery) mayHold(b *spendBlock) bool {
	if q.f.RequestID != "" && !b.mayHoldID(q.f.RequestID) {
		return false
	}
	for _, a := range q.attrs {
		if !b.mayHoldAttr(a.kind, a.v) {
			return false
		}
	}
	return true
}

// inside reports whether every row of a block whose rows started in
// [minStarted, maxStarted] is in the query's time range.
func (q *spendQuery) inside(minStarted, maxStarted int64) bool {
	return (!q.hasFrom || minStarted >= q.from) && (!q.hasTo || maxStarted < q.to)
}

// spendRowView is a block row's fields a listing filters and orders on,
// sub-slices of the block's data (nothing copied), and the row's whole
// encoding (raw), decoded in full only if the row is on the page.
type spendRowView struct {
	raw                                                          []byte
	requestID, key, user, team, endUser, model, responseID, tags []byte
	status, started                                              int64
}

// view reads the next row into v without copying; false at the end or on
// a malformed row (d.err then says so).
func (d *spendRowReader) view(v *spendRowView) bool {
	if len(d.data) == 0 || d.err != nil {
		return false
	}
	start := d.data
	v.requestID = d.textView()
	v.key = d.textView()
	v.user = d.textView()
	v.team = d.textView()
	v.endUser = d.textView()
	v.model = d.textView()
	d.textView() // deployment
	d.textView() // provider
	d.varint()   // prompt, completion and cached tokens
	d.varint()
	d.varint()
	d.float() // cost
	v.status = d.varint()
	d.varint() // latency
	v.started = d.varint()
	d.varint() // ended
	d.varint() // reported prompt and completion tokens
	d.varint()
	d.byte() // flags
	v.responseID = d.textView()
	d.textView()          // call type
	v.tags = d.nullView() // request_tags (nil: NULL)
	for range 3 {         // metadata, messages, response
		d.nullView()
	}
	d.textView() // cache key
	d.float()    // saved cost
	d.nullView() // guardrails
	d.nullView() // error information
	if d.err != nil {
		return false
	}
	v.raw = start[:len(start)-len(d.data)]
	return true
}

func (d *spendRowReader) bytesView(n uint64) []byte {
	if n > uint64(len(d.data)) {
		d.fail()
		return nil
	}
	b := d.data[:n:n]
	d.data = d.data[n:]
	return b
}

func (d *spendRowReader) textView() []byte { return d.bytesView(d.uvarint()) }

func (d *spendRowReader) nullView() []byte {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return nil
	}
	return d.bytesView(n - 1)
}

// spendBlockMeta is a block's small columns.
type spendBlockMeta struct {
	spendBlock // id, rows, started range and the filter the query needs; no data
	format     int64
}

// pageRow is a row kept for the page: its order and its encoding.
type pageRow struct {
	started int64
	id      []byte
	raw     []byte
}

// before reports whether a comes before b in a listing: started_at DESC,
// request_id ascending in byte order.
func (a *pageRow) before(b *pageRow) bool {
	if a.started != b.started {
		return a.started > b.started
	}
	return bytes.Compare(a.id, b.id) < 0
}

// pageRows keeps the first k rows offered, in listing order.
type pageRows struct {
	k    int
	rows []pageRow
}

// full reports that the page holds k rows: a row after the last is not
// kept.
func (p *pageRows) full() bool { return len(p.rows) >= p.k }

func (p *pageRows) offer(v *spendRowView) {
	r := pageRow{started: v.started, id: v.requestID, raw: v.raw}
	if p.full() && !r.before(&p.rows[len(p.rows)-1]) {
		return
	}
	// Rows come in about listing order (blocks newest first): the search
	// usually ends at the last place.
	i, _ := slices.BinarySearchFunc(p.rows, &r, func(e pageRow, t *pageRow) int {
		if e.before(t) {
			return -1
		}
		return 1
	})
	if p.full() {
		p.rows = p.rows[:len(p.rows)-1]
	}
	p.rows = slices.Insert(p.rows, i, r)
}

// listSpendBlocks is SQLite's ListSpendLogs.
func (s *DB) listSpendBlocks(ctx context.Context, f store.SpendFilter) ([]store.SpendLog, int, error) {
	q, err := newSpendQuery(f)
	if err != nil {
		return nil, 0, err
	}
	metas, err := s.spendBlockMetas(ctx, q)
	if err != nil {
		return nil, 0, err
	}
	page := pageRows{k: q.skip + q.limit}
	total := 0
	for i := range metas {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		m := &metas[i]
		if !q.mayHold(&m.spendBlock) {
			continue
		}
		// Blocks come newest max_started first: once the page is full and
		// a block's newest row started before the page's last, none of its
		// rows (nor a later block's) is on the page.
		onPage := !page.full() || m.maxStarted >= page.rows[len(page.rows)-1].started
		if q.onlyTime && !onPage && q.inside(m.minStarted, m.maxStarted) {
			total += m.rows
			continue
		}
		n, err := s.walkSpendBlock(ctx, m.id, q, &page, onPage)
		if err != nil {
			return nil, 0, err
		}
		total += n
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	var out []store.SpendLog
	content := 0 // messages and response bytes returned so far
	for i := q.skip; i < len(page.rows); i++ {
		var row spendRow
		d := spendRowReader{data: page.rows[i].raw}
		if !d.next(&row) {
			return nil, 0, fmt.Errorf("spend block row %q: %w", page.rows[i].id, cmpErr(d.err, errSpendBlock))
		}
		omit := false
		if n := row.contentBytes(); f.ContentBytes > 0 && n > 0 && content+n > f.ContentBytes {
			omit = true // past the listing's content budget: the row without them
		} else {
			content += n
		}
		out = append(out, row.log(omit))
	}
	return out, total, nil
}

func cmpErr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// spendBlockMetas reads the small columns of the blocks whose started
// range meets q's time range, newest max_started first.
func (s *DB) spendBlockMetas(ctx context.Context, q *spendQuery) ([]spendBlockMeta, error) {
	cols := "id, format, row_count, min_started, max_started"
	needIDs, needAttrs := q.f.RequestID != "", len(q.attrs) > 0
	if needIDs {
		cols += ", ids"
	}
	if needAttrs {
		cols += ", attrs"
	}
	where, args := "", []any{}
	if q.hasFrom {
		args = append(args, q.from)
		where = " WHERE max_started >= $1"
	}
	if q.hasTo {
		args = append(args, q.to)
		if where == "" {
			where = " WHERE"
		} else {
			where += " AND"
		}
		where += fmt.Sprintf(" min_started < $%d", len(args))
	}
	rows, err := s.db.QueryContext(ctx, "SELECT "+cols+" FROM spend_blocks"+where+" ORDER BY max_started DESC, id DESC", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []spendBlockMeta
	for rows.Next() {
		var m spendBlockMeta
		dst := []any{&m.id, &m.format, &m.rows, &m.minStarted, &m.maxStarted}
		if needIDs {
			dst = append(dst, &m.ids)
		}
		if needAttrs {
			dst = append(dst, &m.attrs)
		}
		if err := rows.Scan(dst...); err != nil {
			return nil, err
		}
		if m.format != spendBlockFormat {
			return nil, fmt.Errorf("spend block %d: format %d, this version reads %d", m.id, m.format, spendBlockFormat)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// walkSpendBlock reads block id's data and walks its rows: it returns how
// many q keeps and, when onPage, offers them to page. A block that does
// not decode, or whose rows disagree with its row count or started range,
// is an error naming it.
func (s *DB) walkSpendBlock(ctx context.Context, id int64, q *spendQuery, page *pageRows, onPage bool) (int, error) {
	var count int
	var minStarted, maxStarted int64
	var data []byte
	switch err := s.db.QueryRowContext(ctx, `SELECT row_count, min_started, max_started, data FROM spend_blocks WHERE id = $1`, id).
		Scan(&count, &minStarted, &maxStarted, &data); {
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil // gone since its columns were read
	case err != nil:
		return 0, err
	}
	d := spendRowReader{data: data}
	var v spendRowView
	n, kept := 0, 0
	for d.view(&v) {
		n++
		if v.started < minStarted || v.started > maxStarted {
			return 0, fmt.Errorf("spend block %d: row %d started at %d, outside the block's range [%d, %d]", id, n, v.started, minStarted, maxStarted)
		}
		if !q.match(&v) {
			continue
		}
		kept++
		if onPage {
			page.offer(&v)
		}
	}
	if d.err != nil {
		return 0, fmt.Errorf("spend block %d: row %d: %w", id, n+1, d.err)
	}
	if n != count {
		return 0, fmt.Errorf("spend block %d: %d rows decoded, row_count %d: %w", id, n, count, errSpendBlock)
	}
	return kept, nil
}
