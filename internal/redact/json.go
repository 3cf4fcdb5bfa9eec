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
	var out []byte // nil until the first change
	at := 0        // raw[:at] is in out (once out is not nil)
	for i := 0; i < len(raw); {
		if raw[i] != '"' {
			i++
			continue
		}
		end, escaped := stringEnd(raw, i)
		if isKey(raw, end) {
			i = end
			continue
		}
		var s string
		if escaped {
			_ = json.Unmarshal(raw[i:end], &s)
		} else {
			s = string(raw[i+1 : end-1])
		}
		if red := r.String(s); red != s {
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

// Text returns s redacted, as a JSON string.
func (r *Redactor) Text(s string) []byte {
	return appendString(nil, r.String(s))
}

// stringEnd returns the index just past the JSON string starting at i,
// and whether it holds an escape.
func stringEnd(b []byte, i int) (int, bool) {
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
	return len(b), escaped
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
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if strings.IndexFunc(s, func(c rune) bool {
		return c < 0x20 || c == '"' || c == '\\' || c == 0x2028 || c == 0x2029 || c == 0xFFFD
	}) < 0 {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	_ = enc.Encode(s)
	return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// Quote returns s as a JSON string, without HTML escaping.
func Quote(s string) []byte { return appendString(nil, s) }
