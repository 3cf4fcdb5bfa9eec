package guardrail

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// A Span is one text of a JSON body: the string token body[Start:End]
// (quotes included) and its decoded Text.
type Span struct {
	Start, End int
	Text       string
}

// textKeys name the members whose string values (directly, or in an array
// under them) are text a guardrail reads: chat and Anthropic message
// content and content parts, completion prompts, embedding inputs, system
// prompts and Responses instructions; tool calls' arguments (OpenAI's
// function.arguments, the Responses API's function_call.arguments and
// function_call_output.output); in answers, message content and
// completion text; in streams, the Responses API's "delta" strings and
// Anthropic's partial_json (a tool call's streamed input). Roles, types,
// ids, tool names and the like are not.
var textKeys = map[string]bool{
	"content": true, "text": true, "prompt": true, "input": true,
	"system": true, "instructions": true, "query": true, "refusal": true,
	"arguments": true, "output": true, "delta": true, "partial_json": true,
}

// allKey names the member whose value, when an object in a content block
// (an item of a "content" array), is text through and through:
// Anthropic's tool_use input (the tool's arguments as a JSON object),
// every string value in it at any depth. A tool's JSON schema elsewhere
// (a property named input) is not.
const allKey = "input"

// maxDepth bounds the nesting the scanner follows; deeper values are
// skipped (a body the gateway already decoded is well formed).
const maxDepth = 64

// Texts returns the texts of the JSON body in order, found in one linear
// pass without decoding the whole body. A body that is not JSON yields
// none.
func Texts(body []byte) []Span { return texts(body, false) }

// TextsShared is Texts whose texts without escapes share body's bytes
// instead of being copied (the copy was a tenth of the default set's cost
// on a 20 KB prompt). Only for a body that is never written while the
// texts are in use, or after: a request's body as read, which a mask
// replaces rather than changes. Never for a buffer that is reused (a
// stream's events).
func TextsShared(body []byte) []Span { return texts(body, true) }

func texts(body []byte, shared bool) []Span {
	type level struct {
		obj    bool   // an object (else an array)
		all    bool   // every string value in it is text (allKey's object)
		member string // the member the container is the value of
		key    string // in an object: the key of the value being read
	}
	var out []Span
	var stack [maxDepth]level
	depth := -1
	inKey := false // the next string is an object key
	member := ""   // the member of the value about to open
	for i := 0; i < len(body); i++ {
		switch c := body[i]; c {
		case '{', '[':
			if depth+1 >= maxDepth {
				return out
			}
			all := false
			if depth >= 0 {
				all = stack[depth].all || c == '{' && stack[depth].obj && stack[depth].key == allKey && stack[depth].member == "content"
			}
			depth++
			stack[depth] = level{obj: c == '{', all: all, member: member}
			inKey = c == '{'
		case '}', ']':
			if depth < 0 {
				return out
			}
			depth--
			inKey = false
		case ',':
			inKey = depth >= 0 && stack[depth].obj
		case ':':
			inKey = false
		case '"':
			end, escaped := stringEnd(body, i)
			if end < 0 {
				return out
			}
			switch {
			case depth < 0:
			case inKey:
				stack[depth].key = keyName(body[i:end], escaped)
				member = stack[depth].key
				inKey = false
			case stack[depth].all,
				stack[depth].obj && textKeys[stack[depth].key],
				!stack[depth].obj && textKeys[stack[depth].member]:
				if out == nil {
					out = make([]Span, 0, 4) // a chat body has a few
				}
				t := ""
				if shared && !escaped && end-i > 2 {
					t = unsafe.String(&body[i+1], end-i-2)
				} else {
					t = rawString(body[i:end], escaped)
				}
				out = append(out, Span{Start: i, End: end, Text: t})
			}
			i = end - 1
		}
		if depth >= 0 && !stack[depth].obj {
			member = stack[depth].member // an array's items are under its member
		}
	}
	return out
}

// keyName is the key token q as Texts needs it: the key itself when it is
// one of textKeys (allKey and "content" among them), else "" (which is
// none of them). Only those keys decide anything, and naming the rest ""
// spares a string for every key of every body.
func keyName(q []byte, escaped bool) string {
	if escaped {
		q = []byte(rawString(q, true))
	} else {
		q = q[1 : len(q)-1]
	}
	if k, ok := keyNames[string(q)]; ok {
		return k
	}
	return ""
}

// keyNames maps each of textKeys to itself.
var keyNames = func() map[string]string {
	m := map[string]string{}
	for k := range textKeys {
		m[k] = k
	}
	return m
}()

// stringEnd returns the index just past the JSON string starting at i and
// whether it holds an escape; -1 when it is not closed.
func stringEnd(b []byte, i int) (int, bool) {
	// Most strings hold no escape: the closing quote and the absence of
	// a backslash before it are two memchr-speed searches.
	q := bytes.IndexByte(b[i+1:], '"')
	if q < 0 {
		return -1, bytes.IndexByte(b[i+1:], '\\') >= 0
	}
	if bytes.IndexByte(b[i+1:i+1+q], '\\') < 0 {
		return i + 2 + q, false
	}
	escaped := false
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped
		}
	}
	return -1, escaped
}

