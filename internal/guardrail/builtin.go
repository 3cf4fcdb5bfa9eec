package guardrail

import (
	"context"
	"encoding/json"
	"fmt"
	"math/bits"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/redact"
	"github.com/tollgate/tollgate/internal/tokens"
)

// piiCheck finds personal data and secrets with internal/redact's
// validated detectors (Luhn for cards, mod 97 for IBANs, the SSA's rules
// for SSNs, netip for IP addresses, provider key prefixes) and masks or
// blocks each class as configured.
type piiCheck struct {
	r       *redact.Redactor
	actions map[redact.Class]Action
	// tag makes the placeholder of the n-th distinct value (n from 1) of
	// a class; numbered placeholders are what output_parse_pii maps back.
	tag     func(class string, n int) string
	restore bool
}

// numberedTag is <CLASS>, then <CLASS_2>, <CLASS_3>, ... for further
// distinct values of the class in one request.
func numberedTag(class string, n int) string {
	if n == 1 {
		return "<" + class + ">"
	}
	return "<" + class + "_" + strconv.Itoa(n) + ">"
}

func newPII(actions map[redact.Class]Action, tag func(string, int) string, restore bool) (*piiCheck, error) {
	classes := make([]redact.Class, 0, len(actions))
	for c := range actions {
		classes = append(classes, c)
	}
	sort.Slice(classes, func(i, j int) bool { return classes[i] < classes[j] })
	r, err := redact.New(classes)
	if err != nil {
		return nil, err
	}
	return &piiCheck{r: r, actions: actions, tag: tag, restore: restore}, nil
}

func (p *piiCheck) Check(_ context.Context, in *Input) (Verdict, error) {
	var v Verdict
	var seen map[string]string // class + "\x00" + value → placeholder
	var perClass map[string]int
	for i, t := range in.Texts {
		ms := p.r.Find(t)
		if len(ms) == 0 {
			continue
		}
		var b strings.Builder
		b.Grow(len(t) + 16*len(ms))
		at := 0
		edits := make([]Edit, 0, len(ms))
		for _, m := range ms {
			cls := string(m.Class)
			if v.Entities == nil {
				v.Entities = map[string]int{}
			}
			v.Entities[cls]++
			if p.actions[m.Class] == Block {
				v.Blocked = true
				continue
			}
			if seen == nil {
				seen, perClass = map[string]string{}, map[string]int{}
			}
			val := t[m.Start:m.End]
			ph, ok := seen[cls+"\x00"+val]
			if !ok {
				perClass[cls]++
				ph = p.tag(cls, perClass[cls])
				seen[cls+"\x00"+val] = ph
				if p.restore {
					if v.Restore == nil {
						v.Restore = map[string]string{}
					}
					v.Restore[ph] = val
				}
			}
			b.WriteString(t[at:m.Start])
			b.WriteString(ph)
			at = m.End
			edits = append(edits, Edit{Start: m.Start, End: m.End, New: ph})
		}
		if at > 0 {
			b.WriteString(t[at:])
			if v.Texts == nil {
				v.Texts = append([]string(nil), in.Texts...)
				v.Edits = make([][]Edit, len(in.Texts))
			}
			v.Texts[i] = b.String()
			v.Edits[i] = edits
		}
	}
	if v.Blocked {
		v.Reason = "found " + entityList(v.Entities, func(e string) bool { return p.actions[redact.Class(e)] == Block })
		v.Texts, v.Edits, v.Restore = nil, nil, nil
	}
	return v, nil
}

