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
//     max_started first (index spend_blocks_started, which holds the
//     range and the row count: no table row read): B rows of under 50
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
//   - Filtered by key, user, team, end user, model group or status (and
//     time), not by call id or tag: every block's summary in the range is
//     read (about 12 bytes a row, spendblock.go; 64 blocks a statement)
//     and walked, which gives the exact total and the started_at of the
//     page's last row; then only the blocks holding a matching row at or
//     after it are decoded for the page (listSpendSummaries). A key used
//     all day still costs a walk of the whole range's summaries: about
//     1/15 of its data.
//   - Filtered by call id, answer id or tag, the total needs every
//     candidate block's rows: C blocks' data read (one statement each)
//     and walked row by row, only the fields the filter compares looked
//     at and nothing copied (spendRowView); only the rows of the page are
//     decoded in full.
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
	bySummary   bool        // filtered by no more than the summaries hold (spendblock.go)
	want        [spendSummaryDicts]string
	wanted      [spendSummaryDicts]bool
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
	q.bySummary = !q.onlyTime && f.RequestID == "" && !q.hasTag
	for i, v := range [spendSummaryDicts]string{f.KeyHash, f.UserID, f.TeamID, f.EndUser, f.ModelGroup} {
		q.want[i], q.wanted[i] = v, v != ""
	}
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
	if q.bySummary {
		return s.listSpendSummaries(ctx, q)
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
	out, err := q.pageLogs(&page)
	return out, total, err
}

