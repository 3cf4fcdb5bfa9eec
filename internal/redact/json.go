package redact

import (
	"bytes"
	"encoding/json"
	"strings"
)

// JSON returns raw, a JSON text, with its string values redacted: object
// keys, numbers and the structure are kept, so the result is valid JSON
// whenever raw is. raw itself is not changed; when nothing is found it is
// returned as is. Text that is not valid JSON is treated as one string
// (see Text).
func (r *Redactor) JSON(raw []byte) []byte {
	if r == nil || len(r.finders) == 0 {
		return raw
	}
	if !json.Valid(raw) {
		return r.Text(string(raw))
	}
	return r.walk(raw, 0)
}

// JSONPrefix is JSON for the start of a JSON text cut anywhere (a field
// past the content cap): each string value it holds, the last one perhaps
// unterminated, is decoded, masked and encoded again, so that escapes
// ("\n", "\u0073") hide nothing from the detectors. The result is the
// prefix with its strings masked, not valid JSON; the caller cuts it and
// quotes it.
func (r *Redactor) JSONPrefix(raw []byte) []byte {
	if r == nil || len(r.finders) == 0 {
		return raw
	}
	return r.walk(raw, 0)
}

// maxJSONDepth bounds how many JSON texts held in strings of JSON texts
// (tool-call arguments) are walked into.
const maxJSONDepth = 4

// walk masks the string values of raw, a JSON text or the start of one.
// A string that is itself a whole JSON text (tool-call arguments) is
// walked in turn, so that its own escapes are decoded too.
func (r *Redactor) walk(raw []byte, depth int) []byte {
	var out []byte // nil until the first change
	at := 0        // raw[:at] is in out (once out is not nil)
	for i := 0; i < len(raw); {
		if raw[i] != '"' {
			i++
			continue
		}
		end, escaped, closed := stringEnd(raw, i)
		if closed && isKey(raw, end) {
			i = end
			continue
		}
		s := decodeString(raw[i:end], escaped, closed)
		red := r.String(s)
		if depth < maxJSONDepth && len(s) > 1 && (s[0] == '{' || s[0] == '[') && json.Valid([]byte(s)) {
			red = string(r.walk([]byte(s), depth+1))
		}
		if red != s {
			if out == nil {
				out = make([]byte, 0, len(raw)+64)
			}
			out = append(out, raw[at:i]...)
			out = appendString(out, red)
			at = end
		}
		i = end
	}
	if out == nil {
		return raw
	}
	return append(out, raw[at:]...)
}

// decodeString returns the text of the JSON string q (quotes included,
// the closing one missing when !closed). An unterminated string loses a
// trailing escape cut in its middle; one that does not decode is taken as
// it is written.
func decodeString(q []byte, escaped, closed bool) string {
	if !escaped {
		if closed {
			return string(q[1 : len(q)-1])
		}
		return string(q[1:])
	}
	var s string
	if closed {
		if json.Unmarshal(q, &s) == nil {
			return s
		}
		return string(q[1 : len(q)-1])
	}
	for cut := 0; cut <= 6 && cut < len(q); cut++ {
		if json.Unmarshal(append(bytes.Clone(q[:len(q)-cut]), '"'), &s) == nil {
			return s
		}
	}
	return string(q[1:])
}

// Text returns s redacted, as a JSON string.
func (r *Redactor) Text(s string) []byte {
	return appendString(nil, r.String(s))
}

// stringEnd returns the index just past the JSON string starting at i,
// whether it holds an escape, and whether it is closed (false: b ends
// inside it).
func stringEnd(b []byte, i int) (int, bool, bool) {
	escaped := false
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped, true
		}
	}
	return len(b), escaped, false
}

// isKey reports whether the string ending at end is an object key.
func isKey(b []byte, end int) bool {
	for ; end < len(b); end++ {
		switch b[end] {
		case ' ', '\t', '\n', '\r':
			continue
		case ':':
			return true
		default:
			return false
		}
	}
	return false
}

// appendString appends s as a JSON string, escaping only what JSON needs
// (<, > and & stay as they are, so placeholders read as <EMAIL_ADDRESS>).
func appendString(dst []byte, s string) []byte {
	if strings.IndexFunc(s, func(c rune) bool {
		return c < 0x20 || c == '"' || c == '\\' || c == 0x2028 || c == 0x2029 || c == 0xFFFD
	}) < 0 {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	// Only a string that needs escapes pays for an encoder.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// Quote returns s as a JSON string, without HTML escaping.
func Quote(s string) []byte { return appendString(nil, s) }
