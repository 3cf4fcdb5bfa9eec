package redact

import (
	"math/bits"
	"net/netip"
	"regexp"
	"strings"
)

// finders holds one detector per class. Each scans s once for the bytes its
// class must contain (a prefix, an '@', a run of digits) and confirms only
// there, so text without them costs a few memchr-speed passes.
var finders = map[Class]func(s string, add func(start, end int)){
	APIKey:             findAPIKeys,
	AWSAccessKeyID:     findAWSKeyIDs,
	AWSSecretAccessKey: findAWSSecrets,
	JWT:                findJWTs,
	PrivateKey:         findPrivateKeys,
	Authorization:      findAuthorizations,
	EmailAddress:       findEmails,
	IPAddress:          findIPv6,
	IBANCode:           findIBANs,
}

// numeric holds the classes found in runs of digits and separators, with
// the fewest digits such a run must hold: one pass over the text finds the
// runs for all of them (Redactor.Find).
var numeric = map[Class]struct {
	minDigits int
	check     func(w string, add func(int, int))
}{
	CreditCard:  {13, cards},
	USSSN:       {9, ssns},
	PhoneNumber: {8, phones},
	IPAddress:   {4, ipv4s},
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }
func isUpper(b byte) bool { return 'A' <= b && b <= 'Z' }
func isLower(b byte) bool { return 'a' <= b && b <= 'z' }
func isAlnum(b byte) bool { return isDigit(b) || isUpper(b) || isLower(b) }
func isWord(b byte) bool  { return isAlnum(b) || b == '_' }
func isToken(b byte) bool { return isWord(b) || b == '-' }

// wordStart reports whether a word may start at i: s[i-1] is not part of
// one, or ends a JSON escape ("\n", "\t", ...): text that still holds
// JSON's escapes (the arguments of a tool call, a JSON text cut at the
// cap) has its words glued to the escape's letter.
func wordStart(s string, i int) bool { return i == 0 || !isWord(s[i-1]) || escapeBefore(s, i) }

// escapeBefore reports whether s[:i] ends with a JSON escape of a control
// character (\n, \r, \t, \b, \f).
func escapeBefore(s string, i int) bool {
	if i < 2 || s[i-2] != '\\' {
		return false
	}
	switch s[i-1] {
	case 'n', 'r', 't', 'b', 'f':
		return true
	}
	return false
}

// wordEnd reports whether a word may end at i.
func wordEnd(s string, i int) bool { return i >= len(s) || !isWord(s[i]) }

// each calls fn with every index of needle in s.
func each(s, needle string, fn func(i int)) {
	for at := 0; ; {
		i := strings.Index(s[at:], needle)
		if i < 0 {
			return
		}
		fn(at + i)
		at += i + len(needle)
	}
}

// span returns the end of the run of bytes from i that ok accepts.
func span(s string, i int, ok func(byte) bool) int {
	for i < len(s) && ok(s[i]) {
		i++
	}
	return i
}

func hasDigit(s string) bool { return strings.ContainsAny(s, "0123456789") }

// apiKeyPrefixes: a prefix, the fewest token bytes after it, and whether
// those bytes must hold a digit (to spare words such as "sk-learn").
var apiKeyPrefixes = []struct {
	prefix string
	min    int
	digit  bool
}{
	{"sk-", 4, true},                                                                                   // OpenAI (sk-proj-...), Anthropic (sk-ant-...), LiteLLM and Tollgate virtual keys
	{"sk_live_", 16, false}, {"sk_test_", 16, false}, {"rk_live_", 16, false}, {"rk_test_", 16, false}, // Stripe
	{"AIza", 30, false}, // Google
	{"ghp_", 30, false}, {"gho_", 30, false}, {"ghu_", 30, false}, {"ghs_", 30, false}, {"ghr_", 30, false},
	{"github_pat_", 22, false},
	{"xoxa-", 10, false}, {"xoxb-", 10, false}, {"xoxp-", 10, false}, {"xoxo-", 10, false},
	{"xoxr-", 10, false}, {"xoxs-", 10, false}, // Slack
}

