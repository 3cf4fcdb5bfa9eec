package redact

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// digitWindowsByByte is the scan digitWindows replaced (as it was): a
// byte at a time, past a byte minDigits-1 ahead that is not numeric.
func digitWindowsByByte(s string, minDigits int, check func(at int, w string, digits int)) {
	for i := 0; i < len(s); {
		if j := i + minDigits - 1; j < len(s) && !isNumeric(s[j]) {
			i = j + 1
			continue
		}
		if !isDigit(s[i]) && s[i] != '+' && s[i] != '(' {
			i++
			continue
		}
		start := i
		digits := 0
		for i < len(s) && isNumeric(s[i]) {
			if isDigit(s[i]) {
				digits++
			}
			i++
		}
		if digits < minDigits {
			continue
		}
		if start > 0 && isWord(s[start-1]) && !escapeBefore(s, start) {
			for start < i && isDigit(s[start]) {
				start++
			}
		}
		end := i
		if end < len(s) && isWord(s[end]) {
			for end > start && isDigit(s[end-1]) {
				end--
			}
		}
		if end > start {
			check(start, s[start:end], digits)
		}
	}
}

// findIBANsByByte is the IBAN scan findIBANs replaced (as it was): every
// position, past those a byte three ahead rules out.
func findIBANsByByte(s string, add func(int, int)) {
	for i := 0; i+4 <= len(s); i++ {
		if c := s[i+3]; !isDigit(c) {
			if isUpper(c) {
				i++
			} else {
				i += 3
			}
			continue
		}
		if !isUpper(s[i]) || !isUpper(s[i+1]) || !isDigit(s[i+2]) || !wordStart(s, i) {
			continue
		}
		m := ibanShape(s, i)
		if m == nil {
			continue
		}
		for end := i + m[1]; end > i+4; {
			if wordEnd(s, end) && iban(s[i:end]) {
				add(i, end)
				i = end - 1
				break
			}
			j := strings.LastIndexByte(s[i:end], ' ')
			if j <= 4 {
				break
			}
			end = i + j
		}
	}
}

// scanTexts are random and crafted texts for the scanners' equivalence
// tests: numbers with separators, IBANs valid and not, words glued to
// numbers, JSON escapes and non-ASCII bytes, at every alignment.
func scanTexts() []string {
	parts := []string{"4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "GB82", "AB12", "123 45 6789", "078-05-1120",
		"123-45-6789", "+1 (555) 010-9999", "192.168.0.1", "0", "12", "345", "6789", " ", "-", ".", "(", ")", "+",
		"abc", "x", "Z", "\\n", "é", "\u00a0", "_", "AA", "00", "9", "IBAN ", "\n"}
	rng := rand.New(rand.NewPCG(5, 6))
	var texts []string
	for k := 0; k < 500; k++ {
		var b strings.Builder
		for range rng.IntN(30) {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		texts = append(texts, b.String())
		raw := make([]byte, rng.IntN(80))
		for i := range raw {
			if rng.IntN(2) == 0 {
				raw[i] = "0123456789 -.()+AZGB"[rng.IntN(20)]
			} else {
				raw[i] = byte(rng.IntN(256))
			}
		}
		texts = append(texts, string(raw))
	}
	var out []string
	for _, s := range texts {
		for pad := 0; pad < 8; pad++ {
			out = append(out, strings.Repeat("a", pad)+s, strings.Repeat(" ", pad)+s)
		}
	}
	return out
}

// TestDigitWindowsMatchByteScan: the scan that skips to the next digit
// eight bytes a step yields the same runs as the byte by byte one, for
// every class's fewest digits.
func TestDigitWindowsMatchByteScan(t *testing.T) {
	t.Parallel()
	runs := 0
	for _, s := range scanTexts() {
		for _, minDigits := range []int{4, 8, 9, 13} {
			var got, want []string
			digitWindows(s, minDigits, func(at int, w string, digits int) { got = append(got, fmt.Sprint(at, w, digits)) }, nil)
			digitWindowsByByte(s, minDigits, func(at int, w string, digits int) { want = append(want, fmt.Sprint(at, w, digits)) })
			if !slices.Equal(got, want) {
				t.Fatalf("digitWindows(%q, %d) = %q, byte scan %q", s, minDigits, got, want)
			}
			runs += len(got)
		}
	}
	if runs < 1000 {
		t.Fatalf("only %d runs found: the comparison proves little", runs)
	}
}

// TestIBANScanMatchesByteScan: the IBAN scan that skips to the next pair
// of digits finds the same IBANs as the byte by byte one.
func TestIBANScanMatchesByteScan(t *testing.T) {
	t.Parallel()
	found := 0
	for _, s := range scanTexts() {
		var got, want [][2]int
		findIBANs(s, func(a, b int) { got = append(got, [2]int{a, b}) })
		findIBANsByByte(s, func(a, b int) { want = append(want, [2]int{a, b}) })
		if !slices.Equal(got, want) {
			t.Fatalf("findIBANs(%q) = %v, byte scan %v", s, got, want)
		}
		found += len(got)
	}
	if found < 100 {
		t.Fatalf("only %d IBANs found: the comparison proves little", found)
	}
}

// TestNextDigit: the first digit is found wherever it stands, and none in
// text without one, including bytes that differ from a digit by 0x80.
func TestNextDigit(t *testing.T) {
	t.Parallel()
	for n := 0; n < 20; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = "/:aZ \xb0\xb9\xff"[i%8]
		}
		if got := nextDigit(string(b), 0); got != n {
			t.Fatalf("no digit in %q: got %d", b, got)
		}
		for i := 0; i < n; i++ {
			c := append([]byte(nil), b...)
			c[i] = '0' + byte(i%10)
			for from := 0; from <= i; from++ {
				if got := nextDigit(string(c), from); got != i {
					t.Errorf("nextDigit(%q, %d) = %d, want %d", c, from, got, i)
				}
			}
		}
	}
}

