package redact

import (
	"strings"
	"testing"
)

const key = "sk-proj-abcDEF1234567890xyz"

// TestEscapesAreWordBoundaries: text that still holds JSON's escapes (a
// tool call's arguments, a field cut at the cap) has a key on its own
// line written after "\n": the escape's letter does not glue it to a word.
func TestEscapesAreWordBoundaries(t *testing.T) {
	r := all(t)
	for _, in := range []string{`# keys\n` + key + `\n`, `key\t` + key, `call\n(555) 123-4567`} {
		if out := r.String(in); strings.Contains(out, "abcDEF") || strings.Contains(out, "123-4567") {
			t.Errorf("%q: %q", in, out)
		}
	}
}

// TestToolArgumentsAreWalked: a string holding a JSON text (tool-call
// arguments) is decoded in turn, so a key escaped in it is found.
func TestToolArgumentsAreWalked(t *testing.T) {
	r := all(t)
	in := `{"arguments":"{\"path\":\"k\",\"content\":\"\\u0073k-proj-abcDEF1234567890xyz\"}"}`
	out := string(r.JSON([]byte(in)))
	if strings.Contains(out, "abcDEF") || !strings.Contains(out, "<API_KEY>") || !strings.Contains(out, `\"path\"`) {
		t.Errorf("%s", out)
	}
}

// TestJSONPrefixDecodesStrings: the start of a JSON text, cut anywhere
// (even inside an escape), has its strings decoded before masking.
func TestJSONPrefixDecodesStrings(t *testing.T) {
	r := all(t)
	for _, in := range []string{
		`[{"content":"my key:\n` + key + `\nplease`,
		`[{"content":"my key: \u0073k-proj-abcDEF1234567890xyz and \u00`,
		`[{"content":"x"},{"content":"key\t` + key + `\`,
	} {
		out := string(r.JSONPrefix([]byte(in)))
		if strings.Contains(out, "abcDEF") || !strings.Contains(out, "<API_KEY>") {
			t.Errorf("%q: %q", in, out)
		}
	}
}

// TestDateTimesAreNotPhones: a date with a time or a number beside it has
// ten digits with separators, but is not a phone number; a real one is.
func TestDateTimesAreNotPhones(t *testing.T) {
	r := all(t)
	for _, in := range []string{"on 2024-01-15 10:30 please", "15.01.2024 10:30", "01-15-2024 09:45", "at 10:30 2024-01-15"} {
		if out := r.String(in); out != in {
			t.Errorf("%q became %q", in, out)
		}
	}
	if out := r.String("call 555-123-4567 on 2024-01-15"); out != "call <PHONE_NUMBER> on 2024-01-15" {
		t.Errorf("%q", out)
	}
}

// TestBasicInProseIsNotACredential: "basic" followed by a long word with
// a digit is prose unless the word is base64 (user:password).
func TestBasicInProseIsNotACredential(t *testing.T) {
	r := all(t)
	for in, want := range map[string]string{
		"a basic setup-2024-instructions guide":         "a basic setup-2024-instructions guide",
		"Authorization: Basic dXNlcjpwYXNzd29yZDEyMw==": "Authorization: Basic <AUTHORIZATION>",
		"Bearer abc123def456ghi789jkl.x-y":              "Bearer <AUTHORIZATION>",
	} {
		if out := r.String(in); out != want {
			t.Errorf("%q became %q, want %q", in, out, want)
		}
	}
}
