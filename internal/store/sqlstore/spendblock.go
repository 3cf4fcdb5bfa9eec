package sqlstore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/bits"

	"github.com/tollgate/tollgate/internal/store"
)

// SQLite keeps its spend log in blocks (table spend_blocks, migration
// 00018): many spend rows encoded one after another in one BLOB, with the
// block's started and ended ranges and two Bloom filters, one of the
// rows' call and answer ids and one of their owners, model groups and
// tags. A spend row written as a table row cost the writer about as much as
// the rest of a request (a B-tree entry in the table, its primary key and
// each index: docs/performance.md, "the spend row's price"); a block is
// one entry for hundreds of rows. Filters let a listing and the replay
// check skip the blocks that cannot hold what they look for.
//
// A row's encoding (spendBlockFormat 1), its fields in spendColumns'
// order:
//
//	text:     uvarint length, bytes
//	nullable: uvarint 0 for NULL, else length+1, bytes
//	integer:  varint (zig-zag)
//	float:    8 bytes, IEEE 754 little-endian
//	flags:    one byte: 1 usage_clamped, 2 usage_estimated, 4 cache_hit
//
// request_id, key_hash, user_id, team_id, end_user, model_group,
// deployment, provider (text); prompt_tokens, completion_tokens,
// cached_tokens (integer); cost (float); status, latency_ms, started_at,
// ended_at (integer, times in Unix microseconds, 0 for none),
// reported_prompt_tokens, reported_completion_tokens (integer); flags;
// response_id, call_type (text); request_tags, metadata, messages,
// response (nullable); cache_key (text); saved_cost (float); guardrails,
// error_information (nullable). The nullable ones hold the same JSON text
// a spend_logs column would (tagsText, metadataText, rawText, errorText).
//
// A block's summary (column summary, before data so that SQLite reads it
// without the data's overflow pages) lets a listing filtered by key, user,
// team, end user, model group or status decide each row's match, the
// total and the page's candidates without the data (spendblockread.go):
//
//	five dictionaries, in the order key_hash, user_id, team_id, end_user,
//	model_group: uvarint count, then each distinct value (text), in the
//	order of first use (the empty string is a value like any other);
//	then per row, in the data's order: the five values as uvarint indexes
//	into their dictionaries, status (integer), started_at (integer: the
//	difference from the row before, the first row's from 0).
//
// Its row count is the block's row_count.
const spendBlockFormat = 1

// A block takes rows until it holds spendBlockRows of them or
// spendBlockBytes of encoding, whichever comes first; the writer then
// starts another. The filters are sized for spendBlockRows rows.
const (
	spendBlockRows  = 512
	spendBlockBytes = 1 << 20
)

// Filter sizes: about ten bits an item (≈ 1 % false positives with
// spendFilterHashes hashes) for two ids a row and eight attributes a row.
const (
	spendIDFilterBytes   = spendBlockRows * 2 * 10 / 8
	spendAttrFilterBytes = spendBlockRows * 8 * 10 / 8
	spendFilterHashes    = 7
)

// Attribute kinds in the attribute filter: an item is its kind byte
// followed by the value.
const (
	attrKey     = 'k'
	attrUser    = 'u'
	attrTeam    = 't'
	attrEndUser = 'e'
	attrModel   = 'm'
	attrTag     = 'g'
)

// spendBlock is one spend_blocks row as the writer builds it or a reader
// gets it.
type spendBlock struct {
	id                     int64 // 0 until stored
	rows                   int
	minStarted, maxStarted int64
	minEnded, maxEnded     int64
	ids, attrs             []byte        // Bloom filters
	data                   []byte        // the rows, encoded
	sum                    *spendSummary // the writer's; nil until a row is added
}

// spendSummary is a block's summary as the writer builds it: the
// dictionaries and the rows' part, joined by bytes().
type spendSummary struct {
	dicts       [spendSummaryDicts]spendDict
	rows        []byte
	lastStarted int64
	// lastAttr are the key, user, team, end user and model group the
	// block's attribute filter last took (addTexts): not stored, empty in
	// a summary read back, whose next row then adds its values again.
	lastAttr [spendSummaryDicts]string
}

// spendSummaryDicts is how many dictionaries a summary has (key, user,
// team, end user, model group).
const spendSummaryDicts = 5

