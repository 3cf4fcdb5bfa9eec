package usage

import (
	"encoding/json"
	"strings"
	"testing"
)

// parseDecoder is Parse as it was written before the hand scanner: the
// reference every input must agree with.
func parseDecoder(raw []byte) (Usage, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return Usage{}, false
	}
	var o OpenAI
	if json.Unmarshal(raw, &o) != nil {
		return Usage{}, false
	}
	return o.Usage(), true
}

// parseCases are usage members the scanner could get wrong: escapes and
// case folding in names, repeats, null, merging details, numbers at and
// past int64's edges, values of every JSON type where a count or a details
// object belongs, nesting, whitespace, and invalid JSON.
var parseCases = []string{
	``, `null`, `[]`, `"x"`, `1`, `{}`, ` {}`, `{} `, "{\n}",
	`{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}`,
	`{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,"prompt_tokens_details":{"cached_tokens":100,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":12,"accepted_prediction_tokens":0}}`,
	`{"prompt_tokens":1,"prompt_tokens":2}`,
	`{"prompt_tokens":1,"prompt_tokens":null}`,
	`{"prompt_tokens":null}`,
	`{"PROMPT_TOKENS":3}`, `{"Prompt_Tokens":3,"prompt_tokens":4}`, `{"prompt_tokens":4,"PROMPT_tokens":3}`,
	"{\"prompt_to\u212aens\":5}", // KELVIN SIGN folds to k
	"{\"prompt_token\u017f\":5}", // LATIN SMALL LETTER LONG S folds to s
	`{"prompt_to\u212aens":5}`,   // the same, escaped
	`{"\u0070rompt_tokens":6}`, `{"prompt\u005ftokens":7}`, `{"prompt_tokens\u0000":7}`,
	`{"prompt_tokens ":7}`, `{" prompt_tokens":7}`, `{"prompttokens":7}`, `{"prompt-tokens":7}`,
	"{\"prompt_tokens\xff\":7}", `{"prompt_tokens\ud800":7}`,
	`{"prompt_tokens":1.0}`, `{"prompt_tokens":1e2}`, `{"prompt_tokens":1E2}`, `{"prompt_tokens":-0}`,
	`{"prompt_tokens":-0.0}`, `{"prompt_tokens":0}`, `{"prompt_tokens":-1}`,
	`{"prompt_tokens":9223372036854775807}`, `{"prompt_tokens":9223372036854775808}`,
	`{"prompt_tokens":-9223372036854775808}`, `{"prompt_tokens":-9223372036854775809}`,
	`{"prompt_tokens":18446744073709551615}`, `{"prompt_tokens":18446744073709551616}`,
	`{"prompt_tokens":99999999999999999999999999999}`, `{"prompt_tokens":92233720368547758070}`,
	`{"prompt_tokens":"7"}`, `{"prompt_tokens":true}`, `{"prompt_tokens":false}`, `{"prompt_tokens":[]}`,
	`{"prompt_tokens":{}}`, `{"prompt_tokens":{"prompt_tokens":1}}`,
	`{"total_tokens":"x"}`, `{"total_tokens":{"a":[1]}}`, `{"total_tokens":null}`, `{"total_tokens":1.5}`, `{"TOTAL_TOKENS":[]}`,
	`{"prompt_tokens_details":null}`, `{"prompt_tokens_details":{}}`, `{"prompt_tokens_details":3}`,
	`{"prompt_tokens_details":"x"}`, `{"prompt_tokens_details":[]}`, `{"prompt_tokens_details":true}`,
	`{"prompt_tokens_details":{"cached_tokens":3},"prompt_tokens_details":null}`,
	`{"prompt_tokens_details":{"cached_tokens":3},"prompt_tokens_details":{}}`,
	`{"prompt_tokens_details":{"cached_tokens":3},"prompt_tokens_details":null,"prompt_tokens_details":{}}`,
	`{"prompt_tokens_details":{"cached_tokens":3},"prompt_tokens_details":{"cached_tokens":null}}`,
	`{"prompt_tokens_details":{"cached_tokens":3,"cached_tokens":4}}`,
	`{"prompt_tokens_details":{"CACHED_TOKENS":3}}`, `{"prompt_tokens_details":{"cached_tokens":1.5}}`,
	`{"prompt_tokens_details":{"cached_tokens":"1"}}`, `{"prompt_tokens_details":{"reasoning_tokens":1}}`,
	`{"completion_tokens_details":{"reasoning_tokens":2},"completion_tokens_details":{"cached_tokens":1}}`,
	`{"completion_tokens_details":{"reasoning_tokens":{"x":1}}}`,
	`{"nested":{"prompt_tokens":1,"usage":{"completion_tokens":2}},"completion_tokens":3}`,
	`{"x":[{"prompt_tokens":1}],"y":"\"prompt_tokens\":9","prompt_tokens":2}`,
	`{ "prompt_tokens" : 5 , "completion_tokens" : 6 }`,
	"{\t\"prompt_tokens\"\n:\r5\n}",
	`{"prompt_tokens":5,}`, `{"prompt_tokens":5`, `{"prompt_tokens":05}`, `{"prompt_tokens":+5}`,
	`{"prompt_tokens":5}x`, `{"prompt_tokens":5} {}`, `{"a":"\x01"}`, `{'a':1}`,
	`{"a":"\\","prompt_tokens":8}`, `{"a\\":"b","prompt_tokens":8}`, `{"a\"prompt_tokens":8}`,
}

func TestParseMatchesDecoder(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001)
	for _, raw := range append(parseCases, deep, `{"prompt_tokens":1,"x":`+strings.Repeat("[", 10001)+strings.Repeat("]", 10001)+"}") {
		got, ok := Parse([]byte(raw))
		want, wantOK := parseDecoder([]byte(raw))
		if got != want || ok != wantOK {
			t.Errorf("Parse(%.80q) = %+v, %v; encoding/json gives %+v, %v", raw, got, ok, want, wantOK)
		}
		if json.Valid([]byte(raw)) {
			if got, ok := ParseValid([]byte(raw)); got != want || ok != wantOK {
				t.Errorf("ParseValid(%.80q) = %+v, %v; encoding/json gives %+v, %v", raw, got, ok, want, wantOK)
			}
		}
	}
}

func FuzzParseMatchesDecoder(f *testing.F) {
	for _, raw := range parseCases {
		f.Add([]byte(raw))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, ok := Parse(raw)
		want, wantOK := parseDecoder(raw)
		if got != want || ok != wantOK {
			t.Fatalf("Parse(%q) = %+v, %v; encoding/json gives %+v, %v", raw, got, ok, want, wantOK)
		}
		if json.Valid(raw) {
			if got, ok := ParseValid(raw); got != want || ok != wantOK {
				t.Fatalf("ParseValid(%q) = %+v, %v; encoding/json gives %+v, %v", raw, got, ok, want, wantOK)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	raw := []byte(`{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,"prompt_tokens_details":{"cached_tokens":100},"completion_tokens_details":{"reasoning_tokens":12}}`)
	b.Run("decoder", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			parseDecoder(raw)
		}
	})
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Parse(raw)
		}
	})
}