// apiKeySep is the furthest a prefix's first '-' or '_' is from its start;
// every prefix but "AIza" holds one at an offset from 2 to apiKeySep
// (TestAPIKeyPrefixSeparators). A key can only start up to apiKeySep
// bytes before a '-' or '_', or at an "AIza": memchr-speed searches for
// those skip the prose between them, which is most of a text.
const apiKeySep = 6

// nextIndex returns the index of the first needle in s at or after from;
// len(s) when there is none.
func nextIndex(s string, from int, needle string) int {
	if from >= len(s) {
		return len(s)
	}
	if k := strings.Index(s[from:], needle); k >= 0 {
		return from + k
	}
	return len(s)
}

// nextByte is nextIndex of one byte.
func nextByte(s string, from int, b byte) int {
	if from >= len(s) {
		return len(s)
	}
	if k := strings.IndexByte(s[from:], b); k >= 0 {
		return from + k
	}
	return len(s)
}

func findAPIKeys(s string, add func(int, int)) {
	// The next '-', '_' (at or after i+2) and "AIza" (at or after i),
	// each searched again only once the scan has passed it: linear.
	dash, under, aiza := -1, -1, -1
	for i := 0; i < len(s); {
		if dash < i+2 {
			dash = nextByte(s, i+2, '-')
		}
		if under < i+2 {
			under = nextByte(s, i+2, '_')
		}
		if aiza < i {
			aiza = nextIndex(s, i, "AIza")
		}
		i = min(max(min(dash, under)-apiKeySep, i), aiza)
		if i >= len(s) {
			return
		}
		if !apiKeyFirst[s[i]] || !wordStart(s, i) {
			i++
			continue
		}
		i = max(apiKeyAt(s, i, add), i+1)
	}
}

// apiKeyAt adds the key starting at the word start i, if any, and returns
// where the scan goes on.
func apiKeyAt(s string, i int, add func(int, int)) int {
	if i+3 >= len(s) || !apiKeySecond[s[i+1]] {
		return i + 1
	}
	for _, p := range apiKeyPrefixes {
		if p.prefix[0] != s[i] || !strings.HasPrefix(s[i:], p.prefix) {
			continue
		}
		end := span(s, i+len(p.prefix), isToken)
		body := s[i+len(p.prefix) : end]
		if len(body) >= p.min && (!p.digit || hasDigit(body) || len(body) >= 20) {
			add(i, end)
			return end
		}
	}
	return i + 1
}

// byteSet marks the bytes a class can start with.
type byteSet [256]bool

func setOf(bs ...string) (t byteSet) {
	for _, b := range bs {
		t[b[0]] = true
	}
	return t
}

var (
	apiKeyFirst = func() byteSet {
		var names []string
		for _, p := range apiKeyPrefixes {
			names = append(names, p.prefix)
		}
		return setOf(names...)
	}()
	// apiKeySecond marks the second bytes of the prefixes: most words
	// starting with s, r, g, x or A are over at the second byte.
	apiKeySecond = func() (t byteSet) {
		for _, p := range apiKeyPrefixes {
			t[p.prefix[1]] = true
		}
		return t
	}()
	authFirst = setOf("B", "b")
)

// awsKeyID reports whether s[i:] starts an AWS access key id.
func awsKeyID(s string, i int) bool {
	if !wordStart(s, i) || i+20 > len(s) || !wordEnd(s, i+20) {
		return false
	}
	for _, b := range []byte(s[i+4 : i+20]) {
		if !isUpper(b) && !isDigit(b) {
			return false
		}
	}
	return true
}

func findAWSKeyIDs(s string, add func(int, int)) {
	for _, p := range []string{"AKIA", "ASIA"} {
		each(s, p, func(i int) {
			if awsKeyID(s, i) {
				add(i, i+20)
			}
		})
	}
}