// spendDict is one of a summary's dictionaries.
type spendDict struct {
	vals []string
	idx  map[string]uint64 // built once vals outgrows a linear search
	last uint64            // the index found last (rows repeat values)
}

// index returns v's index, added if new.
func (d *spendDict) index(v string) uint64 {
	if d.last < uint64(len(d.vals)) && d.vals[d.last] == v {
		return d.last
	}
	if d.idx == nil {
		for i, e := range d.vals {
			if e == v {
				d.last = uint64(i)
				return d.last
			}
		}
		if len(d.vals) >= 16 {
			d.idx = make(map[string]uint64, 2*len(d.vals))
			for i, e := range d.vals {
				d.idx[e] = uint64(i)
			}
		}
	}
	if i, ok := d.idx[v]; ok {
		d.last = i
		return i
	}
	d.last = uint64(len(d.vals))
	d.vals = append(d.vals, v)
	if d.idx != nil {
		d.idx[v] = d.last
	}
	return d.last
}

// add appends a row's part of the summary.
func (s *spendSummary) add(l *store.SpendLog, started int64) {
	rows := s.rows // one write of the field (a write barrier) a row, not seven
	for i, v := range [spendSummaryDicts]string{l.KeyHash, l.UserID, l.TeamID, l.EndUser, l.ModelGroup} {
		rows = binary.AppendUvarint(rows, s.dicts[i].index(v))
	}
	rows = binary.AppendVarint(rows, int64(l.Status))
	s.rows = binary.AppendVarint(rows, started-s.lastStarted)
	s.lastStarted = started
}

// bytes is the summary as stored.
func (s *spendSummary) bytes() []byte {
	n := len(s.rows)
	for i := range s.dicts {
		n += 1 + len(s.dicts[i].vals)
		for _, v := range s.dicts[i].vals {
			n += len(v) + 1
		}
	}
	out := make([]byte, 0, n+8)
	for i := range s.dicts {
		out = binary.AppendUvarint(out, uint64(len(s.dicts[i].vals)))
		for _, v := range s.dicts[i].vals {
			out = appendText(out, v)
		}
	}
	return append(out, s.rows...)
}

// summaryBytes is b's summary as stored.
func (b *spendBlock) summaryBytes() []byte {
	if b.sum == nil {
		return (&spendSummary{}).bytes()
	}
	return b.sum.bytes()
}

// setSummary rebuilds b's summary state from a stored summary of b.rows
// rows (the open block read back); false if it does not decode.
func (b *spendBlock) setSummary(stored []byte) bool {
	var v spendSummaryView
	if !v.parse(stored, b.rows) {
		return false
	}
	s := spendSummary{}
	for i := range s.dicts {
		for _, sp := range v.dicts[i] {
			s.dicts[i].index(string(sp.of(stored)))
		}
	}
	var r spendSummaryRow
	n := 0
	for p := v.rows; p < len(stored); n++ {
		if p = r.read(stored, p, s.lastStarted); p < 0 {
			return false
		}
		s.lastStarted = r.started
	}
	if n != b.rows {
		return false
	}
	s.rows = append([]byte(nil), stored[v.rows:]...)
	b.sum = &s
	return true
}

// spendSummaryView is a stored summary's dictionaries (spans of its
// bytes) and where its rows begin.
type spendSummaryView struct {
	dicts [spendSummaryDicts][]span
	rows  int
}

// parse reads the dictionaries of sum; false if they do not decode. The
// rows are not walked (spendSummaryRow.read).
func (v *spendSummaryView) parse(sum []byte, rows int) bool {
	p := 0
	for i := range v.dicts {
		var n uint64
		if n, p = uvarintAt(sum, p); p < 0 || n > uint64(len(sum)) || (n == 0 && rows > 0) {
			return false
		}
		v.dicts[i] = v.dicts[i][:0]
		for range n {
			var sp span
			if sp, p = textAt(sum, p); p < 0 {
				return false
			}
			v.dicts[i] = append(v.dicts[i], sp)
		}
	}
	v.rows = p
	return true
}

// spendSummaryRow is one row of a summary.
type spendSummaryRow struct {
	idx     [spendSummaryDicts]uint64
	status  int64
	started int64
}