// entityList names the entities that keep, sorted.
func entityList(m map[string]int, keep func(string) bool) string {
	var out []string
	for e := range m {
		if keep(e) {
			out = append(out, e)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// prebuilt maps litellm_content_filter's prebuilt pattern names (and a few
// of Tollgate's) to internal/redact's validated classes.
var prebuilt = map[string]redact.Class{
	"us_ssn": redact.USSSN, "email": redact.EmailAddress, "phone": redact.PhoneNumber,
	"visa": redact.CreditCard, "mastercard": redact.CreditCard, "amex": redact.CreditCard,
	"credit_card": redact.CreditCard, "iban": redact.IBANCode, "ip_address": redact.IPAddress,
	"aws_access_key": redact.AWSAccessKeyID, "aws_secret_key": redact.AWSSecretAccessKey,
	"github_token": redact.APIKey, "api_key": redact.APIKey, "jwt": redact.JWT,
	"private_key": redact.PrivateKey, "authorization": redact.Authorization,
}

// filterCheck is litellm_content_filter: prebuilt patterns (validated
// detectors), regexes (RE2: linear time) and keywords, each with its
// action. Masks are LiteLLM's tags: [EMAIL_REDACTED], [KEYWORD_REDACTED].
type filterCheck struct {
	pii     *piiCheck // the prebuilt patterns; nil: none
	regexes []namedRegex
	words   []keyword
	wordTag string
	patTag  func(name string) string
}

type namedRegex struct {
	name   string
	re     *regexp.Regexp
	action Action
}

type keyword struct {
	re     *regexp.Regexp // (?i) and the quoted keyword
	lower  string         // the keyword in lower case when it is ASCII; "": use re
	action Action
}

// indexFold returns the index of the first match of the ASCII keyword lower
// in the ASCII text s, ASCII case folded; -1 when there is none. A memchr
// for each case of the first byte finds the candidates; each is searched
// again only once the scan has passed its last hit, so the whole is
// linear.
func indexFold(s, lower string) int {
	c0 := lower[0]
	u0 := c0
	if 'a' <= c0 && c0 <= 'z' {
		u0 -= 'a' - 'A'
	}
	lo, up := -1, -1 // the next c0 and u0 at or after at; len(s): none
	next := func(from int, c byte) int {
		if k := strings.IndexByte(s[from:], c); k >= 0 {
			return from + k
		}
		return len(s)
	}
	for at := 0; at+len(lower) <= len(s); {
		if lo < at {
			lo = next(at, c0)
		}
		if up < at {
			up = next(at, u0)
		}
		i := min(lo, up)
		if i+len(lower) > len(s) {
			return -1
		}
		if strings.EqualFold(s[i+1:i+len(lower)], lower[1:]) {
			return i
		}
		at = i + 1
	}
	return -1
}

// replaceFold is s with every match of the ASCII keyword lower (ASCII case
// folded, leftmost, not overlapping) replaced by tag; ok reports whether
// there was one.
func replaceFold(s, lower, tag string) (string, bool) {
	i := indexFold(s, lower)
	if i < 0 {
		return s, false
	}
	var b strings.Builder
	b.Grow(len(s))
	at := 0
	for i >= 0 {
		b.WriteString(s[at : at+i])
		b.WriteString(tag)
		at += i + len(lower)
		i = indexFold(s[at:], lower)
	}
	b.WriteString(s[at:])
	return b.String(), true
}

func (f *filterCheck) Check(ctx context.Context, in *Input) (Verdict, error) {
	v := Verdict{}
	texts := in.Texts
	piiChanged := false
	if f.pii != nil {
		pv, _ := f.pii.Check(ctx, in)
		v.Entities = pv.Entities
		if pv.Blocked {
			return Verdict{Blocked: true, Reason: pv.Reason, Entities: pv.Entities}, nil
		}
		if pv.Texts != nil {
			texts, piiChanged = pv.Texts, true
		}
	}
	changed := texts
	copied := false
	set := func(i int, s string) {
		if !copied {
			changed = append([]string(nil), texts...)
			copied = true
		}
		changed[i] = s
	}
	count := func(name string) {
		if v.Entities == nil {
			v.Entities = map[string]int{}
		}
		v.Entities[name]++
	}
	var blocked []string
	for _, r := range f.regexes {
		for i := range changed {
			locs := r.re.FindAllStringIndex(changed[i], -1)
			if len(locs) == 0 {
				continue
			}
			for range locs {
				count(r.name)
			}
			if r.action == Block {
				blocked = append(blocked, r.name)
				continue
			}
			set(i, r.re.ReplaceAllLiteralString(changed[i], f.patTag(r.name)))
		}
	}
	for _, w := range f.words {
		for i := range changed {
			t := foldJoiners(changed[i])
			if w.lower != "" && !hasNonASCII(t) {
				// ASCII text: the byte scan (what the expression would find).
				if indexFold(t, w.lower) < 0 {
					continue
				}
				count("keyword")
				if w.action == Block {
					blocked = append(blocked, "keyword")
					continue
				}
				r, _ := replaceFold(t, w.lower, f.wordTag)
				set(i, r)
				continue
			}
			if !w.re.MatchString(t) {
				continue
			}
			count("keyword")
			if w.action == Block {
				blocked = append(blocked, "keyword")
				continue
			}
			set(i, w.re.ReplaceAllLiteralString(t, f.wordTag))
		}
	}
	if len(blocked) > 0 {
		sort.Strings(blocked)
		return Verdict{Blocked: true, Reason: "matched " + strings.Join(dedup(blocked), ", "), Entities: v.Entities}, nil
	}
	if copied || piiChanged {
		v.Texts = changed
	}
	return v, nil
}

// zeroWidth are the invisible characters that would otherwise split a
// keyword or a phrase: zero-width space, non-joiner and joiner, word
// joiner, soft hyphen and the byte order mark.
func zeroWidth(r rune) bool {
	switch r {
	case 0x200B, 0x200C, 0x200D, 0x2060, 0x00AD, 0xFEFF:
		return true
	}
	return false
}

// foldJoiners removes the zero-width characters from s (s itself when it
// has none, which ASCII text never has).
func foldJoiners(s string) string {
	if !hasNonASCII(s) || !strings.ContainsFunc(s, zeroWidth) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if zeroWidth(r) {
			return -1
		}
		return r
	}, s)
}

func hasNonASCII(s string) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 { // eight bytes, one load and one branch a step
		if load64(s, i)&0x8080808080808080 != 0 {
			return true
		}
	}
	for ; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// normalizeSpace is s with every Unicode space (no-break spaces, the
// other Zs, line and paragraph separators) made an ASCII space and the
// zero-width characters removed, in one pass: what the injection
// patterns' ASCII \s then sees as the model would.
func normalizeSpace(s string) string {
	if !hasNonASCII(s) {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case zeroWidth(r):
			return -1
		case r >= utf8.RuneSelf && unicode.IsSpace(r):
			return ' '
		}
		return r
	}, s)
}

