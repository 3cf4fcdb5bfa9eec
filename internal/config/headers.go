package config

import (
	"fmt"
	"sort"
)

// headerError names the header (or field) whose name or value cannot go on
// the wire, and why.
type headerError struct{ name, why string }

// checkHeaders reports the first header in m (in name order) whose value
// holds a control character (CR and LF above all, which would split the
// header; HTAB is allowed) or, unless valuesOnly, whose name is not an HTTP
// token. Empty values are skipped when valuesOnly (unset fields).
func checkHeaders(m map[string]string, valuesOnly bool) *headerError {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !valuesOnly && !validHeaderName(k) {
			return &headerError{fmt.Sprintf("%q", k), "not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"}
		}
		if i := badHeaderByte(m[k]); i >= 0 {
			return &headerError{k, fmt.Sprintf("the value holds a control character (%q at byte %d); CR and LF would split the header", m[k][i], i)}
		}
	}
	return nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c < 0x80 && isTokenPunct[c]:
		default:
			return false
		}
	}
	return true
}

var isTokenPunct = [128]bool{'!': true, '#': true, '$': true, '%': true, '&': true, '\'': true, '*': true,
	'+': true, '-': true, '.': true, '^': true, '_': true, '`': true, '|': true, '~': true}

// badHeaderByte is the index of the first byte of v that may not appear in
// a header value (a control character other than HTAB, or DEL), or -1.
func badHeaderByte(v string) int {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return i
		}
	}
	return -1
}