// TestSSNMatchesTheExpression: the SSN scan finds what the expression it
// replaced finds, leftmost and not overlapping.
func TestSSNMatchesTheExpression(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`\d{3}[\- ]\d{2}[\- ]\d{4}`)
	found := 0
	texts := append(scanTexts(), "123-45-6789-12-3456", "123 45 678912 34 5678", "1234-56-78901", "123-45-67890-12-3456")
	for _, s := range texts {
		var got [][]int
		ssnMatches(s, func(a, b int) { got = append(got, []int{a, b}) })
		want := re.FindAllStringIndex(s, -1)
		if len(got) != len(want) || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("ssnMatches(%q) = %v, expression %v", s, got, want)
		}
		found += len(got)
	}
	if found < 100 {
		t.Fatalf("only %d SSN shapes found: the comparison proves little", found)
	}
}

// phoneRe is the expression phoneMatches replaced.
var phoneRe = regexp.MustCompile(`(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]\d{1,4}){1,5}`)

// TestPhoneMatchesTheExpression: the phone scan finds what the expression
// it replaced finds (leftmost-first, not overlapping) on the scan texts,
// on phone, card, date and IP shapes, on random strings of digits and the
// bytes phones are written with, and each of them at every alignment
// (after 0 to 7 bytes of other text).
func TestPhoneMatchesTheExpression(t *testing.T) {
	t.Parallel()
	texts := append(scanTexts(), "call (555) 123-4567 now", "+44 20 7946 0958", "+1 (555) 010-9999", "+1234-5678",
		"+12", "+(12) 3", "(12)(34) 5-6", "4111 1111 1111 1111", "5500-0000-0000-0004", "2024-01-15 10:30",
		"192.168.1.20", "1.2.3.4.5.6.7.8.9", "+49.30.123456.78", "(1234)-5678-9012", "12345 6789 1 2 3 4 5 6 7",
		"++1 2", "+1 +2 3", "((12) 3-4", "(12345) 6-7", "+1234 5", "1-2-3-4-5-6-7-8-9-0-1-2-3")
	rng := rand.New(rand.NewPCG(3, 4))
	const alphabet = "0123456789 .-+()x"
	for k := 0; k < 20000; k++ {
		b := make([]byte, rng.IntN(48))
		for i := range b {
			if rng.IntN(3) == 0 {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			} else {
				b[i] = '0' + byte(rng.IntN(10))
			}
		}
		texts = append(texts, string(b))
	}
	found := 0
	for _, s := range texts {
		for pad := 0; pad < 8; pad++ {
			p := strings.Repeat("a", pad) + s
			var got [][]int
			phoneMatches(p, func(a, b int) { got = append(got, []int{a, b}) })
			want := phoneRe.FindAllStringIndex(p, -1)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("phoneMatches(%q) = %v, expression %v", p, got, want)
			}
			found += len(got)
		}
	}
	if found < 1000 {
		t.Fatalf("only %d phone shapes found: the comparison proves little", found)
	}
}

// TestEachEyJMatchesIndex holds the search for "eyJ" (JWTs) to what it
// replaced, strings.Index of the whole word, on prose and on random texts
// of the word's bytes and their neighbours, each at nine offsets.
func TestEachEyJMatchesIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(27, 1))
	texts := []string{"", "e", "eyJ", "ecret", "ECRET", "eCRET", "Ecret", "cret", "secret_access_key", "eyeyJJ", "eeyJyJ",
		"The quarterly report covers revenue, churn and hiring plans; a secret. eyJhbGciOi.eyJzdWIi.sig"}
	const bytes = "eyJEYj _x"
	for range 20000 {
		b := make([]byte, rng.IntN(24))
		for i := range b {
			b[i] = bytes[rng.IntN(len(bytes))]
		}
		texts = append(texts, string(b))
	}
	for _, s := range texts {
		for pad := range 9 {
			p := strings.Repeat("y", pad) + s
			var got, want []int
			eachEyJ(p, func(i int) { got = append(got, i) })
			each(p, "eyJ", func(i int) { want = append(want, i) })
			if !slices.Equal(got, want) {
				t.Fatalf("eachEyJ(%q) = %v, each = %v", p, got, want)
			}
		}
	}
}
