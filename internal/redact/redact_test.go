package redact

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func all(t testing.TB) *Redactor {
	t.Helper()
	r, err := New(All())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRedactString: true positives of every class are masked, and
// look-alikes (numbers failing their checks, words near a prefix) are not.
func TestRedactString(t *testing.T) {
	r := all(t)
	tests := []struct {
		name, in, want string
	}{
		{"openai key", "key sk-proj-Ab3dEfGhIjKlMnOpQrSt here", "key <API_KEY> here"},
		{"anthropic key", "sk-ant-api03-abcDEF123456789012345678", "<API_KEY>"},
		{"virtual key", `"Authorization": "sk-1234"`, `"Authorization": "<API_KEY>"`},
		{"sk word", "we use sk-learn and task-sk-99 here", "we use sk-learn and task-sk-99 here"},
		{"stripe", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "<API_KEY>"},
		{"google", "AIzaSyA1234567890abcdefghijklmnopqrstu", "<API_KEY>"},
		{"github", "ghp_abcdefghijklmnopqrstuvwxyz0123456789 x", "<API_KEY> x"},
		{"github pat", "github_pat_11ABCDEFG0123456789abcdef_xyz", "<API_KEY>"},
		{"slack", "xoxb-1234567890-abcdefghij", "<API_KEY>"},
		{"aws id", "id AKIAIOSFODNN7EXAMPLE.", "id <AWS_ACCESS_KEY_ID>."},
		{"aws id too short", "AKIAIOSFODNN7", "AKIAIOSFODNN7"},
		{"aws secret named", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = <AWS_SECRET_ACCESS_KEY>"},
		{"aws pair", "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "<AWS_ACCESS_KEY_ID> <AWS_SECRET_ACCESS_KEY>"},
		{"jwt", "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U;", "t=<JWT>;"},
		{"pem", "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\nb", "a\n<PRIVATE_KEY>\nb"},
		{"pem cut", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg", "<PRIVATE_KEY>"},
		{"public key kept", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----"},
		{"bearer", "Authorization: Bearer abc123def456ghi789jkl", "Authorization: Bearer <AUTHORIZATION>"},
		{"basic word", "a basic understanding of internationalization", "a basic understanding of internationalization"},
		{"email", "mail jane.doe+x@example.co.uk.", "mail <EMAIL_ADDRESS>."},
		{"email no tld", "user@localhost and a@b", "user@localhost and a@b"},
		{"card", "card 4111 1111 1111 1111 ok", "card <CREDIT_CARD> ok"},
		{"card dashes", "5500-0000-0000-0004", "<CREDIT_CARD>"},
		{"card luhn fails", "4111 1111 1111 1112", "4111 1111 1111 1112"},
		{"ssn", "SSN 123-45-6789.", "SSN <US_SSN>."},
		{"ssn invalid area", "666-45-6789 and 000-12-3456", "666-45-6789 and 000-12-3456"},
		{"phone us", "call (555) 123-4567 now", "call <PHONE_NUMBER> now"},
		{"phone intl", "+44 20 7946 0958", "<PHONE_NUMBER>"},
		{"date kept", "on 2024-01-15 at 10:30", "on 2024-01-15 at 10:30"},
		{"plain number kept", "order 1700000000 shipped", "order 1700000000 shipped"},
		{"ipv4", "host 192.168.1.20:8080", "host <IP_ADDRESS>:8080"},
		{"ipv4 invalid", "999.1.1.1 and v1.2.3", "999.1.1.1 and v1.2.3"},
		{"ipv6", "addr 2001:db8::8a2e:370:7334 up", "addr <IP_ADDRESS> up"},
		{"cpp scope kept", "std::vector and 12:30:45", "std::vector and 12:30:45"},
		{"iban", "IBAN DE89 3704 0044 0532 0130 00 please", "IBAN <IBAN_CODE> please"},
		{"iban compact", "GB82WEST12345698765432", "<IBAN_CODE>"},
		{"iban bad check", "DE00 3704 0044 0532 0130 00", "DE00 3704 0044 0532 0130 00"},
		{"nothing", "plain words, 3 cats and 42 dogs.", "plain words, 3 cats and 42 dogs."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.String(tt.in); got != tt.want {
				t.Errorf("String(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestClassesAreChosen: a Redactor masks only its classes; an unknown
// class is an error.
func TestClassesAreChosen(t *testing.T) {
	r, err := New([]Class{EmailAddress})
	if err != nil {
		t.Fatal(err)
	}
	in := "a@example.com sk-abcdef123456 4111111111111111"
	if got, want := r.String(in), "<EMAIL_ADDRESS> sk-abcdef123456 4111111111111111"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := New([]Class{"PERSON"}); err == nil || !strings.Contains(err.Error(), "EMAIL_ADDRESS") {
		t.Errorf("unknown class: %v", err)
	}
	var none *Redactor
	if none.String(in) != in || string(none.JSON([]byte(`"x"`))) != `"x"` {
		t.Error("the nil Redactor changed its input")
	}
}

// TestRedactJSON: string values are masked, keys and numbers kept, escapes
// decoded and re-encoded, the result valid JSON.
func TestRedactJSON(t *testing.T) {
	r := all(t)
	tests := []struct{ in, want string }{
		{`[{"role":"user","content":"I am bob@example.com"}]`, `[{"role":"user","content":"I am <EMAIL_ADDRESS>"}]`},
		{`{"bob@example.com": 4111111111111111}`, `{"bob@example.com": 4111111111111111}`},
		{`["line\n\"key\" sk-abcdef1234567890 \u00e9"]`, `["line\n\"key\" <API_KEY> é"]`},
		{`{"a":"nothing here"}`, `{"a":"nothing here"}`},
		{`not json bob@example.com`, `"not json <EMAIL_ADDRESS>"`},
	}
	for _, tt := range tests {
		got := r.JSON([]byte(tt.in))
		if string(got) != tt.want {
			t.Errorf("JSON(%s)\n got %s\nwant %s", tt.in, got, tt.want)
		}
		if !json.Valid(got) {
			t.Errorf("JSON(%s) is not valid: %s", tt.in, got)
		}
	}
}

// FuzzRedact: never panics, findings are in bounds and ordered, masking a
// masked text changes nothing more, and JSON stays valid.
func FuzzRedact(f *testing.F) {
	for _, s := range []string{"bob@example.com", "4111 1111 1111 1111", "sk-abc123456", "2001:db8::1", "DE89 3704 0044 0532 0130 00",
		"-----BEGIN PRIVATE KEY-----", "Bearer abcdefgh12345678", "eyJa.eyJb.c", `{"a":"b@c.de"}`, "+1 (555) 123-4567"} {
		f.Add(s)
	}
	r := all(f)
	f.Fuzz(func(t *testing.T, s string) {
		last := 0
		for _, m := range r.Find(s) {
			if m.Start < last || m.End <= m.Start || m.End > len(s) {
				t.Fatalf("bad match %+v in %q", m, s)
			}
			last = m.End
		}
		out := r.String(s)
		if utf8.ValidString(s) && !utf8.ValidString(out) {
			t.Fatalf("masking broke UTF-8: %q", out)
		}
		if again := r.String(out); again != out {
			t.Fatalf("masking is not idempotent: %q -> %q", out, again)
		}
		if j := r.JSON([]byte(s)); !json.Valid(j) {
			t.Fatalf("JSON(%q) = %q, not valid", s, j)
		}
	})
}

func benchText() string {
	var b strings.Builder
	for b.Len() < 64<<10 {
		b.WriteString("The quarterly report is attached; revenue grew 12% to 4.2 million across 37 regions. ")
		b.WriteString("Please review section 3.1 before the meeting on 2024-05-06 at 10:30, and reply by Friday. ")
	}
	b.WriteString("Contact jane@example.com or +1 (555) 123-4567, card 4111 1111 1111 1111, key sk-abcdef1234567890.")
	return b.String()
}

func BenchmarkRedact(b *testing.B) {
	r := all(b)
	s := benchText()
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		_ = r.String(s)
	}
}

func BenchmarkRedactJSON(b *testing.B) {
	r := all(b)
	raw, _ := json.Marshal([]map[string]string{{"role": "user", "content": benchText()}})
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		_ = r.JSON(raw)
	}
}

// BenchmarkRedactChatJSON is the common case: a short chat body and its
// answer, nothing to mask.
func BenchmarkRedactChatJSON(b *testing.B) {
	r := all(b)
	req := []byte(`[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello to the benchmark."}]`)
	ans := []byte(`{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, benchmark!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":4,"total_tokens":16}}`)
	b.SetBytes(int64(len(req) + len(ans)))
	b.ReportAllocs()
	for b.Loop() {
		_ = r.JSON(req)
		_ = r.JSON(ans)
	}
}

// TestAPIKeyPrefixSeparators: findAPIKeys skips to apiKeySep bytes before
// each '-' or '_' (and to each "AIza"); every other prefix must hold one
// at an offset from 2 to apiKeySep, else its keys would be skipped.
func TestAPIKeyPrefixSeparators(t *testing.T) {
	for _, p := range apiKeyPrefixes {
		if p.prefix == "AIza" {
			continue
		}
		k := strings.IndexAny(p.prefix, "-_")
		if k < 2 || k > apiKeySep {
			t.Errorf("prefix %q: first separator at %d, want 2..%d", p.prefix, k, apiKeySep)
		}
	}
}
