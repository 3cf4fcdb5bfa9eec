package guardrail

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"strings"
	"testing"
	"unicode/utf8"
)

// applyEdits is the text edits make of t.
func applyEdits(t string, edits []Edit) string {
	var b strings.Builder
	at := 0
	for _, e := range edits {
		b.WriteString(t[at:e.Start])
		b.WriteString(e.New)
		at = e.End
	}
	return b.String() + t[at:]
}

// checkPatched holds RewriteEdits to Rewrite on body with the texts edits
// make: the same body outside the changed spans, each span decoding to
// its text as Rewrite's does (when the text is UTF-8, as texts masked at
// character boundaries with UTF-8 placeholders are), and valid JSON
// where the body was.
func checkPatched(t *testing.T, body []byte, edits [][]Edit) {
	t.Helper()
	spans := Texts(body)
	texts := make([]string, len(spans))
	for i, s := range spans {
		texts[i] = s.Text
		if i < len(edits) && edits[i] != nil {
			texts[i] = applyEdits(s.Text, edits[i])
		}
	}
	got := RewriteEdits(body, spans, texts, edits)
	want := Rewrite(body, spans, texts)
	if json.Valid(body) && !json.Valid(got) {
		t.Fatalf("RewriteEdits(%s, %v) = %s: not JSON", body, edits, got)
	}
	gs, ws := Texts(got), Texts(want)
	if len(gs) != len(ws) {
		t.Fatalf("RewriteEdits(%s, %v) = %s: %d texts, Rewrite's %d", body, edits, got, len(gs), len(ws))
	}
	ga, wa := 0, 0
	for i := range gs {
		if !bytes.Equal(got[ga:gs[i].Start], want[wa:ws[i].Start]) {
			t.Fatalf("RewriteEdits(%s, %v) = %s, around the texts unlike Rewrite's %s", body, edits, got, want)
		}
		// A text that is not UTF-8 has no JSON encoding that decodes to
		// it: either reading will do.
		if utf8.ValidString(texts[i]) && (gs[i].Text != texts[i] || ws[i].Text != texts[i]) {
			t.Fatalf("RewriteEdits(%s, %v) = %s: text %d decodes to %q, Rewrite's to %q, want %q", body, edits, got, i, gs[i].Text, ws[i].Text, texts[i])
		}
		ga, wa = gs[i].End, ws[i].End
	}
	if !bytes.Equal(got[ga:], want[wa:]) {
		t.Fatalf("RewriteEdits(%s, %v) = %s, after the texts unlike Rewrite's %s", body, edits, got, want)
	}
}

// TestRewriteEditsEveryCut patches one placeholder over every range of
// texts full of escapes (each kind, \u escapes of one to three UTF-8
// bytes, surrogate pairs, lone surrogates, U+2028, invalid UTF-8), in
// bodies whose keys and other values hold the same text.
func TestRewriteEditsEveryCut(t *testing.T) {
	contents := []string{
		`plain text ops@example.com end`,
		`a\"b\\c\/d\be\ff\ng\rh\ti`,
		`caf\u00e9 \u20ac \u0041 \u00E9\u00e9`,
		`smile \ud83d\ude00 x \uD83D\uDE00`,
		`lone \ud800 x \udc00 \ud83d\u0041 \ud83dz`,
		"raw é € 😀 \u2028 \u2029 end",
		"bad \xff\xfe utf8 \\n",
		"bad \xff\xfe utf8 unescaped",
		`\u0022\u005c\u002f\u000a`,
		``,
		`x`,
	}
	tags := []string{"<EMAIL_ADDRESS>", "", `<a"b\c>`, "é\u2028\n", "\xff"}
	for _, c := range contents {
		body := []byte(`{"` + c + `":"` + c + `","messages":[{"role":"user","content":"` + c + `"},{"role":"user","content":"` + c + `"}],"x":"` + c + `"}`)
		spans := Texts(body)
		if len(spans) != 2 {
			t.Fatalf("Texts(%s) = %v", body, spans)
		}
		n := len(spans[0].Text)
		for a := 0; a <= n; a++ {
			for b := a; b <= n; b++ {
				for _, tag := range tags {
					checkPatched(t, body, [][]Edit{{{Start: a, End: b, New: tag}}, nil})
					checkPatched(t, body, [][]Edit{nil, {{Start: 0, End: a, New: tag}, {Start: b, End: n, New: tag}}})
				}
			}
		}
	}
}

// TestRewriteEditsRandom: random texts of escapes, raw bytes and
// surrogates, random edits.
func TestRewriteEditsRandom(t *testing.T) {
	pieces := []string{"a", "Z", " ", "@", "0", `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\u0041`, `\u00e9`,
		`\u20AC`, `\ud83d\ude00`, `\ud83d`, `\ude00`, "é", "€", "😀", "\u2028", "\xff", "\xe2\x82", `\u0000`, "<", ">"}
	rng := rand.New(rand.NewSource(27))
	for range 20000 {
		var c strings.Builder
		for range rng.Intn(12) {
			c.WriteString(pieces[rng.Intn(len(pieces))])
		}
		body := []byte(`{"messages":[{"role":"user","content":"` + c.String() + `"}],"k":"` + c.String() + `"}`)
		spans := Texts(body)
		if len(spans) != 1 {
			t.Fatalf("Texts(%s) = %v", body, spans)
		}
		n := len(spans[0].Text)
		var edits []Edit
		for at := 0; at < n && rng.Intn(3) > 0; {
			a := at + rng.Intn(n-at+1)
			b := a + rng.Intn(n-a+1)
			edits = append(edits, Edit{Start: a, End: b, New: pieces[rng.Intn(len(pieces))]})
			at = b + 1
		}
		if edits == nil {
			edits = []Edit{{Start: 0, End: n, New: "<X>"}}
		}
		checkPatched(t, body, [][]Edit{edits})
	}
}