// rawString decodes the JSON string token q.
func rawString(q []byte, escaped bool) string {
	if !escaped {
		return string(q[1 : len(q)-1])
	}
	var s string
	if json.Unmarshal(q, &s) != nil {
		return string(q[1 : len(q)-1])
	}
	return s
}

// An Edit replaces text[Start:End] of a text with New. A text's edits are
// in order and do not overlap.
type Edit struct {
	Start, End int
	New        string
}

// Rewrite returns body with the spans whose text changed (texts[i] for
// spans[i]) re-encoded; the rest of the body is kept byte for byte.
func Rewrite(body []byte, spans []Span, texts []string) []byte {
	return RewriteEdits(body, spans, texts, nil)
}

// RewriteEdits is Rewrite told how each changed text came from its span's
// (edits[i] for texts[i], as Result.Edits): a span with edits keeps its
// encoded bytes between them and has only the new pieces encoded, instead
// of the whole text re-encoded. A span whose edits are nil, or whose
// edits cannot be placed in its encoding (a cut inside one escape, an
// escaped lone surrogate, bytes that are not UTF-8, in the token or in a
// new piece), or that do not make texts[i], is re-encoded whole.
// Either way the span decodes to texts[i].
func RewriteEdits(body []byte, spans []Span, texts []string, edits [][]Edit) []byte {
	n := len(body) + 64
	for i, s := range spans {
		if texts[i] != s.Text {
			n += len(texts[i]) - len(s.Text)
		}
	}
	b := make([]byte, 0, max(n, len(body)))
	at := 0
	var cuts []int
	for i, s := range spans {
		if texts[i] == s.Text {
			continue
		}
		b = append(b, body[at:s.Start]...)
		at = s.End
		if i < len(edits) && edits[i] != nil && validNew(edits[i]) && makes(s.Text, edits[i], texts[i]) {
			var ok bool
			if cuts, ok = rawCuts(body[s.Start+1:s.End-1], s.Text, edits[i], cuts[:0]); ok {
				b = appendPatched(b, body[s.Start+1:s.End-1], edits[i], cuts)
				continue
			}
		}
		b = appendQuote(b, texts[i])
	}
	return append(b, body[at:]...)
}

// validNew reports whether every edit's New is UTF-8: a new piece that is
// not would read differently in a token with escapes than in one without
// (Texts keeps the bytes of the one, encoding/json replaces them in the
// other), so such a text is re-encoded whole, as Rewrite does.
func validNew(edits []Edit) bool {
	for _, e := range edits {
		if !utf8.ValidString(e.New) {
			return false
		}
	}
	return true
}

// makes reports whether edits, in order and within t, turn t into want:
// edits that do not describe the text they come with are not used.
func makes(t string, edits []Edit, want string) bool {
	at, w := 0, 0
	for _, e := range edits {
		if e.Start < at || e.End < e.Start || e.End > len(t) {
			return false
		}
		n := e.Start - at
		if w+n+len(e.New) > len(want) || t[at:e.Start] != want[w:w+n] || e.New != want[w+n:w+n+len(e.New)] {
			return false
		}
		at, w = e.End, w+n+len(e.New)
	}
	return t[at:] == want[w:]
}

// appendPatched appends the JSON string whose encoded content is raw with
// each edit's piece (raw[cuts[2k]:cuts[2k+1]]) replaced by its New,
// encoded.
func appendPatched(b, raw []byte, edits []Edit, cuts []int) []byte {
	b = append(b, '"')
	at := 0
	for k, e := range edits {
		b = append(b, raw[at:cuts[2*k]]...)
		if plainJSON(e.New) {
			b = append(b, e.New...)
		} else {
			q := appendQuote(nil, e.New)
			b = append(b, q[1:len(q)-1]...)
		}
		at = cuts[2*k+1]
	}
	b = append(b, raw[at:]...)
	return append(b, '"')
}