func dedup(xs []string) []string {
	out := xs[:0]
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// injectionPatterns are well-known prompt-injection phrasings: asking the
// model to drop its instructions, to reveal them, or to take on an
// unrestricted persona. Each starts with one of injectionTriggers; the
// expression (RE2, linear) runs only at a word that starts with one, on
// the next injectionWindow bytes, so ordinary text costs one byte scan.
var injectionPatterns = regexp.MustCompile(`^(?i:` + strings.Join([]string{
	`(ignore|disregard|forget|skip|override|bypass)\s+(all\s+|any\s+|the\s+|your\s+|my\s+|these\s+|those\s+)*(previous|prior|above|earlier|preceding|initial|original|system)\s+(instructions?|prompts?|rules|directions|directives|guidelines|context|messages?)`,
	`(ignore|disregard|forget)\s+(everything|all)\s+(you\s+were\s+told|above|before)`,
	`(reveal|print|show|repeat|output|display|leak)\s+(me\s+)?(your|the)\s+(full\s+|entire\s+|hidden\s+|original\s+|initial\s+)*(system\s+prompt|system\s+message|hidden\s+instructions|initial\s+instructions|instructions\s+above)`,
	`you\s+are\s+now\s+(dan|in\s+developer\s+mode|jailbroken|unrestricted|an?\s+unfiltered)`,
	`(developer|god|dan|jailbreak)\s+mode\s+(enabled|activated|on)\b`,
	`do\s+anything\s+now\b`,
	`pretend\s+(that\s+)?you\s+(are|have)\s+(no|not\s+bound\s+by)\s+(restrictions|rules|guidelines|filters|limits)`,
	`act\s+as\s+(an?\s+)?(unrestricted|unfiltered|uncensored)\b`,
	`from\s+now\s+on\s+you\s+(will|must)\s+(ignore|not\s+follow)\b`,
	`new\s+instructions?\s*:\s*(ignore|disregard|you\s+are)`,
	`<\|?/?\s*(system|im_start|im_end)\s*\|?>`,
}, "|") + `)`)

// injectionTriggers are the words the patterns start with (lower case),
// indexed by their first byte.
var injectionTriggers = func() [256][]string {
	var t [256][]string
	for _, w := range []string{"ignore", "disregard", "forget", "skip", "override", "bypass", "reveal", "print", "show",
		"repeat", "output", "display", "leak", "you", "developer", "god", "dan", "jailbreak", "do", "pretend", "act",
		"from", "new", "<"} {
		t[w[0]] = append(t[w[0]], w)
	}
	return t
}()

// injectionPairs marks the first two bytes of the triggers longer than
// one byte, each ASCII folded to lower case by |0x20 (bit c1|c2<<8 of the
// set: the two bytes as a little-endian word), so that most words starting with a trigger's letter ("the",
// "and", "is") are passed over without a comparison. Only 'A'-'Z' and
// 'a'-'z' become a lower-case letter under |0x20, and every trigger's
// first two bytes are letters, so the test is exact. '<' followed by any
// byte is in the set too, so that the scan tests a word start and a '<'
// alike; '<' is unchanged by |0x20, and the scan only tests letters and
// '<' (injectionStarts), never 0x1C, the other byte that becomes '<'.
var injectionPairs = func() (t [1 << 16 / 64]uint64) {
	for c := range injectionTriggers {
		for _, w := range injectionTriggers[c] {
			if len(w) > 1 {
				k := int(w[0]) | int(w[1])<<8
				t[k>>6] |= 1 << (k & 63)
			}
		}
	}
	for c := 0; c < 256; c++ {
		k := int('<') | (c|0x20)<<8
		t[k>>6] |= 1 << (k & 63)
	}
	return t
}()

// injectionPair reports whether s[i] and s[i+1] (ASCII folded) are the
// first two bytes of a trigger; s[i] is a letter.
func injectionPair(s string, i int) bool {
	if i+1 >= len(s) {
		return false
	}
	k := int(s[i]|0x20) | int(s[i+1]|0x20)<<8
	return injectionPairs[k>>6]&(1<<(k&63)) != 0
}

// injectionWindow is the most text one pattern can span.
const injectionWindow = 240

// countInjections counts the places in s where a pattern matches. Only a
// word start (a letter after a non-letter) or a '<' can start one; they
// are found eight bytes a step (injectionStarts), and each is tested
// against the triggers' first two bytes before any comparison.
//
// ASCII text (most) is scanned as it is, the test for non-ASCII bytes
// made in the same pass; text with one is scanned again once its spaces
// are normalized.
func countInjections(s string) int {
	if n, ok := countInjectionsIn(s, true); ok {
		return n
	}
	n, _ := countInjectionsIn(normalizeSpace(s), false)
	return n
}

// countInjectionsIn is countInjections of s as it is; with ascii, it
// gives up (ok false) at the first non-ASCII byte.
func countInjectionsIn(s string, ascii bool) (n int, ok bool) {
	prev := uint64(0) // 0x80 when the byte before the block is a letter
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := load64(s, i)
		if ascii && x&0x8080808080808080 != 0 {
			return 0, false
		}
		cand, last := injectionStarts(x, prev)
		prev = last
		if cand == 0 {
			continue
		}
		next := uint16(' ') // the byte after the block; none: a space, which follows no trigger
		if i+8 < len(s) {
			next = uint16(s[i+8])
		}
		for cand != 0 {
			sh := uint(bits.TrailingZeros64(cand)) & 56 // the candidate's byte, in bits
			cand &= cand - 1
			// The pair test inline, on the block in hand: most word
			// starts end here.
			k := uint16(x >> sh)
			if sh == 56 {
				k |= next << 8
			}
			k |= 0x2020
			if injectionPairs[k>>6]&(1<<(k&63)) != 0 && injectionAt(s, i+int(sh>>3), ascii) {
				n++
			}
		}
	}
	for ; i < len(s); i++ {
		c := s[i]
		if ascii && c >= utf8.RuneSelf {
			return 0, false
		}
		if c != '<' && !(isLetter(c) && (i == 0 || !isLetter(s[i-1]))) {
			continue
		}
		if injectionAt(s, i, ascii) {
			n++
		}
	}
	return n, true
}