// awsSecretNamed is a secret access key after its name.
var awsSecretNamed = regexp.MustCompile(`(?i)secret_?access_?key["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})`)

func isB64(b byte) bool { return isAlnum(b) || b == '/' || b == '+' }

func findAWSSecrets(s string, add func(int, int)) {
	if strings.Contains(s, "ecret") || strings.Contains(s, "ECRET") {
		for _, m := range awsSecretNamed.FindAllStringSubmatchIndex(s, -1) {
			if m[3] >= len(s) || !isB64(s[m[3]]) {
				add(m[2], m[3])
			}
		}
	}
	// A key id with a 40-character secret close after it: the pair.
	for _, p := range []string{"AKIA", "ASIA"} {
		each(s, p, func(i int) {
			if !awsKeyID(s, i) {
				return
			}
			win := s[i+20 : min(len(s), i+220)]
			for j := 0; j < len(win); {
				if !isB64(win[j]) {
					j++
					continue
				}
				end := span(win, j, isB64)
				if end-j == 40 && hasDigit(win[j:end]) && strings.ContainsAny(win[j:end], "ABCDEFGHIJKLMNOPQRSTUVWXYZ") &&
					strings.ContainsAny(win[j:end], "abcdefghijklmnopqrstuvwxyz") {
					add(i+20+j, i+20+end)
					return
				}
				j = end
			}
		})
	}
}

func isB64URL(b byte) bool { return isToken(b) }

// eachEyJ calls fn with every index of "eyJ" in s, in order: it searches
// for the 'J' (rare in prose, where 'e' is the commonest letter and made
// strings.Index try every position) and looks at the two bytes before.
func eachEyJ(s string, fn func(i int)) {
	for at := 2; at < len(s); {
		k := strings.IndexByte(s[at:], 'J')
		if k < 0 {
			return
		}
		if j := at + k; s[j-2] == 'e' && s[j-1] == 'y' {
			fn(j - 2)
		}
		at += k + 1
	}
}

func findJWTs(s string, add func(int, int)) {
	// Every "eyJ" inside one run of token bytes spans to the same end, so
	// a run is tried once, from its first "eyJ" at a word start: text of
	// "eyJ-" repeated costs one pass, not one per "eyJ".
	next := 0
	eachEyJ(s, func(i int) {
		if i < next || !wordStart(s, i) {
			return
		}
		at := i
		for seg := 0; seg < 3; seg++ {
			end := span(s, at, isB64URL)
			if seg == 0 {
				next = end
			}
			if end-at < 8 {
				return
			}
			if seg < 2 {
				if end >= len(s) || s[end] != '.' {
					return
				}
				end++
			}
			at = end
		}
		add(i, at)
		next = at
	})
}

func findPrivateKeys(s string, add func(int, int)) {
	const begin = "-----BEGIN "
	for at := 0; ; {
		k := strings.Index(s[at:], begin)
		if k < 0 {
			return
		}
		i := at + k
		at = i + len(begin)
		head := s[at:min(len(s), at+48)]
		j := strings.Index(head, "PRIVATE KEY-----")
		if j < 0 {
			continue
		}
		k = strings.Index(s[at+j:], "-----END ")
		if k < 0 {
			// No END line: everything after BEGIN is key, and no later
			// BEGIN needs a search of its own.
			add(i, len(s))
			return
		}
		end := at + j + k + len("-----END ")
		if d := strings.Index(s[end:min(len(s), end+48)], "-----"); d >= 0 {
			end += d + 5
		} else {
			end = len(s)
		}
		add(i, end)
		at = end
	}
}

func isCredential(b byte) bool {
	return isToken(b) || b == '.' || b == '~' || b == '+' || b == '/'
}