// read reads the row at sum[p:] given the started_at of the row before
// (0 for the first): the offset after it, or -1 if it does not decode.
func (r *spendSummaryRow) read(sum []byte, p int, prevStarted int64) int {
	for i := range r.idx {
		r.idx[i], p = uvarintAt(sum, p)
	}
	r.status, p = varintAt(sum, p)
	var d int64
	d, p = varintAt(sum, p)
	r.started = prevStarted + d
	return p
}

// newSpendBlock returns an empty block with empty filters.
func newSpendBlock() *spendBlock {
	return &spendBlock{ids: make([]byte, spendIDFilterBytes), attrs: make([]byte, spendAttrFilterBytes)}
}

// full reports that b takes no more rows.
func (b *spendBlock) full() bool { return b.rows >= spendBlockRows || len(b.data) >= spendBlockBytes }

// add appends l's row to b, widening its ranges and filters.
func (b *spendBlock) add(l *store.SpendLog) { b.addTexts(l, textsOf(l)) }

// spendTexts are a row's nullable JSON columns as stored: nil (NULL) or
// the text (tagsText, metadataText, rawText, errorText of its fields, or a
// spend_logs row's columns as they are, moveSpendLogs).
type spendTexts struct{ tags, metadata, messages, response, guardrails, errorInfo any }

// textsOf is l's JSON columns as a spend_logs row would hold them.
func textsOf(l *store.SpendLog) spendTexts {
	return spendTexts{tagsText(l.RequestTags), metadataText(l.Metadata), rawText(l.Messages), rawText(l.Response),
		rawText(l.Guardrails), errorText(l.ErrorInformation)}
}

// addTexts is add with the row's JSON columns given as stored text (l's
// own JSON fields are not encoded; its tags still fill the filter).
func (b *spendBlock) addTexts(l *store.SpendLog, t spendTexts) {
	started, ended := micros(l.StartedAt), micros(l.EndedAt)
	if b.rows == 0 {
		b.minStarted, b.maxStarted, b.minEnded, b.maxEnded = started, started, ended, ended
	} else {
		b.minStarted, b.maxStarted = min(b.minStarted, started), max(b.maxStarted, started)
		b.minEnded, b.maxEnded = min(b.minEnded, ended), max(b.maxEnded, ended)
	}
	b.rows++
	if cap(b.data)-len(b.data) < spendRowRoom {
		b.data = growBlockData(b.data)
	}
	b.data = appendSpendRow(b.data, l, t)
	if b.sum == nil {
		b.sum = &spendSummary{}
	}
	b.sum.add(l, started)
	filterAdd(b.ids, 0, l.RequestID)
	if l.ResponseID != "" {
		filterAdd(b.ids, 0, l.ResponseID)
	}
	// A value the block's previous row added for the same attribute is in
	// the filter already (adding an item twice sets the same bits): rows
	// come in runs of one key, user and model group, and the hash of a
	// key's 64 hex digits was most of a keyed row's filter cost.
	last := &b.sum.lastAttr
	for i, a := range [...]struct {
		kind byte
		v    string
	}{{attrKey, l.KeyHash}, {attrUser, l.UserID}, {attrTeam, l.TeamID}, {attrEndUser, l.EndUser}, {attrModel, l.ModelGroup}} {
		if a.v != "" && a.v != last[i] {
			filterAdd(b.attrs, a.kind, a.v)
			last[i] = a.v
		}
	}
	for _, t := range l.RequestTags {
		filterAdd(b.attrs, attrTag, t)
	}
}

// spendRowRoom is the room a block's data is grown to have before a row is
// appended: more than a row without content takes, so that a block grows
// by doubling (growBlockData) rather than by append's smaller steps, each
// a copy of the block so far.
const spendRowRoom = 2048

// growBlockData returns data with twice the capacity, at least 32 KiB,
// and no more than a full block and some room.
func growBlockData(data []byte) []byte {
	c := min(max(2*cap(data), 32<<10), spendBlockBytes+4*spendRowRoom)
	if c-len(data) < spendRowRoom {
		c = len(data) + spendRowRoom
	}
	return append(make([]byte, 0, c), data...)
}

// reset empties b, keeping its buffers, for a new block (not stored: id 0).
func (b *spendBlock) reset() {
	clear(b.ids)
	clear(b.attrs)
	*b = spendBlock{ids: b.ids, attrs: b.attrs, data: b.data[:0]}
}

// mayHoldID reports whether b may hold a row whose call or answer id is id
// (false: it holds none).
func (b *spendBlock) mayHoldID(id string) bool { return filterHas(b.ids, 0, id) }