// load64 is s[i:i+8] as a little-endian word (one load once compiled).
func load64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// injectionStarts marks (the high bit of its byte) each byte of the eight
// in x, little endian, that is a letter after a non-letter or a '<';
// prev is 0x80 when the byte before them is a letter. last is the same
// for the byte after them. Bytes of 0x80 and above are no letters.
func injectionStarts(x, prev uint64) (cand, last uint64) {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	y := (x | 0x2020202020202020) & 0x7f7f7f7f7f7f7f7f // ASCII folded to lower case, high bit dropped
	ge := y + (0x80-'a')*ones                          // high bit: y >= 'a' (no carry: y <= 0x7f)
	gt := y + (0x80-'z'-1)*ones                        // high bit: y > 'z'
	letter := ge &^ gt &^ x & high
	starts := letter &^ (letter<<8 | prev)
	v := x ^ '<'*ones
	lt := ^(((v & 0x7f7f7f7f7f7f7f7f) + 0x7f7f7f7f7f7f7f7f) | v) & high // exact: bytes equal to '<'
	return starts | lt, letter >> 56
}

// injectionAt reports whether a pattern matches at s[i], a word start or
// a '<'. In ASCII text (ascii), the words a trigger's patterns go on with
// are compared first (follow.go), and the expression runs only where they
// follow.
func injectionAt(s string, i int, ascii bool) bool {
	c := s[i]
	if c == '<' {
		if ascii && !tagNext(s, i+1) {
			return false
		}
		return injectionPatterns.MatchString(s[i:min(len(s), i+injectionWindow)])
	}
	if !injectionPair(s, i) {
		return false
	}
	// Both bytes are letters (injectionPair is exact): the triggers that
	// start with them, one or two, are the only ones to compare.
	var x uint64 // s[i:i+8], ASCII letters folded to lower case by |0x20
	if i+8 <= len(s) {
		x = load64(s, i) | 0x2020202020202020
	}
	for _, t := range injectionByPair[pairIndex(c, s[i+1])] {
		w := t.w
		if i+8 <= len(s) {
			// One comparison of up to eight bytes: |0x20 makes a byte
			// equal a lower-case letter only when it is that letter in
			// either case, so this is hasPrefixFold's answer.
			if x&t.mask != t.word || len(w) > 8 && !hasPrefixFold(s[i+8:], w[8:]) {
				continue
			}
		} else if !hasPrefixFold(s[i:], w) {
			continue
		}
		if ascii && !followedByAny(s, i+len(w), injectionFollows[w]) {
			return false
		}
		return injectionPatterns.MatchString(s[i:min(len(s), i+injectionWindow)])
	}
	return false
}