func findAuthorizations(s string, add func(int, int)) {
	// Every scheme starts with 'B' or 'b': memchr-speed searches for
	// those skip the text between them (each searched again only once the
	// scan has passed it: linear).
	upper, lower := -1, -1
	for i := 0; i < len(s); {
		if upper < i {
			upper = nextByte(s, i, 'B')
		}
		if lower < i {
			lower = nextByte(s, i, 'b')
		}
		i = min(upper, lower)
		if i >= len(s) {
			return
		}
		if !authFirst[s[i]] || !wordStart(s, i) {
			i++
			continue
		}
		i = max(authorizationAt(s, i, add), i+1)
	}
}

// authorizationAt adds the credential of the scheme starting at the word
// start i, if any, and returns where the scan goes on.
func authorizationAt(s string, i int, add func(int, int)) int {
	// Every scheme's second byte is an 'e' or an 'a' of either case:
	// most words starting with a 'b' end here.
	if i+1 >= len(s) {
		return i + 1
	}
	if c := s[i+1] | 0x20; c != 'e' && c != 'a' {
		return i + 1
	}
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "Basic", "basic", "BASIC"} {
		if !strings.HasPrefix(s[i:], scheme) {
			continue
		}
		at := i + len(scheme)
		sp := span(s, at, func(b byte) bool { return b == ' ' || b == '\t' })
		if sp == at {
			return at
		}
		end := span(s, sp, isCredential)
		end = span(s, end, func(b byte) bool { return b == '=' })
		if end-sp >= 16 && hasDigit(s[sp:end]) && (strings.EqualFold(scheme, "bearer") || basicCredential(s[sp:end])) {
			add(sp, end)
		}
		return end
	}
	return i + 1
}

// basicCredential reports whether c can be a Basic credential: base64
// (of user:password), so its length is a multiple of four and it holds no
// '-', '_', '.' or '~' ("basic setup-2024-instructions" in prose is not one).
func basicCredential(c string) bool {
	if len(c)%4 != 0 {
		return false
	}
	for i := 0; i < len(c); i++ {
		if b := c[i]; !isB64(b) && b != '=' {
			return false
		}
	}
	return true
}

func isLocal(b byte) bool {
	return isAlnum(b) || b == '.' || b == '_' || b == '%' || b == '+' || b == '-'
}
func isDomain(b byte) bool { return isAlnum(b) || b == '.' || b == '-' }

func findEmails(s string, add func(int, int)) {
	for at := 0; ; {
		k := strings.IndexByte(s[at:], '@')
		if k < 0 {
			return
		}
		i := at + k
		at = i + 1
		l := i
		for l > 0 && isLocal(s[l-1]) {
			l--
		}
		for l < i && s[l] == '.' {
			l++
		}
		r := span(s, i+1, isDomain)
		for r > i+1 && (s[r-1] == '.' || s[r-1] == '-') {
			r--
		}
		if l == i || r == i+1 {
			continue
		}
		dom := s[i+1 : r]
		dot := strings.LastIndexByte(dom, '.')
		if dot <= 0 {
			continue
		}
		tld := dom[dot+1:]
		ok := len(tld) >= 2
		for _, b := range []byte(tld) {
			ok = ok && (isUpper(b) || isLower(b))
		}
		if ok {
			add(l, r)
			at = r
		}
	}
}

// isNumeric are the bytes of the numbers PII takes: digits and the
// separators cards, phones, SSNs and IPv4 addresses are written with.
func isNumeric(b byte) bool { return numericBytes[b] }

var numericBytes = func() (t [256]bool) {
	for _, b := range []byte("0123456789 -.()+") {
		t[b] = true
	}
	return t
}()