// mayHoldAttr reports whether b may hold a row with the attribute kind of
// value v (false: it holds none).
func (b *spendBlock) mayHoldAttr(kind byte, v string) bool { return filterHas(b.attrs, kind, v) }

// filterHash is a 64-bit hash of kind and s, the same in every process
// and on every machine (the filters are stored): FNV-1a, then a final
// mix so that the low and high halves are both well spread.
func filterHash(kind byte, s string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	h = (h ^ uint64(kind)) * prime
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * prime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// filterBits yields the spendFilterHashes bit positions of an item in a
// filter of n bits (double hashing: (h1 + i·h2) mod n for i from 0,
// computed by steps of h2 mod n, two divisions an item instead of one a
// position).
func filterBits(h uint64, n uint64, fn func(bit uint64) bool) bool {
	pos, step := (h&0xffffffff)%n, (h>>32|1)%n
	for range spendFilterHashes {
		if !fn(pos) {
			return false
		}
		if pos += step; pos >= n {
			pos -= n
		}
	}
	return true
}

func filterAdd(f []byte, kind byte, s string) {
	n := uint64(len(f)) * 8
	h := filterHash(kind, s)
	pos, step := (h&0xffffffff)%n, (h>>32|1)%n
	for range spendFilterHashes {
		f[pos>>3] |= 1 << (pos & 7)
		if pos += step; pos >= n {
			pos -= n
		}
	}
}

func filterHas(f []byte, kind byte, s string) bool {
	if len(f) == 0 {
		return true // no filter: anything may be there
	}
	return filterBits(filterHash(kind, s), uint64(len(f))*8, func(bit uint64) bool {
		return f[bit>>3]&(1<<(bit&7)) != 0
	})
}

// appendSpendRow appends the encoding (spendBlockFormat) of l's row with
// the JSON columns t to dst.
func appendSpendRow(dst []byte, l *store.SpendLog, t spendTexts) []byte {
	for _, s := range [...]string{l.RequestID, l.KeyHash, l.UserID, l.TeamID, l.EndUser, l.ModelGroup, l.Deployment, l.Provider} {
		dst = appendText(dst, s)
	}
	dst = binary.AppendVarint(dst, l.PromptTokens)
	dst = binary.AppendVarint(dst, l.CompletionTokens)
	dst = binary.AppendVarint(dst, l.CachedTokens)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(l.Cost))
	dst = binary.AppendVarint(dst, int64(l.Status))
	dst = binary.AppendVarint(dst, l.LatencyMS)
	dst = binary.AppendVarint(dst, micros(l.StartedAt))
	dst = binary.AppendVarint(dst, micros(l.EndedAt))
	dst = binary.AppendVarint(dst, l.ReportedPromptTokens)
	dst = binary.AppendVarint(dst, l.ReportedCompletionTokens)
	var flags byte
	if l.UsageClamped {
		flags |= 1
	}
	if l.UsageEstimated {
		flags |= 2
	}
	if l.CacheHit {
		flags |= 4
	}
	dst = append(dst, flags)
	dst = appendText(dst, l.ResponseID)
	dst = appendText(dst, l.CallType)
	dst = appendNullable(dst, t.tags)
	dst = appendNullable(dst, t.metadata)
	dst = appendNullable(dst, t.messages)
	dst = appendNullable(dst, t.response)
	dst = appendText(dst, l.CacheKey)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(l.SavedCost))
	dst = appendNullable(dst, t.guardrails)
	return appendNullable(dst, t.errorInfo)
}