// injectionByPair lists the triggers longer than a byte by their first two
// letters (pairIndex).
var injectionByPair = func() (t [26 * 26][]pairTrigger) {
	for c := range injectionTriggers {
		for _, w := range injectionTriggers[c] {
			if len(w) > 1 {
				k := pairIndex(w[0], w[1])
				p := pairTrigger{w: w}
				for j := 0; j < min(len(w), 8); j++ {
					p.word |= uint64(w[j]) << (8 * j)
					p.mask |= 0xff << (8 * j)
				}
				t[k] = append(t[k], p)
			}
		}
	}
	return t
}()

// A pairTrigger is a trigger w (lower case) with its first eight bytes
// (fewer when shorter) as a little-endian word and the mask of those
// bytes.
type pairTrigger struct {
	w          string
	word, mask uint64
}

// pairIndex numbers two ASCII letters, either case, from 0 to 26*26-1.
func pairIndex(a, b byte) int { return int(a|0x20-'a')*26 + int(b|0x20-'a') }

// hasPrefixFold reports whether s starts with the lower-case ASCII w,
// ASCII case folded: what strings.EqualFold(s[:len(w)], w) gives, since a
// non-ASCII rune never folds to an ASCII one of its length.
func hasPrefixFold(s, w string) bool {
	if len(s) < len(w) {
		return false
	}
	for k := 0; k < len(w); k++ {
		c := s[k]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != w[k] {
			return false
		}
	}
	return true
}

