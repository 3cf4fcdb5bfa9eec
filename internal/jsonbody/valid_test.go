package jsonbody

import (
	"encoding/json"
	"strings"
	"testing"
)

// validCases are bodies on each side of every rule json.Valid applies.
var validCases = []string{
	``, ` `, "\t\r\n", `{}`, ` {} `, `[]`, `[ ]`, `{ }`, `{`, `}`, `[`, `]`, `{]`, `[}`, `[[]]`, `[[]`, `[]]`,
	`{"a":1}`, `{"a" : 1 , "b" : [1, 2] }`, `{"a":1,}`, `{"a":1,"b"}`, `{"a"}`, `{"a":}`, `{a:1}`, `{1:1}`, `{"a":1 "b":2}`,
	`[1,]`, `[,1]`, `[1 2]`, `[1,,2]`, `{,}`, `{"a":1}{}`, `{} {}`, `{}x`, `1 2`, `"a" "b"`,
	`0`, `-0`, `01`, `-01`, `-`, `+1`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e-5`, `1e`, `1e+`, `1.e5`, `1.5e`, `-1.5E-07`,
	`00`, `0.0`, `0e0`, `1x`, `123456789012345678901234567890`, `[0,-0,1.0e10]`, `[01]`, `[-]`, `{"a":-}`, `1.5.5`, `1ee5`,
	`true`, `false`, `null`, `tru`, `truex`, `nul`, `nulll`, `True`, `NULL`, `[true,false,null]`, `[true false]`, `nan`, `Infinity`,
	`""`, `"a"`, `"a`, `"\"`, `"\\"`, `"\/\b\f\n\r\t"`, `"\a"`, `"\u00e9"`, `"\u00E9"`, `"\u00g9"`, `"\u00e"`, `"\u"`, `"\ud800"`,
	"\"a\x00b\"", "\"a\x1fb\"", "\"a\x7fb\"", "\"\xff\xfe\"", "\"\xc3\xa9\"", "\"a\tb\"", "\"a\nb\"", "{\"\x01\":1}",
	"\xef\xbb\xbf{}", "{}\x00", "\x00", "\v{}", "\f{}", "{}\v", "[1,\v2]",
	`{"a":{"b":{"c":[{"d":[]}]}}}`, `{"a":{"b":{"c":[{"d":[]}]}}`, `[[[[[[[[[[]]]]]]]]]]`, `[[[[[[[[[[]]]]]]]]]`,
	`{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"stream":true}`,
}

func TestValidMatchesEncodingJSON(t *testing.T) {
	tests := validCases
	for _, n := range []int{maxDepth - 1, maxDepth, maxDepth + 1} {
		tests = append(tests,
			strings.Repeat("[", n)+strings.Repeat("]", n),
			strings.Repeat(`{"a":`, n-1)+"{}"+strings.Repeat("}", n-1),
			strings.Repeat("[", n)+"1"+strings.Repeat("]", n),
			strings.Repeat("[", n)+strings.Repeat("]", n-1))
	}
	// Strings read eight bytes at a time: each byte that ends or breaks one
	// (and some that do not) at every offset of a longer string.
	for _, c := range []string{`"`, `\`, `\"`, `\u00e9`, `\x`, "\x00", "\x01", "\x1f", " ", "\x7f", "\x80", "\xff", "!", "#", "[", "]", "\\"} {
		for n := range 20 {
			tests = append(tests, `["`+strings.Repeat("a", n)+c+strings.Repeat("b", 19-n)+`"]`)
		}
	}
	for _, tt := range tests {
		if got, want := Valid([]byte(tt)), json.Valid([]byte(tt)); got != want {
			t.Errorf("Valid(%.80q) = %v, json.Valid says %v", tt, got, want)
		}
	}
}

func FuzzValid(f *testing.F) {
	for _, s := range validCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Valid(b), json.Valid(b); got != want {
			t.Fatalf("Valid(%q) = %v, json.Valid says %v", b, got, want)
		}
	})
}

// BenchmarkValid checks the mock upstream's answer, as answerOf does for
// every whole answer,
func BenchmarkValid(b *testing.B) {
	body := []byte(`{"id":"chatcmpl-mock1","object":"chat.completion","created":1796023133,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! You said: Say hello to the benchmark."},"finish_reason":"stop"}],"usage":{"prompt_tokens":6,"completion_tokens":8,"total_tokens":14}}`)
	// and a request with a 4 KB prompt.
	long := []byte(`{"model":"gpt-4","messages":[{"role":"user","content":"` + strings.Repeat("Say hello to the benchmark. ", 150) + `"}]}`)
	for _, tt := range []struct {
		name  string
		valid func([]byte) bool
	}{{"jsonbody", Valid}, {"encoding_json", json.Valid}} {
		for _, in := range []struct {
			name string
			b    []byte
		}{{"answer", body}, {"prompt4k", long}} {
			b.Run(tt.name+"/"+in.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(in.b)))
				for b.Loop() {
					if !tt.valid(in.b) {
						b.Fatal("invalid")
					}
				}
			})
		}
	}
}