// digitWindows finds the runs of numeric bytes in s that hold at least
// minDigits digits and are not glued to a word, and calls check on each
// with its offset in s and its count of digits. A run is a maximal stretch
// of numeric bytes from its first digit, '+' or '('; prose between runs is
// passed over eight bytes a step (nextDigit), since every run holds a
// digit.
//
// When stretches is not nil, each stretch's first digit and end are
// appended to it: every digit of s lies in one, which is what the IBAN
// scan needs (Redactor.Find shares the one pass).
func digitWindows(s string, minDigits int, check func(at int, w string, digits int), stretches *[]stretch) {
	for i := 0; i < len(s); {
		d := nextDigit(s, i)
		if d >= len(s) {
			return
		}
		// The stretch holding d starts after the last byte before it that
		// is not numeric (s[i-1], where the last stretch ended, at the
		// earliest); the run at its first digit, '+' or '('.
		start := d
		for start > i && isNumeric(s[start-1]) {
			start--
		}
		for !isDigit(s[start]) && s[start] != '+' && s[start] != '(' {
			start++
		}
		i = start
		digits := 0
		for i < len(s) && isNumeric(s[i]) {
			if isDigit(s[i]) {
				digits++
			}
			i++
		}
		if stretches != nil {
			*stretches = append(*stretches, stretch{d, i})
		}
		if digits < minDigits {
			continue
		}
		if start > 0 && isWord(s[start-1]) && !escapeBefore(s, start) {
			// "abc123-456": the number belongs to a word; skip its head.
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

// A stretch is s[d:end], a run of numeric bytes from its first digit d.
type stretch struct{ d, end int }

// nextDigitIn is nextDigit for a text whose digits all lie in the
// stretches st, in order; *k is the stretch to start from, kept between
// calls with a growing from.
func nextDigitIn(s string, st []stretch, k *int, from int) int {
	for ; *k < len(st); *k++ {
		t := st[*k]
		if t.end <= from {
			continue
		}
		for j := max(from, t.d); j < t.end; j++ {
			if isDigit(s[j]) {
				return j
			}
		}
	}
	return len(s)
}

// nextDigit returns the index of the first ASCII digit in s at or after
// i; len(s) when there is none. Eight bytes are tested at once: for each
// byte (high bit cleared, so that no addition carries into the next),
// adding 0x80-'0' sets its high bit when it is >= '0', adding 0x80-'9'-1
// when it is > '9'; bytes of 0x80 and above are no digits.
func nextDigit(s string, i int) int {
	const ones, low7, high = 0x0101010101010101, 0x7f7f7f7f7f7f7f7f, 0x8080808080808080
	for ; i+8 <= len(s); i += 8 {
		x := load64(s, i)
		y := x & low7
		if m := (y + (0x80-'0')*ones) &^ (y + (0x80-'9'-1)*ones) &^ x & high; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(s); i++ {
		if isDigit(s[i]) {
			return i
		}
	}
	return len(s)
}

// load64 is s[i:i+8] as a little-endian word (one load once compiled).
func load64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

var (
	// dateRe is a calendar date inside a phone-shaped run: year first
	// (2024-01-15) or last (15.01.2024, 01-15-2024).
	dateRe = regexp.MustCompile(`(?:^|\D)(?:(?:19|20)\d\d[\-/.](?:0?[1-9]|1[0-2])[\-/.](?:0?[1-9]|[12]\d|3[01])|(?:0?[1-9]|[12]\d|3[01])[\-/.](?:0?[1-9]|1[0-2])[\-/.](?:19|20)\d\d|(?:0?[1-9]|1[0-2])[\-/.](?:0?[1-9]|[12]\d|3[01])[\-/.](?:19|20)\d\d)(?:\D|$)`)
	ipv4Re = regexp.MustCompile(`\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}`)
)

// free reports whether w[a:b] is not part of a longer number.
func free(w string, a, b int) bool {
	return (a == 0 || !isDigit(w[a-1])) && (b >= len(w) || !isDigit(w[b])) &&
		(a < 2 || !(w[a-1] == '.' && isDigit(w[a-2]))) && (b+1 >= len(w) || !(w[b] == '.' && isDigit(w[b+1])))
}

// cardRuns calls fn with each run of 13 to 19 digits, one space or dash
// at most between two of them, that `\d(?:[ \-]?\d){12,18}` would find
// (leftmost, greedy, not overlapping), in one pass: the expression's
// automaton was most of the cost of masking long runs of numbers.
func cardRuns(w string, fn func(a, b int)) {
	for i := 0; i < len(w); {
		if !isDigit(w[i]) {
			i++
			continue
		}
		j, n := i+1, 1 // w[i:j] holds n digits
		for n < 19 {
			if j < len(w) && isDigit(w[j]) {
				j, n = j+1, n+1
			} else if j+1 < len(w) && (w[j] == ' ' || w[j] == '-') && isDigit(w[j+1]) {
				j, n = j+2, n+1
			} else {
				break
			}
		}
		if n >= 13 {
			fn(i, j)
		}
		i = j
	}
}

func cards(w string, add func(int, int)) {
	cardRuns(w, func(a, b int) {
		m := [2]int{a, b}
		if !free(w, m[0], m[1]) {
			return
		}
		// The longest prefix, ending on a digit, that is a valid number.
		all := digitsOf(w[m[0]:m[1]])
		n := len(all)
		for end := m[1]; end-m[0] >= 13; end-- {
			if !isDigit(w[end-1]) {
				continue
			}
			if d := all[:n]; len(d) >= 13 && len(d) <= 19 && d[0] >= '2' && d[0] <= '6' && luhn(d) {
				add(m[0], end)
				break
			}
			n--
		}
	})
}

func countDigits(s string) (n int) {
	for i := 0; i < len(s); i++ {
		if isDigit(s[i]) {
			n++
		}
	}
	return n
}

func digitsOf(s string) []byte {
	d := make([]byte, 0, len(s))
	for _, b := range []byte(s) {
		if isDigit(b) {
			d = append(d, b)
		}
	}
	return d
}

// luhn reports whether the digits d pass the Luhn check.
func luhn(d []byte) bool {
	sum := 0
	for i := range d {
		v := int(d[len(d)-1-i] - '0')
		if i%2 == 1 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
	}
	return sum%10 == 0
}

func ssns(w string, add func(int, int)) {
	if strings.Count(w, "-")+strings.Count(w, " ") < 2 {
		return
	}
	ssnMatches(w, func(a, b int) {
		if !free(w, a, b) || (a > 0 && w[a-1] == '-') || (b < len(w) && w[b] == '-') {
			return
		}
		d := digitsOf(w[a:b])
		area, group, serial := string(d[:3]), string(d[3:5]), string(d[5:])
		if area == "000" || area == "666" || area[0] == '9' || group == "00" || serial == "0000" {
			return
		}
		add(a, b)
	})
}

// ssnMatches calls fn with each w[a:b] that `\d{3}[\- ]\d{2}[\- ]\d{4}`
// finds (leftmost, not overlapping). The expression is fixed in length, so
// those are what a scan finds that tests each position (ssnShape) and
// passes a match's end (TestSSNMatchesTheExpression); the expression's
// automaton cost more than the rest of the number checks together.
func ssnMatches(w string, fn func(a, b int)) {
	for a := 0; a+ssnLen <= len(w); {
		if ssnShape(w[a : a+ssnLen]) {
			fn(a, a+ssnLen)
			a += ssnLen
			continue
		}
		a++
	}
}

// ssnLen is the length of an SSN written with separators.
const ssnLen = 11

// ssnShape reports whether w (ssnLen bytes) is three digits, a space or
// '-', two digits, a space or '-', four digits.
func ssnShape(w string) bool {
	for k := 0; k < ssnLen; k++ {
		c := w[k]
		if k == 3 || k == 6 {
			if c != ' ' && c != '-' {
				return false
			}
		} else if !isDigit(c) {
			return false
		}
	}
	return true
}

func phones(w string, add func(int, int)) {
	if strings.IndexByte(w, '+') < 0 && countDigits(w) < 10 {
		return
	}
	phoneMatches(w, func(a, b int) {
		if !free(w, a, b) {
			return
		}
		p := w[a:b]
		n := countDigits(p)
		plus := p[0] == '+'
		if n > 15 || n < 10 && !(plus && n >= 8) {
			return
		}
		if !plus && strings.Count(p, ".") >= 3 && !strings.ContainsAny(p, " -()") {
			return // dotted like a version or an address, not a phone
		}
		if !plus && dateRe.MatchString(p) {
			return // a date with a time or another number beside it ("2024-01-15 10:30")
		}
		add(a, b)
	})
}

// phoneMatches calls fn with each w[a:b] that the expression
//
//	(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]\d{1,4}){1,5}
//
// finds (leftmost-first, not overlapping), without its automaton, which
// cost more than the rest of masking a card-shaped run of digits. At each
// start the choices are tried in the expression's order of preference
// (an optional part taken before it is left out, more digits or groups
// before fewer) and the first that matches is the expression's match;
// a match spans at most 41 bytes, so the work at a start is bounded and
// the scan linear (TestPhoneMatchesTheExpression).
func phoneMatches(w string, fn func(a, b int)) {
	for a := 0; a < len(w); {
		if c := w[a]; c == '+' || c == '(' || isDigit(c) {
			if e := phoneAt(w, a); e >= 0 {
				fn(a, e)
				a = e
				continue
			}
		}
		a++
	}
}

func isPhoneSep(b byte) bool { return b == ' ' || b == '.' || b == '-' }

// digitsAt returns how many digits, at most max, start w[i:].
func digitsAt(w string, i, max int) int {
	n := 0
	for n < max && i+n < len(w) && isDigit(w[i+n]) {
		n++
	}
	return n
}

// phoneAt is the end of the phone expression's match at w[i:], -1 when
// there is none: (?:\+\d{1,3}[ .\-]?)? then the rest.
func phoneAt(w string, i int) int {
	if i < len(w) && w[i] == '+' {
		for d := digitsAt(w, i+1, 3); d >= 1; d-- {
			j := i + 1 + d
			if j < len(w) && isPhoneSep(w[j]) {
				if e := phoneArea(w, j+1); e >= 0 {
					return e
				}
			}
			if e := phoneArea(w, j); e >= 0 {
				return e
			}
		}
	}
	return phoneArea(w, i)
}

// phoneArea: (?:\(\d{1,4}\)[ .\-]?)? then the rest.
func phoneArea(w string, i int) int {
	if i < len(w) && w[i] == '(' {
		for d := digitsAt(w, i+1, 4); d >= 1; d-- {
			j := i + 1 + d
			if j >= len(w) || w[j] != ')' {
				continue
			}
			j++
			if j < len(w) && isPhoneSep(w[j]) {
				if e := phoneGroups(w, j+1); e >= 0 {
					return e
				}
			}
			if e := phoneGroups(w, j); e >= 0 {
				return e
			}
		}
	}
	return phoneGroups(w, i)
}

// phoneGroups: \d{1,4}(?:[ .\-]\d{1,4}){1,5}.
func phoneGroups(w string, i int) int {
	for d := digitsAt(w, i, 4); d >= 1; d-- {
		if e := phoneMore(w, i+d, 0); e >= 0 {
			return e
		}
	}
	return -1
}

// phoneMore: k groups (?:[ .\-]\d{1,4}) taken, up to five; at least one.
func phoneMore(w string, i, k int) int {
	if k < 5 && i < len(w) && isPhoneSep(w[i]) {
		for d := digitsAt(w, i+1, 4); d >= 1; d-- {
			if e := phoneMore(w, i+1+d, k+1); e >= 0 {
				return e
			}
		}
	}
	if k >= 1 {
		return i
	}
	return -1
}

func ipv4s(w string, add func(int, int)) {
	if strings.Count(w, ".") < 3 {
		return
	}
	for _, m := range ipv4Re.FindAllStringIndex(w, -1) {
		if !free(w, m[0], m[1]) {
			continue
		}
		if ip, err := netip.ParseAddr(w[m[0]:m[1]]); err == nil && ip.Is4() {
			add(m[0], m[1])
		}
	}
}

func findIPv6(s string, add func(int, int)) {
	// IPv6: runs of hex digits and colons holding at least two colons.
	isV6 := func(b byte) bool {
		return isDigit(b) || ('a' <= b && b <= 'f') || ('A' <= b && b <= 'F') || b == ':' || b == '.'
	}
	for at := 0; ; {
		k := strings.IndexByte(s[at:], ':')
		if k < 0 {
			return
		}
		i := at + k
		l := i
		for l > 0 && isV6(s[l-1]) {
			l--
		}
		r := span(s, i, isV6)
		at = r
		for r > l && s[r-1] == '.' {
			r--
		}
		if r-l < 3 || strings.Count(s[l:r], ":") < 2 || !wordStart(s, l) || !wordEnd(s, r) || !hasDigit(s[l:r]) {
			continue
		}
		if ip, err := netip.ParseAddr(s[l:r]); err == nil && ip.Is6() {
			add(l, r)
		}
	}
}

// ibanShape returns {0, n} when s[i:i+n] is the longest IBAN-shaped text
// at i, as `^[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?` would
// match it (s[i:i+4] is known to be two letters and two digits); nil when
// there is none. One short pass, no automaton: IBAN-shaped runs can start
// every few bytes.
func ibanShape(s string, i int) []int {
	isChar := func(b byte) bool { return isUpper(b) || isDigit(b) }
	j, groups := i+4, 0
	for groups < 7 {
		p := j
		if p < len(s) && s[p] == ' ' {
			p++
		}
		if p+4 > len(s) || !isChar(s[p]) || !isChar(s[p+1]) || !isChar(s[p+2]) || !isChar(s[p+3]) {
			break
		}
		j, groups = p+4, groups+1
	}
	if groups < 2 {
		return nil
	}
	p := j
	if p < len(s) && s[p] == ' ' {
		p++
	}
	n := 0
	for n < 4 && p+n < len(s) && isChar(s[p+n]) {
		n++
	}
	if n > 0 {
		j = p + n
	}
	return []int{0, j - i}
}

// findIBANs finds the IBANs in s (the detector when no numeric class is
// chosen; Redactor.Find otherwise calls findIBANsIn with the stretches of
// its pass over the numbers).
func findIBANs(s string, add func(int, int)) {
	var st []stretch
	digitWindows(s, len(s)+1, nil, &st)
	findIBANsIn(s, st, add)
}

// findIBANsIn finds the IBANs in s, whose digits all lie in st.
func findIBANsIn(s string, st []stretch, add func(int, int)) {
	k := 0
	for i := 0; i+4 <= len(s); i++ {
		// An IBAN starts with two letters and two digits: the next head
		// is two bytes before the next digit d at or after i+2, and only
		// when s[d+1] is a digit too; else none starts before d.
		d := nextDigitIn(s, st, &k, i+2)
		if d+1 >= len(s) {
			return
		}
		if !isDigit(s[d+1]) {
			i = d - 1
			continue
		}
		i = d - 2
		if !isUpper(s[i]) || !isUpper(s[i+1]) || !wordStart(s, i) {
			continue
		}
		m := ibanShape(s, i)
		if m == nil {
			continue
		}
		// The longest run of whole groups that is a valid IBAN.
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

// iban reports whether s (spaces aside) is 15 to 34 characters passing
// ISO 13616's mod-97 check. It allocates nothing.
func iban(s string) bool {
	n := len(s) - strings.Count(s, " ")
	if n < 15 || n > 34 || len(s) < 4 {
		return false
	}
	// The check moves the first four characters to the end: the rest's
	// remainder, then those four's.
	rem := 0
	step := func(b byte) bool {
		switch {
		case isDigit(b):
			rem = (rem*10 + int(b-'0')) % 97
		case isUpper(b):
			rem = (rem*100 + int(b-'A'+10)) % 97
		case b == ' ':
		default:
			return false
		}
		return true
	}
	for i := 4; i < len(s); i++ {
		if !step(s[i]) {
			return false
		}
	}
	for i := 0; i < 4; i++ {
		if !step(s[i]) {
			return false
		}
	}
	return rem == 1
}
