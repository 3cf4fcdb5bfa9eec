package jsonbody

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// refMember is one top-level member as the walk before valid recorded
// members found it: the key as written, its quote's offset, its value.
type refMember struct {
	key              []byte
	keyStart, valEnd int
	value            []byte
}

// refMembers is the walk Reset and Cursor.Next made over a body Valid had
// accepted before valid recorded its members (skipString, skipSpace and
// skipValue from the first member to the closing brace), kept here as the
// reference the recording is held to. It is nil for a body that is not an
// object.
func refMembers(b []byte) []refMember {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil
	}
	ms := []refMember{}
	i = skipSpace(b, i+1)
	if b[i] == '}' {
		return ms
	}
	for {
		keyStart := i
		keyEnd := skipString(b, i)
		i = skipSpace(b, keyEnd)
		i = skipSpace(b, i+1) // ':'
		valEnd := skipValue(b, i)
		ms = append(ms, refMember{key: b[keyStart+1 : keyEnd-1], keyStart: keyStart, valEnd: valEnd, value: b[i:valEnd]})
		i = skipSpace(b, valEnd)
		if b[i] == '}' {
			return ms
		}
		i = skipSpace(b, i+1) // ','
	}
}

// checkRecords holds valid's verdict and records, for every size of tops
// (none, too few, enough), and Reset's and a Cursor's members, to
// json.Valid and refMembers.
func checkRecords(t *testing.T, b []byte) {
	t.Helper()
	want := json.Valid(b)
	var ref []refMember
	if want {
		ref = refMembers(b)
	}
	for _, size := range []int{-1, 0, 1, 2, 7, cursorTops, 16, 64} {
		var tops []span
		if size >= 0 {
			tops = make([]span, size)
		}
		n, ok := valid(b, tops)
		if ok != want {
			t.Fatalf("valid(%.80q, %d tops) = %v, json.Valid says %v", b, size, ok, want)
		}
		if !ok || size < 0 {
			continue
		}
		if n != len(ref) {
			t.Fatalf("valid(%.80q) counted %d members, the walk finds %d", b, n, len(ref))
		}
		for j, s := range tops[:min(n, size)] {
			r := ref[j]
			if s.key != r.keyStart || s.end != r.valEnd || !bytes.Equal(b[s.key+1:s.keyEnd-1], r.key) || !bytes.Equal(b[s.val:s.end], r.value) {
				t.Fatalf("valid(%.80q): member %d recorded as %q: %q at %d, the walk finds %q: %q at %d",
					b, j, b[s.key+1:s.keyEnd-1], b[s.val:s.end], s.key, r.key, r.value, r.keyStart)
			}
		}
	}
	var o Object
	err := o.Reset(b)
	var c Cursor
	cerr := c.Start(b)
	if (err == nil) != (want && ref != nil) || (cerr == nil) != (err == nil) {
		t.Fatalf("Reset(%.80q) = %v, Start %v; json.Valid %v, object %v", b, err, cerr, want, ref != nil)
	}
	if err != nil {
		if _, _, more := c.Next(); more {
			t.Fatalf("a Cursor that failed to start over %.80q gives a member", b)
		}
		return
	}
	if len(o.Members) != len(ref) {
		t.Fatalf("Reset(%.80q) gave %d members, the walk %d", b, len(o.Members), len(ref))
	}
	for j, m := range o.Members {
		r := ref[j]
		if !KeyIs(r.key, m.Key) || !bytes.Equal(m.Value, r.value) || m.start != r.keyStart || m.end != r.valEnd {
			t.Fatalf("Reset(%.80q): member %d is %q: %q, the walk's %q: %q", b, j, m.Key, m.Value, r.key, r.value)
		}
	}
	for j := 0; ; j++ {
		k, v, more := c.Next()
		if !more {
			if j != len(ref) {
				t.Fatalf("Cursor over %.80q gave %d members, the walk %d", b, j, len(ref))
			}
			break
		}
		if j >= len(ref) || !bytes.Equal(k, ref[j].key) || !bytes.Equal(v, ref[j].value) {
			t.Fatalf("Cursor over %.80q: member %d is %q: %q", b, j, k, v)
		}
	}
	if _, _, more := c.Next(); more {
		t.Fatalf("Cursor over %.80q gives a member after the last", b)
	}
}

// recordCases are objects of every member count around the sizes valid
// records (a Cursor's cursorTops, Reset's 16), with members of every kind
// of value and spacing, escaped keys, and the validCases.
func recordCases() [][]byte {
	values := []string{`1`, `-0.5e+3`, `"s"`, `""`, `"a\"b\\"`, `true`, `false`, `null`, `{}`, `[]`, `{ }`, `[ ]`,
		`{"a":{"b":[1,{"c":"}"}]}}`, `[1,[2,[3]],"]"]`, `"\u00e9\/"`, `{"x":1,"y":[true,null]}`}
	keys := []string{`k`, ``, `a\"b`, `\u0041`, `é`, `a b`}
	spaces := []string{``, ` `, "\n\t ", "\r"}
	var out [][]byte
	for n := range 40 {
		for v := range 3 {
			var sb strings.Builder
			sb.WriteString(spaces[(n+v)%len(spaces)] + "{")
			for j := range n {
				if j > 0 {
					sb.WriteString(spaces[(j+v)%len(spaces)] + "," + spaces[(j+v+1)%len(spaces)])
				}
				sp := spaces[(j*v)%len(spaces)]
				fmt.Fprintf(&sb, `%s"%s%d"%s:%s%s`, sp, keys[(j+v)%len(keys)], j, spaces[(j+1)%len(spaces)], sp, values[(j*3+v)%len(values)])
			}
			sb.WriteString(spaces[v%len(spaces)] + "}" + spaces[n%len(spaces)])
			out = append(out, []byte(sb.String()))
		}
	}
	for _, c := range validCases {
		out = append(out, []byte(c))
	}
	return append(out, []byte(`{"a":1,"b":[}`), []byte(`{"a":1,"b":2,}`), []byte(`{"a":1}]`), []byte(`[{"a":1}]`), []byte(`"{\"a\":1}"`))
}

func TestValidRecords(t *testing.T) {
	for _, b := range recordCases() {
		checkRecords(t, b)
	}
}

// FuzzValidRecords: for any bytes, valid recording members says what
// json.Valid says, and records (and Reset and a Cursor give) the members
// the walk before it found.
func FuzzValidRecords(f *testing.F) {
	for _, b := range recordCases() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkRecords(t, b) })
}