func isLetter(b byte) bool { return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' }

// injectionCheck blocks texts that match injectionPatterns.
type injectionCheck struct{}

func (injectionCheck) Check(_ context.Context, in *Input) (Verdict, error) {
	n := 0
	for _, t := range in.Texts {
		n += countInjections(t)
	}
	if n == 0 {
		return Verdict{}, nil
	}
	return Verdict{Blocked: true, Reason: "Rejected message. This is a prompt injection attack.", Entities: map[string]int{"prompt_injection": n}}, nil
}

// IsInjection reports whether s matches the built-in prompt-injection
// patterns (the labelled set's measure).
func IsInjection(s string) bool { return countInjections(s) > 0 }

// tighter is the smaller of two limits, 0 meaning none.
func tighter(a, b int64) int64 {
	if a == 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// limitCheck is tollgate_input_limits: the request body's bytes, and the
// tokens of all its text (tool call arguments included) and of its token
// id prompts (each id one token).
type limitCheck struct {
	maxBytes, maxTokens int64
}

func (l limitCheck) Check(_ context.Context, in *Input) (Verdict, error) {
	// A key's own limits (its metadata, which its owner may edit) can
	// only tighten the guardrail's.
	maxBytes, maxTokens := tighter(l.maxBytes, in.MaxInputBytes), tighter(l.maxTokens, in.MaxInputTokens)
	// The body as sent is what is measured; without one (a check of
	// texts alone), the texts.
	n := int64(len(in.Body))
	if in.Body == nil {
		for _, t := range in.Texts {
			n += int64(len(t))
		}
	}
	if maxBytes > 0 && n > maxBytes {
		return Verdict{Blocked: true, Reason: fmt.Sprintf("the input holds %d bytes, above the limit of %d", n, maxBytes), Entities: map[string]int{"max_input_bytes": 1}}, nil
	}
	// A token covers at least one byte of text and a token id takes at
	// least two bytes of the body: a body of no more bytes than the
	// limit is within it without counting.
	if maxTokens > 0 && n > maxTokens {
		t := TokenIDs(in.Body)
		for _, s := range in.Texts {
			t += tokens.Text(in.Model, s)
		}
		if t > maxTokens {
			return Verdict{Blocked: true, Reason: fmt.Sprintf("the input holds about %d tokens, above the limit of %d", t, maxTokens), Entities: map[string]int{"max_input_tokens": 1}}, nil
		}
	}
	return Verdict{}, nil
}

// TokenIDs counts the token ids of a body's prompt or input given as
// token ids: [1,2,3] or [[1,2],[3]] (completions and embeddings).
func TokenIDs(body []byte) int64 {
	if len(body) == 0 || body[0] != '{' {
		return 0
	}
	var req struct {
		Prompt json.RawMessage `json:"prompt"`
		Input  json.RawMessage `json:"input"`
	}
	if json.Unmarshal(body, &req) != nil {
		return 0
	}
	var n int64
	for _, raw := range []json.RawMessage{req.Prompt, req.Input} {
		if len(raw) == 0 || raw[0] != '[' {
			continue
		}
		var flat []int64
		if json.Unmarshal(raw, &flat) == nil {
			n += int64(len(flat))
			continue
		}
		var nested [][]int64
		if json.Unmarshal(raw, &nested) == nil {
			for _, ids := range nested {
				n += int64(len(ids))
			}
		}
	}
	return n
}