// pageLogs decodes the page's rows after those skipped, within the
// listing's content budget.
func (q *spendQuery) pageLogs(page *pageRows) ([]store.SpendLog, error) {
	f := &q.f
	var out []store.SpendLog
	content := 0 // messages and response bytes returned so far
	for i := q.skip; i < len(page.rows); i++ {
		var row spendRow
		d := spendRowReader{data: page.rows[i].raw}
		if !d.next(&row) {
			return nil, fmt.Errorf("spend block row %q: %w", page.rows[i].id, orErr(d.err, errSpendBlock))
		}
		omit := false
		if n := row.contentBytes(); f.ContentBytes > 0 && n > 0 && content+n > f.ContentBytes {
			omit = true // past the listing's content budget: the row without them
		} else {
			content += n
		}
		out = append(out, row.log(omit))
	}
	return out, nil
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
	needIDs, needAttrs := q.f.RequestID != "", len(q.attrs) > 0 && !q.bySummary
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

// A listing filtered by no more than key, user, team, end user, model
// group, status and time (bySummary) reads the blocks' summaries, not
// their data: each row's match, the total and the started_at of the
// page's last row (the k-th newest match, k = skip + limit) come from the
// summaries alone; then only the blocks holding a match that started at or
// after that row are decoded (walkSpendBlock), which finds the page among
// their rows with the request ids (rows tied on started_at at the page's
// edge are all in them). A block's summary is about 10 bytes a row
// (spendblock.go), a block's data about 200 bytes a row without content.

// spendSummaryBatch is how many blocks' summaries one statement reads: the
// store's one connection is held for one statement at a time.
const spendSummaryBatch = 64

// summaryCount is what a block's summary says of the listing's rows: how
// many it keeps and the newest started_at among them.
type summaryCount struct {
	n        int
	maxMatch int64
}

func (s *DB) listSpendSummaries(ctx context.Context, q *spendQuery) ([]store.SpendLog, int, error) {
	metas, err := s.spendBlockMetas(ctx, q)
	if err != nil {
		return nil, 0, err
	}
	counts := make([]summaryCount, len(metas))
	top := startedTop{k: q.skip + q.limit}
	at := make(map[int64]int, spendSummaryBatch) // block id: index in metas
	var view spendSummaryView
	for lo := 0; lo < len(metas); lo += spendSummaryBatch {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		hi := min(lo+spendSummaryBatch, len(metas))
		clear(at)
		args := make([]any, 0, hi-lo)
		marks := make([]byte, 0, 2*(hi-lo))
		for i := lo; i < hi; i++ {
			at[metas[i].id] = i
			args = append(args, metas[i].id)
			marks = append(marks, ",?"...)
		}
		if err := s.readSummaries(ctx, string(marks[1:]), args, func(id int64, rows int, minStarted, maxStarted int64, sum []byte) error {
			i, ok := at[id]
			if !ok {
				return nil
			}
			c, err := q.countSummary(id, rows, minStarted, maxStarted, sum, &view, &top)
			counts[i] = c
			return err
		}); err != nil {
			return nil, 0, err
		}
	}
	page := pageRows{k: q.skip + q.limit}
	total := 0
	for i := range metas {
		c := counts[i]
		if c.n == 0 {
			continue
		}
		if top.full() && c.maxMatch < top.min() {
			total += c.n
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		// The block's data as it is now: a block appended to since its
		// summary was read is counted as it is now (not one snapshot, as
		// the other listings).
		n, err := s.walkSpendBlock(ctx, metas[i].id, q, &page, true)
		if err != nil {
			return nil, 0, err
		}
		total += n
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	out, err := q.pageLogs(&page)
	return out, total, err
}

// readSummaries calls fn with the row count, started range and summary of
// each of the blocks whose ids are args (marks: their placeholders); the
// summary is the driver's, valid during the call.
func (s *DB) readSummaries(ctx context.Context, marks string, args []any, fn func(id int64, rows int, minStarted, maxStarted int64, sum []byte) error) error {
	rs, err := s.db.QueryContext(ctx, `SELECT id, row_count, min_started, max_started, summary FROM spend_blocks WHERE id IN (`+marks+`)`, args...)
	if err != nil {
		return err
	}
	defer rs.Close()
	for rs.Next() {
		var id, minStarted, maxStarted int64
		var rows int
		var sum sql.RawBytes
		if err := rs.Scan(&id, &rows, &minStarted, &maxStarted, &sum); err != nil {
			return err
		}
		if err := fn(id, rows, minStarted, maxStarted, sum); err != nil {
			return err
		}
	}
	return rs.Err()
}

// countSummary walks block id's summary: the rows q keeps, each offered to
// top. A summary that does not decode, or disagrees with the block's row
// count or started range, is an error naming the block.
func (q *spendQuery) countSummary(id int64, rows int, minStarted, maxStarted int64, sum []byte, v *spendSummaryView, top *startedTop) (summaryCount, error) {
	bad := func(what string) (summaryCount, error) {
		return summaryCount{}, fmt.Errorf("spend block %d: summary: %s: %w", id, what, errSpendBlock)
	}
	if !v.parse(sum, rows) {
		return bad("dictionaries")
	}
	var want [spendSummaryDicts]uint64
	for i := range want {
		if !q.wanted[i] {
			continue
		}
		found := false
		for j, sp := range v.dicts[i] {
			if string(sp.of(sum)) == q.want[i] {
				want[i], found = uint64(j), true
				break
			}
		}
		if !found {
			return summaryCount{}, nil // no row has it
		}
	}
	c := summaryCount{}
	var r spendSummaryRow
	n := 0
	prev := int64(0)
	for p := v.rows; p < len(sum); {
		if p = r.read(sum, p, prev); p < 0 {
			return bad(fmt.Sprintf("row %d", n+1))
		}
		n++
		prev = r.started
		if r.started < minStarted || r.started > maxStarted {
			return bad(fmt.Sprintf("row %d started at %d, outside the block's range [%d, %d]", n, r.started, minStarted, maxStarted))
		}
		if !q.matchSummary(&r, &want) {
			continue
		}
		if c.n == 0 || r.started > c.maxMatch {
			c.maxMatch = r.started
		}
		c.n++
		top.offer(r.started)
	}
	if n != rows {
		return bad(fmt.Sprintf("%d rows, row_count %d", n, rows))
	}
	return c, nil
}

// matchSummary reports whether the summary row r is one q keeps, want
// being the dictionary indexes of the values q asks for.
func (q *spendQuery) matchSummary(r *spendSummaryRow, want *[spendSummaryDicts]uint64) bool {
	if q.hasFrom && r.started < q.from || q.hasTo && r.started >= q.to {
		return false
	}
	for i := range want {
		if q.wanted[i] && r.idx[i] != want[i] {
			return false
		}
	}
	return q.status == nil || q.status(r.status)
}

// startedTop keeps the k newest started_at offered (a min-heap): once
// full, its least is the started_at of the k-th row of the listing.
type startedTop struct {
	k int
	h []int64
}

func (t *startedTop) full() bool { return len(t.h) >= t.k }

func (t *startedTop) min() int64 { return t.h[0] }

func (t *startedTop) offer(v int64) {
	if !t.full() {
		t.h = append(t.h, v)
		for i := len(t.h) - 1; i > 0; {
			p := (i - 1) / 2
			if t.h[p] <= t.h[i] {
				break
			}
			t.h[p], t.h[i] = t.h[i], t.h[p]
			i = p
		}
		return
	}
	if v <= t.h[0] {
		return
	}
	t.h[0] = v
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < len(t.h) && t.h[l] < t.h[m] {
			m = l
		}
		if l+1 < len(t.h) && t.h[l+1] < t.h[m] {
			m = l + 1
		}
		if m == i {
			break
		}
		t.h[i], t.h[m] = t.h[m], t.h[i]
		i = m
	}
}