func appendText(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendNullable appends v, nil or a string (the text helpers' results).
func appendNullable(dst []byte, v any) []byte {
	s, ok := v.(string)
	if !ok {
		return append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(s))+1)
	return append(dst, s...)
}

// spendRow is one decoded row: its scalar columns in SpendLog (Cost,
// times, ids, flags...) and its JSON columns as the text stored, decoded
// only for the rows a listing returns (log).
type spendRow struct {
	store.SpendLog
	tags, metadata, messages, response, guardrails, errorInfo nullText
}

// nullText is a nullable column's text.
type nullText struct {
	s     string
	valid bool
}

// log returns r as a listing returns it: the JSON columns decoded as
// ListSpendLogs decodes spend_logs' (one that does not decode reads as
// absent); messages and response left out when omitContent.
func (r *spendRow) log(omitContent bool) store.SpendLog {
	l := r.SpendLog
	if r.tags.valid {
		_ = json.Unmarshal([]byte(r.tags.s), &l.RequestTags)
	}
	if r.metadata.valid {
		_ = json.Unmarshal([]byte(r.metadata.s), &l.Metadata)
	}
	if r.errorInfo.valid {
		var e store.ErrorInformation
		if json.Unmarshal([]byte(r.errorInfo.s), &e) == nil {
			l.ErrorInformation = &e
		}
	}
	if r.guardrails.valid && json.Valid([]byte(r.guardrails.s)) {
		l.Guardrails = json.RawMessage(r.guardrails.s)
	}
	if omitContent {
		l.ContentOmitted = true
		return l
	}
	if r.messages.valid && json.Valid([]byte(r.messages.s)) {
		l.Messages = json.RawMessage(r.messages.s)
	}
	if r.response.valid && json.Valid([]byte(r.response.s)) {
		l.Response = json.RawMessage(r.response.s)
	}
	return l
}

// contentBytes is what r's messages and response add to a listing's
// content budget (SpendFilter.ContentBytes).
func (r *spendRow) contentBytes() int { return len(r.messages.s) + len(r.response.s) }

var errSpendBlock = errors.New("spend block: malformed row")

// spendRowReader decodes a block's rows one after another.
type spendRowReader struct {
	data []byte
	err  error
}

// next decodes the next row into r; false at the end or on a malformed
// row (err then says so). Strings are copied out of the block.
func (d *spendRowReader) next(r *spendRow) bool {
	if len(d.data) == 0 || d.err != nil {
		return false
	}
	*r = spendRow{}
	l := &r.SpendLog
	for _, p := range [...]*string{&l.RequestID, &l.KeyHash, &l.UserID, &l.TeamID, &l.EndUser, &l.ModelGroup, &l.Deployment, &l.Provider} {
		*p = d.text()
	}
	l.PromptTokens = d.varint()
	l.CompletionTokens = d.varint()
	l.CachedTokens = d.varint()
	l.Cost = d.float()
	l.Status = int(d.varint())
	l.LatencyMS = d.varint()
	l.StartedAt = fromMicros(d.varint())
	l.EndedAt = fromMicros(d.varint())
	l.ReportedPromptTokens = d.varint()
	l.ReportedCompletionTokens = d.varint()
	flags := d.byte()
	l.UsageClamped, l.UsageEstimated, l.CacheHit = flags&1 != 0, flags&2 != 0, flags&4 != 0
	l.ResponseID = d.text()
	l.CallType = d.text()
	r.tags = d.nullable()
	r.metadata = d.nullable()
	r.messages = d.nullable()
	r.response = d.nullable()
	l.CacheKey = d.text()
	l.SavedCost = d.float()
	r.guardrails = d.nullable()
	r.errorInfo = d.nullable()
	return d.err == nil
}

func (d *spendRowReader) fail() {
	if d.err == nil {
		d.err = errSpendBlock
	}
	d.data = nil
}

func (d *spendRowReader) uvarint() uint64 {
	v, n := binary.Uvarint(d.data)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *spendRowReader) varint() int64 {
	v, n := binary.Varint(d.data)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *spendRowReader) float() float64 {
	if len(d.data) < 8 {
		d.fail()
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.data))
	d.data = d.data[8:]
	return v
}

func (d *spendRowReader) byte() byte {
	if len(d.data) < 1 {
		d.fail()
		return 0
	}
	v := d.data[0]
	d.data = d.data[1:]
	return v
}

func (d *spendRowReader) bytes(n uint64) string {
	if n > uint64(len(d.data)) {
		d.fail()
		return ""
	}
	s := string(d.data[:n])
	d.data = d.data[n:]
	return s
}

func (d *spendRowReader) text() string { return d.bytes(d.uvarint()) }

func (d *spendRowReader) nullable() nullText {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return nullText{}
	}
	return nullText{s: d.bytes(n - 1), valid: true}
}

// filterFill is the share of a filter's bits set (tests and docs: a
// filter past about half full answers "maybe" too often).
func filterFill(f []byte) float64 {
	n := 0
	for _, b := range f {
		n += bits.OnesCount8(b)
	}
	return float64(n) / float64(len(f)*8)
}