// TestRunEditsPatchTheBody: the edits Run returns from the PII and
// secrets guardrails patch the body to what re-encoding gives; a text
// two guardrails changed has none (and is re-encoded).
func TestRunEditsPatchTheBody(t *testing.T) {
	s := build(t, `
  - guardrail_name: pii
    litellm_params: {guardrail: litellm_pii, mode: pre_call}
  - guardrail_name: secrets
    litellm_params: {guardrail: hide-secrets, mode: pre_call}
`)
	gs, err := s.Select([]string{"pii", "secrets"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		content string
		edits   bool // Result.Edits known for the text
	}{
		{`mail ops@example.com, caf\u00e9 \ud83d\ude00 and ops@example.com\n`, true},
		{`key sk-proj-abcdefghijklmnop1234 \"quoted\"`, true},
		{`both ops@example.com and sk-proj-abcdefghijklmnop1234`, false},
		{`nothing here`, false},
	}
	for _, tt := range tests {
		body := []byte(`{"model":"m","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"` + tt.content + `"}]}`)
		spans := Texts(body)
		in := &Input{Model: "m"}
		for _, sp := range spans {
			in.Texts = append(in.Texts, sp.Text)
		}
		r := Run(t.Context(), gs, PreCall, in)
		if got := r.Edits != nil && r.Edits[1] != nil; got != tt.edits {
			t.Fatalf("%s: edits known %v, want %v (%+v)", tt.content, got, tt.edits, r.Edits)
		}
		if r.Texts == nil {
			continue
		}
		if r.Edits != nil && r.Edits[0] != nil {
			t.Errorf("%s: edits for the unchanged system text: %+v", tt.content, r.Edits[0])
		}
		if r.Edits != nil && r.Edits[1] != nil && applyEdits(spans[1].Text, r.Edits[1]) != r.Texts[1] {
			t.Errorf("%s: edits make %q, Texts has %q", tt.content, applyEdits(spans[1].Text, r.Edits[1]), r.Texts[1])
		}
		got, want := RewriteEdits(body, spans, r.Texts, r.Edits), Rewrite(body, spans, r.Texts)
		gs, ws := Texts(got), Texts(want)
		if !json.Valid(got) || len(gs) != 2 || gs[1].Text != ws[1].Text || gs[1].Text != r.Texts[1] || string(got[:gs[1].Start]) != string(want[:ws[1].Start]) {
			t.Errorf("%s: RewriteEdits = %s, Rewrite = %s", tt.content, got, want)
		}
	}
}

// TestRewriteEditsKeepsEncoding: a patched span keeps its escapes between
// the edits (what re-encoding would not), so the patch is what ran.
func TestRewriteEditsKeepsEncoding(t *testing.T) {
	body := []byte(`{"messages":[{"role":"user","content":"caf\u00e9 ops@example.com \ud83d\ude00\n"}]}`)
	spans := Texts(body)
	at := strings.Index(spans[0].Text, "ops@")
	edits := [][]Edit{{{Start: at, End: at + len("ops@example.com"), New: "<EMAIL_ADDRESS>"}}}
	got := RewriteEdits(body, spans, []string{applyEdits(spans[0].Text, edits[0])}, edits)
	if want := `{"messages":[{"role":"user","content":"caf\u00e9 <EMAIL_ADDRESS> \ud83d\ude00\n"}]}`; string(got) != want {
		t.Errorf("RewriteEdits = %s, want %s", got, want)
	}
}

// TestRewriteEditsThatDoNotMakeTheText: edits that do not turn the span's
// text into the new one (out of order, out of range, another text) are
// not used: the span is re-encoded, as Rewrite does.
func TestRewriteEditsThatDoNotMakeTheText(t *testing.T) {
	body := []byte(`{"messages":[{"role":"user","content":"abc def ghi"}]}`)
	spans := Texts(body)
	for _, edits := range [][]Edit{
		{{Start: 4, End: 7, New: "<X>"}},                                  // says "abc <X> ghi"
		{{Start: 8, End: 11, New: "<Y>"}, {Start: 0, End: 3, New: "<X>"}}, // out of order
		{{Start: 8, End: 12, New: "<Y>"}},                                 // past the end
		{{Start: 5, End: 4, New: "<Y>"}},                                  // backwards
	} {
		got := RewriteEdits(body, spans, []string{"<Z> def ghi"}, [][]Edit{edits})
		if want := Rewrite(body, spans, []string{"<Z> def ghi"}); string(got) != string(want) {
			t.Errorf("edits %v: RewriteEdits = %s, want %s", edits, got, want)
		}
	}
}
