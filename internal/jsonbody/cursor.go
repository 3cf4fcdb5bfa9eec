package jsonbody

import (
	"bytes"
	"encoding/json"
)

// Cursor walks the top-level members of a JSON object without allocating:
// what Reset records, one member at a time, for readers that want a few
// members of a body they do not keep (an answer's usage and id).
type Cursor struct {
	b []byte
	i int // where the walk goes on once the recorded members are given
	// The members Start recorded while it validated b (n counts them
	// all; beyond cursorTops the walk finds the rest) and the next one.
	tops [cursorTops]span
	n, k int
}

// cursorTops is how many top-level members a Cursor records as Start
// validates: an answer has about eight (OpenAI's id, object, created,
// model, choices, usage, system_fingerprint, service_tier).
const cursorTops = 12

// Start validates b as Reset does (Valid, then a top-level object) and
// places c before its first member. The validation records where the
// members are, so that Next does not walk b again.
func (c *Cursor) Start(b []byte) error {
	c.b, c.i, c.n, c.k = nil, 0, 0, 0
	n, ok := valid(b, c.tops[:])
	if !ok {
		return syntaxError(b)
	}
	if b[skipSpace(b, 0)] != '{' { // valid: a value is there
		return ErrNotObject
	}
	c.b, c.n, c.i = b, n, len(b)
	return nil
}

// StartValid places c before the first member of b, which the caller knows
// to be valid JSON (a member value of a validated body); it reports false
// when b is not an object.
func (c *Cursor) StartValid(b []byte) bool {
	c.b, c.i, c.n, c.k = nil, 0, 0, 0
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	c.b, c.i = b, skipSpace(b, i+1)
	return true
}

// Next returns the next member: its key as written between the quotes
// (escapes not decoded: see KeyIs) and the raw bytes of its value. It
// reports false after the last member.
func (c *Cursor) Next() (key, value []byte, ok bool) {
	if c.k < c.n && c.k < len(c.tops) {
		s := &c.tops[c.k]
		c.k++
		if c.k == len(c.tops) && c.n > c.k {
			// More members than were recorded: walk on from the next.
			i := skipSpace(c.b, s.end) // ','
			c.i = skipSpace(c.b, i+1)
		}
		return c.b[s.key+1 : s.keyEnd-1], c.b[s.val:s.end], true
	}
	b, i := c.b, c.i
	if i >= len(b) || b[i] == '}' {
		c.i = len(b)
		return nil, nil, false
	}
	keyEnd := skipString(b, i)
	key = b[i+1 : keyEnd-1]
	i = skipSpace(b, keyEnd)
	i = skipSpace(b, i+1) // ':'
	valEnd := skipValue(b, i)
	value = b[i:valEnd]
	i = skipSpace(b, valEnd)
	if b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	c.i = i
	return key, value, true
}

// KeyIs reports whether a key as Next returns it names name exactly once
// its escapes are decoded (Object.Get's comparison).
func KeyIs(key []byte, name string) bool {
	if bytes.IndexByte(key, '\\') < 0 {
		return string(key) == name
	}
	return unescapeKey(key) == name
}

// KeyFold reports whether a key as Next returns it matches name the way
// encoding/json matches a member to a struct field: its escapes decoded,
// then equal under Unicode case folding (bytes.EqualFold).
func KeyFold(key []byte, name string) bool {
	if bytes.IndexByte(key, '\\') < 0 {
		return bytes.EqualFold(key, []byte(name))
	}
	return bytes.EqualFold([]byte(unescapeKey(key)), []byte(name))
}

// unescapeKey decodes a key with escapes as encoding/json does (the rare
// path: invalid UTF-8 becomes U+FFFD there as here).
func unescapeKey(key []byte) string {
	q := make([]byte, 0, len(key)+2)
	q = append(append(append(q, '"'), key...), '"')
	var k string
	_ = json.Unmarshal(q, &k)
	return k
}
