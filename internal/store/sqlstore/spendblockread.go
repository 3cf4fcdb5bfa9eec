package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
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
//     started range and the Bloom filter the query needs) whose range
//     meets [From, To), newest
//     max_started first (index spend_blocks_started): B rows of under 50
//     bytes, or 1.3 kB with the id filter, 5.2 kB with the attribute
//     filter; never the data (about 100 kB a block of rows without
//     content).
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
// SQLite's one connection is held for one block at a time (its data is
// walked in the driver's buffer, sql.RawBytes), never for the listing: the
// spend writer waits for a block's walk at most. A block appended to
// meanwhile is read as it is when its data is read (its row count and
// range read again with it); like the count and page statements of
// spend_logs, the total and the page are not one snapshot.

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

// match reports whether the row v of a block's data is one the listing
// keeps.
func (q *spendQuery) match(data []byte, v *spendRowView) bool {
	f := &q.f
	switch {
	case q.hasFrom && v.started < q.from, q.hasTo && v.started >= q.to:
		return false
	case f.RequestID != "" && string(v.requestID.of(data)) != f.RequestID && string(v.responseID.of(data)) != f.RequestID:
		return false
	case f.KeyHash != "" && string(v.key.of(data)) != f.KeyHash,
		f.UserID != "" && string(v.user.of(data)) != f.UserID,
		f.TeamID != "" && string(v.team.of(data)) != f.TeamID,
		f.EndUser != "" && string(v.endUser.of(data)) != f.EndUser,
		f.ModelGroup != "" && string(v.model.of(data)) != f.ModelGroup:
		return false
	case q.status != nil && !q.status(v.status):
		return false
	case q.hasTag && !bytes.Contains(v.tags.of(data), q.tagIn[0]) && !bytes.Contains(v.tags.of(data), q.tagIn[1]):
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

// spendRowView is where a block row's fields a listing filters and
// orders on lie in the block's data (offsets: walking a block writes no
// pointers), and where the whole row lies, decoded in full only if the row
// is on the page.
type spendRowView struct {
	start, end                                                   int
	requestID, key, user, team, endUser, model, responseID, tags span
	status, started                                              int64
}

// span is data[lo:hi].
type span struct{ lo, hi int }

func (s span) of(data []byte) []byte { return data[s.lo:s.hi] }

// viewSpendRow reads the row at data[p:] (spendBlockFormat, as
// spendRowReader.next, failing where it fails) into v without copying:
// the offset after the row, or -1 when the row is malformed.
func viewSpendRow(data []byte, p int, v *spendRowView) int {
	v.start = p
	v.requestID, p = textAt(data, p)
	v.key, p = textAt(data, p)
	v.user, p = textAt(data, p)
	v.team, p = textAt(data, p)
	v.endUser, p = textAt(data, p)
	v.model, p = textAt(data, p)
	_, p = textAt(data, p)   // deployment
	_, p = textAt(data, p)   // provider
	_, p = varintAt(data, p) // prompt, completion and cached tokens
	_, p = varintAt(data, p)
	_, p = varintAt(data, p)
	p = skipAt(data, p, 8) // cost
	v.status, p = varintAt(data, p)
	_, p = varintAt(data, p) // latency
	v.started, p = varintAt(data, p)
	_, p = varintAt(data, p) // ended
	_, p = varintAt(data, p) // reported prompt and completion tokens
	_, p = varintAt(data, p)
	p = skipAt(data, p, 1) // flags
	v.responseID, p = textAt(data, p)
	_, p = textAt(data, p)      // call type
	v.tags, p = nullAt(data, p) // request_tags (empty: NULL)
	_, p = nullAt(data, p)      // metadata
	_, p = nullAt(data, p)      // messages
	_, p = nullAt(data, p)      // response
	_, p = textAt(data, p)      // cache key
	p = skipAt(data, p, 8)      // saved cost
	_, p = nullAt(data, p)      // guardrails
	_, p = nullAt(data, p)      // error information
	v.end = p
	return p
}

// The readers of viewSpendRow: each takes the offset to read at (-1: an
// earlier read failed, and so does this one) and returns the offset after
// what it read.

func uvarintAt(data []byte, p int) (uint64, int) {
	if p < 0 {
		return 0, -1
	}
	v, n := binary.Uvarint(data[p:])
	if n <= 0 {
		return 0, -1
	}
	return v, p + n
}

func varintAt(data []byte, p int) (int64, int) {
	if p < 0 {
		return 0, -1
	}
	v, n := binary.Varint(data[p:])
	if n <= 0 {
		return 0, -1
	}
	return v, p + n
}

func skipAt(data []byte, p, n int) int {
	if p < 0 || n > len(data)-p {
		return -1
	}
	return p + n
}

func bytesAt(data []byte, p int, n uint64) (span, int) {
	if p < 0 || n > uint64(len(data)-p) {
		return span{}, -1
	}
	return span{p, p + int(n)}, p + int(n)
}

func textAt(data []byte, p int) (span, int) {
	n, p := uvarintAt(data, p)
	return bytesAt(data, p, n)
}

func nullAt(data []byte, p int) (span, int) {
	n, p := uvarintAt(data, p)
	if n == 0 || p < 0 {
		return span{}, p
	}
	return bytesAt(data, p, n-1)
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

func (p *pageRows) offer(data []byte, v *spendRowView) {
	r := pageRow{started: v.started, id: v.requestID.of(data)}
	if p.full() && !r.before(&p.rows[len(p.rows)-1]) {
		return
	}
	// A copy: the block's data is the driver's, valid while it is read.
	r.raw = bytes.Clone(data[v.start:v.end])
	r.id = r.raw[v.requestID.lo-v.start : v.requestID.hi-v.start]
	// Rows come in about listing order (blocks newest first): the place
	// is usually the end, and no kept row moves.
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
			return nil, 0, fmt.Errorf("spend block row %q: %w", page.rows[i].id, orErr(d.err, errSpendBlock))
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

// orErr is err, or def when err is nil.
func orErr(err, def error) error {
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
	// The data is scanned as sql.RawBytes, the driver's copy of the blob,
	// not copied again by database/sql: it is valid until rs is closed,
	// and the rows kept for the page are copied out of it (offer).
	rs, err := s.db.QueryContext(ctx, `SELECT row_count, min_started, max_started, data FROM spend_blocks WHERE id = $1`, id)
	if err != nil {
		return 0, err
	}
	defer rs.Close()
	if !rs.Next() {
		return 0, rs.Err() // gone since its columns were read
	}
	var count int
	var minStarted, maxStarted int64
	var data sql.RawBytes
	if err := rs.Scan(&count, &minStarted, &maxStarted, &data); err != nil {
		return 0, err
	}
	var v spendRowView
	n, kept := 0, 0
	for p := 0; p < len(data); {
		if p = viewSpendRow(data, p, &v); p < 0 {
			return 0, fmt.Errorf("spend block %d: row %d: %w", id, n+1, errSpendBlock)
		}
		n++
		if v.started < minStarted || v.started > maxStarted {
			return 0, fmt.Errorf("spend block %d: row %d started at %d, outside the block's range [%d, %d]", id, n, v.started, minStarted, maxStarted)
		}
		if !q.match(data, &v) {
			continue
		}
		kept++
		if onPage {
			page.offer(data, &v)
		}
	}
	if n != count {
		return 0, fmt.Errorf("spend block %d: %d rows decoded, row_count %d: %w", id, n, count, errSpendBlock)
	}
	return kept, nil
}
