package guardrail

import (
	"bytes"
	"encoding/json"
	"strings"
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
func Texts(body []byte) []Span {
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
				stack[depth].key = rawString(body[i:end], escaped)
				member = stack[depth].key
				inKey = false
			case stack[depth].all,
				stack[depth].obj && textKeys[stack[depth].key],
				!stack[depth].obj && textKeys[stack[depth].member]:
				out = append(out, Span{Start: i, End: end, Text: rawString(body[i:end], escaped)})
			}
			i = end - 1
		}
		if depth >= 0 && !stack[depth].obj {
			member = stack[depth].member // an array's items are under its member
		}
	}
	return out
}

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

// Rewrite returns body with the spans whose text changed (texts[i] for
// spans[i]) re-encoded; the rest of the body is kept byte for byte.
func Rewrite(body []byte, spans []Span, texts []string) []byte {
	n := len(body) + 64
	for i, s := range spans {
		if texts[i] != s.Text {
			n += len(texts[i]) - len(s.Text)
		}
	}
	b := make([]byte, 0, max(n, len(body)))
	at := 0
	for i, s := range spans {
		if texts[i] == s.Text {
			continue
		}
		b = append(b, body[at:s.Start]...)
		b = appendQuote(b, texts[i])
		at = s.End
	}
	return append(b, body[at:]...)
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
