// Package jsonbody reads and edits the top-level members of a JSON object
// without decoding the rest of it. The gateway forwards request bodies
// untouched except for the few members it owns (model, stream_options), so it
// needs spans into the raw bytes, not a decoded tree.
package jsonbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
)

// ErrNotObject is returned when the body is not a single JSON object.
var ErrNotObject = errors.New("request body must be a JSON object")

// Member is one top-level member: its (unescaped) key and the raw bytes of its value.
type Member struct {
	Key   string
	Value []byte // raw JSON value, a subslice of the scanned body
	start int    // offset of the key's opening quote
	end   int    // offset just past the value
}

// Object is a scanned top-level JSON object.
type Object struct {
	body    []byte
	Members []Member
}

// Scan validates b as one JSON object and records its top-level members.
// Nested values are validated but not decoded.
func Scan(b []byte) (*Object, error) {
	o := &Object{}
	if err := o.Reset(b); err != nil {
		return nil, err
	}
	return o, nil
}

// Reset rescans o over b, reusing its member slice.
func (o *Object) Reset(b []byte) error {
	o.body = b
	if cap(o.Members) == 0 {
		// One allocation for the members a request has, not one per
		// doubling from one.
		o.Members = make([]Member, 0, 6)
	}
	o.Members = o.Members[:0]
	var tops [16]span // the members valid records as it checks b
	n, ok := valid(b, tops[:])
	if !ok {
		return syntaxError(b)
	}
	i := skipSpace(b, 0)
	if b[i] != '{' { // valid: a value is there
		return ErrNotObject
	}
	for _, s := range tops[:min(n, len(tops))] {
		o.add(b, s.key, s.keyEnd, s.val, s.end)
	}
	if n <= len(tops) {
		return nil
	}
	// More members than were recorded: walk on from the next.
	i = skipSpace(b, tops[len(tops)-1].end) // ','
	i = skipSpace(b, i+1)
	for {
		keyStart := i
		keyEnd := skipString(b, i)
		i = skipSpace(b, keyEnd)
		i = skipSpace(b, i+1) // ':'
		valStart := i
		valEnd := skipValue(b, i)
		o.add(b, keyStart, keyEnd, valStart, valEnd)
		i = skipSpace(b, valEnd)
		if b[i] == '}' {
			return nil
		}
		i = skipSpace(b, i+1) // ','
	}
}

// add appends the member whose key's quote is at keyStart, whose key ends
// (past its quote) at keyEnd and whose value is b[valStart:valEnd].
func (o *Object) add(b []byte, keyStart, keyEnd, valStart, valEnd int) {
	key := b[keyStart+1 : keyEnd-1]
	var k string // no pointer to it: it would move to the heap, for every member
	if bytes.IndexByte(key, '\\') >= 0 {
		k = unescapeKey(key)
	} else {
		k = keyString(key)
	}
	o.Members = append(o.Members, Member{Key: k, Value: b[valStart:valEnd], start: keyStart, end: valEnd})
}

// keyString is string(key), without a copy for the members inference
// requests commonly have: each is a constant (a switch on string(key)
// does not allocate).
func keyString(key []byte) string {
	switch string(key) {
	case "model":
		return "model"
	case "messages":
		return "messages"
	case "max_tokens":
		return "max_tokens"
	case "max_completion_tokens":
		return "max_completion_tokens"
	case "stream":
		return "stream"
	case "stream_options":
		return "stream_options"
	case "temperature":
		return "temperature"
	case "top_p":
		return "top_p"
	case "n":
		return "n"
	case "user":
		return "user"
	case "tools":
		return "tools"
	case "tool_choice":
		return "tool_choice"
	case "response_format":
		return "response_format"
	case "stop":
		return "stop"
	case "seed":
		return "seed"
	case "metadata":
		return "metadata"
	case "input":
		return "input"
	case "prompt":
		return "prompt"
	case "system":
		return "system"
	case "include_usage":
		return "include_usage"
	}
	return string(key)
}

// Body returns the bytes o was scanned from.
func (o *Object) Body() []byte { return o.body }

// Get returns the raw value of key, or nil. When a key repeats, the last one
// wins, as in encoding/json.
func (o *Object) Get(key string) []byte {
	for i := len(o.Members) - 1; i >= 0; i-- {
		if o.Members[i].Key == key {
			return o.Members[i].Value
		}
	}
	return nil
}

// String returns key's value when it is a JSON string.
func (o *Object) String(key string) (string, bool) { return StringOf(o.Get(key)) }

// StringOf is the valid JSON value v as a Go string when it is a string.
func StringOf(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), true
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}

// Bool returns key's value when it is true or false.
func (o *Object) Bool(key string) (val, ok bool) {
	switch string(o.Get(key)) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// Int returns key's value when it is an integer.
func (o *Object) Int(key string) (int64, bool) {
	v := o.Get(key)
	if len(v) == 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

// Has reports whether key is present (with any value, null included).
func (o *Object) Has(key string) bool { return o.Get(key) != nil }

// IsNull reports whether key is absent or null.
func (o *Object) IsNull(key string) bool {
	v := o.Get(key)
	return v == nil || string(v) == "null"
}

// With returns a new body in which every member named key has the raw JSON
// value val, appending the member when it is absent. Other bytes are kept
// exactly as they were. o is not modified.
func (o *Object) With(key string, val []byte) []byte {
	out := make([]byte, 0, len(o.body)+len(key)+len(val)+4)
	last := 0
	found := false
	for _, m := range o.Members {
		if m.Key != key {
			continue
		}
		found = true
		valStart := m.end - len(m.Value)
		out = append(out, o.body[last:valStart]...)
		out = append(out, val...)
		last = m.end
	}
	if found {
		return append(out, o.body[last:]...)
	}
	closing := bytes.LastIndexByte(o.body, '}')
	out = append(out, o.body[:closing]...)
	if len(o.Members) > 0 {
		out = append(out, ',')
	}
	out = append(out, Quote(key)...)
	out = append(out, ':')
	out = append(out, val...)
	return append(out, o.body[closing:]...)
}

// Without returns a body without the members named by keys: the other
// members' bytes as they were, in order, within "{" and "}" (whitespace
// between members is not kept). When no member is named, it returns o's
// own body. o is not modified.
func (o *Object) Without(keys ...string) []byte {
	drop := func(k string) bool {
		for _, d := range keys {
			if k == d {
				return true
			}
		}
		return false
	}
	found := false
	for _, m := range o.Members {
		if drop(m.Key) {
			found = true
			break
		}
	}
	if !found {
		return o.body
	}
	out := make([]byte, 0, len(o.body))
	out = append(out, '{')
	for _, m := range o.Members {
		if drop(m.Key) {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, o.body[m.start:m.end]...)
	}
	return append(out, '}')
}

// Quote returns s as a JSON string literal.
func Quote(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}

func syntaxError(b []byte) error {
	var v any
	err := json.Unmarshal(b, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return errors.New("invalid JSON at byte " + strconv.FormatInt(se.Offset, 10) + ": " + se.Error())
	}
	if err != nil {
		return errors.New("invalid JSON: " + err.Error())
	}
	return errors.New("invalid JSON")
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the offset just past the string starting at b[i] == '"'.
// b is known to be valid JSON.
func skipString(b []byte, i int) int {
	i++
	for i < len(b) {
		switch b[i] {
		case '\\':
			i += 2
		case '"':
			return i + 1
		default:
			i++
		}
	}
	return i
}

// skipValue returns the offset just past the value starting at b[i].
// b is known to be valid JSON.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}