// rawCuts returns, for each edit's Start and End in text, the offset in
// raw (the content of a JSON string token, quotes left out) where the
// encoding of text[:offset] ends; ok is false unless raw decodes to text
// unit by unit (an escape, or a run of plain bytes) with every cut between
// two units. It checks what it maps: plain runs are compared with text
// (and in a token with escapes must be UTF-8: encoding/json replaces
// other bytes, as Texts does not in a token without), no cut may fall
// inside a character, each escape's decoding
// is compared too, and an escaped lone surrogate (decoded as U+FFFD, but a
// pair once a piece ending in one meets a piece starting with the other)
// gives up.
func rawCuts(raw []byte, text string, edits []Edit, cuts []int) ([]int, bool) {
	want := func(k int) int { // the k-th cut: the edits' starts and ends in turn
		if k&1 == 0 {
			return edits[k/2].Start
		}
		return edits[k/2].End
	}
	nc := 2 * len(edits)
	if cap(cuts) < nc {
		cuts = make([]int, 0, nc)
	}
	ri, ti, k := 0, 0, 0
	var unit [utf8.UTFMax]byte
	for {
		n := bytes.IndexByte(raw[ri:], '\\')
		if n < 0 {
			n = len(raw) - ri
		}
		run := raw[ri : ri+n]
		// A token without escapes is its text as it stands, invalid
		// UTF-8 included (Texts); one with escapes decodes with invalid
		// bytes replaced, so its runs must be valid.
		escaped := ri > 0 || n < len(raw)
		if ti+n > len(text) || string(run) != text[ti:ti+n] || escaped && !utf8.Valid(run) {
			return cuts, false
		}
		for ; k < nc && want(k) <= ti+n; k++ {
			c := want(k)
			if c < ti || k > 0 && c < want(k-1) || c < len(text) && !utf8.RuneStart(text[c]) {
				return cuts, false // out of order, or inside a character
			}
			cuts = append(cuts, ri+c-ti)
		}
		ri, ti = ri+n, ti+n
		if ri == len(raw) {
			return cuts, ti == len(text) && k == nc
		}
		u, l := unescape(raw[ri:], unit[:0])
		if l == 0 || ti+len(u) > len(text) || string(u) != text[ti:ti+len(u)] {
			return cuts, false
		}
		if k < nc && want(k) < ti+len(u) {
			return cuts, false // inside the escape (want(k) > ti: at ti was taken above)
		}
		ri, ti = ri+l, ti+len(u)
	}
}

// unescape decodes the JSON escape at the start of e (e[0] is '\\') into
// u, as encoding/json does, and returns it with the escape's length; 0
// for an escape JSON does not allow, and for an escaped lone surrogate.
func unescape(e, u []byte) ([]byte, int) {
	if len(e) < 2 {
		return u, 0
	}
	switch e[1] {
	case '"', '\\', '/':
		return append(u, e[1]), 2
	case 'b':
		return append(u, '\b'), 2
	case 'f':
		return append(u, '\f'), 2
	case 'n':
		return append(u, '\n'), 2
	case 'r':
		return append(u, '\r'), 2
	case 't':
		return append(u, '\t'), 2
	case 'u':
		r := hex4(e[2:])
		if r < 0 {
			return u, 0
		}
		if !utf16.IsSurrogate(r) {
			return utf8.AppendRune(u, r), 6
		}
		if len(e) >= 12 && e[6] == '\\' && e[7] == 'u' {
			if p := utf16.DecodeRune(r, hex4(e[8:])); p != utf8.RuneError {
				return utf8.AppendRune(u, p), 12
			}
		}
	}
	return u, 0
}

// hex4 is the value of the four hex digits h starts with; -1 when it does
// not.
func hex4(h []byte) rune {
	if len(h) < 4 {
		return -1
	}
	var r rune
	for _, c := range h[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// Quote returns s as a JSON string, without HTML escaping, so that a
// placeholder reads <EMAIL_ADDRESS> on the wire.
func Quote(s string) []byte { return appendQuote(make([]byte, 0, len(s)+2), s) }

// plainJSON reports whether s needs no escape in a JSON string: no
// control character, quote or backslash, and no U+2028 or U+2029 (whose
// UTF-8 starts 0xE2 0x80). Quotes and backslashes are two memchr-speed
// searches; the rest is tested eight bytes at once (ctlOrE2), and from the
// first block that holds a control character or 0xE2, byte by byte.
func plainJSON(s string) bool {
	if strings.IndexByte(s, '"') >= 0 || strings.IndexByte(s, '\\') >= 0 {
		return false
	}
	i := 0
	for ; i+8 <= len(s); i += 8 {
		if ctlOrE2(load64(s, i)) {
			break // the byte by byte test decides, from this block on
		}
	}
	for ; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20:
			return false
		case c == 0xE2 && i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xA8 || s[i+2] == 0xA9):
			return false
		}
	}
	return true
}

// ctlOrE2 reports whether one of the eight bytes of x is a control
// character or 0xE2 (the first byte of U+2028 and U+2029). Each test is
// exact: the high bits are cleared before the additions, so no carry
// crosses a byte.
func ctlOrE2(x uint64) bool {
	const ones, low7, high = 0x0101010101010101, 0x7f7f7f7f7f7f7f7f, 0x8080808080808080
	e2 := x ^ 0xE2*ones
	notE2 := e2&low7 + low7 | e2            // high bit clear: the byte is 0xE2
	notCtl := x&low7 + (0x80-0x20)*ones | x // high bit clear: the byte is below 0x20
	return ^(notE2&notCtl)&high != 0
}

// appendQuote appends s as a JSON string (Quote) to b.
func appendQuote(b []byte, s string) []byte {
	if plainJSON(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}
