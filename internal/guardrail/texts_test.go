package guardrail

import (
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

// textsWithKeys is Texts as it was before keyName: every key decoded to a
// string of its own. TestTextsKeyNames holds Texts to it.
func textsWithKeys(body []byte) []Span {
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

// TestTextsKeyNames: Texts names only the keys that decide anything; its
// spans are those of the version that kept every key, on random bodies of
// text keys, other keys, escaped keys ("con\u0074ent") and nesting.
func TestTextsKeyNames(t *testing.T) {
	keys := []string{`"content"`, `"input"`, `"text"`, `"role"`, `"messages"`, `"con\u0074ent"`, `"\u0069nput"`, `"x"`, `""`, `"arguments"`, `"Content"`, `"content "`}
	vals := []string{`"a"`, `"b\n"`, `1`, `null`, `"c\"d"`}
	rng := rand.New(rand.NewSource(27))
	var value func(b *strings.Builder, depth int)
	value = func(b *strings.Builder, depth int) {
		switch r := rng.Intn(4); {
		case depth > 4 || r == 0:
			b.WriteString(vals[rng.Intn(len(vals))])
		case r == 1:
			b.WriteByte('[')
			for i := range rng.Intn(4) {
				if i > 0 {
					b.WriteByte(',')
				}
				value(b, depth+1)
			}
			b.WriteByte(']')
		default:
			b.WriteByte('{')
			for i := range rng.Intn(4) {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(keys[rng.Intn(len(keys))])
				b.WriteByte(':')
				value(b, depth+1)
			}
			b.WriteByte('}')
		}
	}
	found := 0
	for range 20000 {
		var b strings.Builder
		value(&b, 0)
		body := []byte(b.String())
		got, want := Texts(body), textsWithKeys(body)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Texts(%s) = %+v, want %+v", body, got, want)
		}
		found += len(got)
	}
	if found < 10000 {
		t.Fatalf("only %d texts in the random bodies", found)
	}
}

// TestTextsShared: TextsShared finds what Texts finds; its texts without
// escapes are body's own bytes, those with escapes decoded copies.
func TestTextsShared(t *testing.T) {
	body := []byte(`{"messages":[{"role":"user","content":"plain"},{"role":"user","content":"esc\n"},{"role":"user","content":""}]}`)
	got, want := TextsShared(body), Texts(body)
	if !reflect.DeepEqual(got, want) || len(got) != 3 {
		t.Fatalf("TextsShared = %+v, Texts = %+v", got, want)
	}
	body[strings.Index(string(body), "plain")] = 'P'
	if got[0].Text != "Plain" || want[0].Text != "plain" || got[1].Text != "esc\n" {
		t.Errorf("after writing the body: shared %q, copied %q, escaped %q", got[0].Text, want[0].Text, got[1].Text)
	}
}
