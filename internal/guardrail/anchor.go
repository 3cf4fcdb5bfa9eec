package guardrail

import "strings"

// The prompt-injection scan of ASCII text does not test every word start:
// it looks for anchors, four bytes that every match of a trigger holds
// at a fixed offset from the trigger's first letter (a part of the
// trigger, or a short trigger with the space the expression needs after
// it: "you" + \s, "do" + \s + (\s or "a")), by a Horspool skip over
// two-byte hashes: a window whose last two bytes end no anchor's last two
// bytes nor its middle two is passed three bytes at a time. Only where an
// anchor is whole is its trigger's word start tested as before
// (injectionAt). TestInjectionScanMatchesByteScan holds the result equal
// to the byte-by-byte scan.
//
// Why that finds every match: injectionPatterns is anchored at its start
// and each of its alternatives begins with a trigger word (or '<', found
// by a byte search of its own), so a match at i means the text at i
// begins with that trigger, and so holds its anchor at i+off.

// anchorLen is the length of every anchor.
const anchorLen = 4

// anchorSpace marks, in an anchor, a byte the expression reads as \s
// (RE2's ASCII \s: \t \n \f \r and space); anchorSpaceOrA also 'a' or
// 'A' (\s+ then "anything" or "as"), anchorSpaceOrM 'm' or 'M' (\s+
// then "mode"). Every alternative that starts with "you", "god", "dan",
// "do", "act" or "new" has \s+ after it, then those words.
const (
	anchorSpace    = 1
	anchorSpaceOrA = 2
	anchorSpaceOrM = 3
	anchorClasses  = anchorSpaceOrM // the largest class mark
)

type anchor struct {
	b   [anchorLen]byte // lower-case letters, or anchorSpace / anchorSpaceOrA
	off int             // where the anchor starts in its trigger
}

// injectionAnchors: one per trigger (injectionTriggers but "<"), chosen so
// that its last two bytes are rare in prose where the trigger allows.
var injectionAnchors = []anchor{
	{[4]byte{'i', 'g', 'n', 'o'}, 0},                    // ignore
	{[4]byte{'d', 'i', 's', 'r'}, 0},                    // disregard
	{[4]byte{'f', 'o', 'r', 'g'}, 0},                    // forget
	{[4]byte{'s', 'k', 'i', 'p'}, 0},                    // skip
	{[4]byte{'v', 'e', 'r', 'r'}, 1},                    // override
	{[4]byte{'b', 'y', 'p', 'a'}, 0},                    // bypass
	{[4]byte{'e', 'v', 'e', 'a'}, 1},                    // reveal
	{[4]byte{'r', 'i', 'n', 't'}, 1},                    // print
	{[4]byte{'s', 'h', 'o', 'w'}, 0},                    // show
	{[4]byte{'r', 'e', 'p', 'e'}, 0},                    // repeat
	{[4]byte{'o', 'u', 't', 'p'}, 0},                    // output
	{[4]byte{'i', 's', 'p', 'l'}, 1},                    // display
	{[4]byte{'l', 'e', 'a', 'k'}, 0},                    // leak
	{[4]byte{'y', 'o', 'u', anchorSpace}, 0},            // you\s+are
	{[4]byte{'e', 'l', 'o', 'p'}, 3},                    // developer
	{[4]byte{'o', 'd', anchorSpace, anchorSpaceOrM}, 1}, // god\s+mode
	{[4]byte{'a', 'n', anchorSpace, anchorSpaceOrM}, 1}, // dan\s+mode
	{[4]byte{'i', 'l', 'b', 'r'}, 2},                    // jailbreak
	{[4]byte{'d', 'o', anchorSpace, anchorSpaceOrA}, 0}, // do\s+anything
	{[4]byte{'p', 'r', 'e', 't'}, 0},                    // pretend
	{[4]byte{'c', 't', anchorSpace, anchorSpaceOrA}, 1}, // act\s+as
	{[4]byte{'f', 'r', 'o', 'm'}, 0},                    // from
	{[4]byte{'n', 'e', 'w', anchorSpace}, 0},            // new\s+instructions
}

// reSpaces are the bytes RE2's \s matches.
const reSpaces = "\t\n\f\r "

// anchorBytes lists the bytes one anchor byte stands for.
func anchorBytes(c byte) []byte {
	switch c {
	case anchorSpace:
		return []byte(reSpaces)
	case anchorSpaceOrA:
		return []byte(reSpaces + "aA")
	case anchorSpaceOrM:
		return []byte(reSpaces + "mM")
	}
	return []byte{c, c - ('a' - 'A')}
}

// anchorHash numbers two bytes: the pair as a little-endian word, so
// that the skip reads one table entry a step (the entries of the pairs
// prose is made of stay in the cache).
func anchorHash(a, b byte) int { return int(a) | int(b)<<8 }

// anchorShift is how far the window (its last byte e) may move on when
// s[e-1:e+1] hashes to k: 0 when that pair may end an anchor, 1 when it
// may be an anchor's middle, 2 when its first two, else 3.
// anchorsEnding lists the anchors whose last two bytes may hash to k.
var anchorShift, anchorsEnding = func() (sh [1 << 16]uint8, ends map[int][]int) {
	ends = map[int][]int{}
	for k := range sh {
		sh[k] = anchorLen - 1
	}
	for ai, a := range injectionAnchors {
		for p := 0; p+1 < anchorLen; p++ {
			for _, x := range anchorBytes(a.b[p]) {
				for _, y := range anchorBytes(a.b[p+1]) {
					k := anchorHash(x, y)
					d := uint8(anchorLen - 2 - p)
					if d < sh[k] {
						sh[k] = d
					}
					if d == 0 && !containsInt(ends[k], ai) {
						ends[k] = append(ends[k], ai)
					}
				}
			}
		}
	}
	return sh, ends
}()

func containsInt(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// anchorAt reports whether s[i:i+anchorLen] is the anchor a.
func anchorAt(s string, i int, a *anchor) bool {
	for p := 0; p < anchorLen; p++ {
		c := s[i+p]
		switch a.b[p] {
		case anchorSpace:
			if strings.IndexByte(reSpaces, c) < 0 {
				return false
			}
		case anchorSpaceOrA:
			if c|0x20 != 'a' && strings.IndexByte(reSpaces, c) < 0 {
				return false
			}
		case anchorSpaceOrM:
			if c|0x20 != 'm' && strings.IndexByte(reSpaces, c) < 0 {
				return false
			}
		default:
			if c|0x20 != a.b[p] { // exact: only 'A'-'Z' and 'a'-'z' become a-z under |0x20
				return false
			}
		}
	}
	return true
}

// countInjectionsAnchored is countInjections of ASCII text of at least
// anchorLen bytes.
func countInjectionsAnchored(s string) int {
	n := 0
	for at := 0; ; {
		k := strings.IndexByte(s[at:], '<')
		if k < 0 {
			break
		}
		if tagNext(s, at+k+1) && injectionAt(s, at+k) {
			n++
		}
		at += k + 1
	}
	// Two anchors can match for one start ("reve" of reveal and "velo" of
	// developer in "revelo"): a start is counted once. Two word starts
	// that both match are two bytes apart at least and offsets differ by
	// two at most, so the starts counted come in increasing order.
	last := -1
	for e := anchorLen - 1; e < len(s); {
		k := uint16(s[e-1]) | uint16(s[e])<<8
		if d := anchorShift[k]; d != 0 {
			e += int(d)
			continue
		}
		for _, ai := range anchorsEnding[int(k)] {
			a := &injectionAnchors[ai]
			i := e + 1 - anchorLen
			if !anchorAt(s, i, a) {
				continue
			}
			// The trigger's first letter, at a word start.
			i -= a.off
			if i <= last || i < 0 || !isLetter(s[i]) || (i > 0 && isLetter(s[i-1])) {
				continue
			}
			if injectionNext(s, i) && injectionAt(s, i) {
				n++
				last = i
			}
		}
		e++
	}
	return n
}

// injectionFollows lists, for each trigger, the words the patterns that
// start with it go on with, each after \s+ (RE2's ASCII \s): the next
// word, or the next few where only one path goes on. injectionNext tests
// them before the expression runs (its automaton costs some ten thousand
// instructions a call), so that "You are helpful" or "from the report"
// cost a comparison. Each list is what the patterns require, so no match
// is lost (TestInjectionScanMatchesByteScan); in ASCII text (?i) folds
// only ASCII letters.
var injectionFollows = func() map[string][][]string {
	objects := [][]string{{"all"}, {"any"}, {"the"}, {"your"}, {"my"}, {"these"}, {"those"}, {"previous"}, {"prior"},
		{"above"}, {"earlier"}, {"preceding"}, {"initial"}, {"original"}, {"system"}}
	m := map[string][][]string{
		"ignore": append(objects, []string{"everything"}), "disregard": append(objects, []string{"everything"}),
		"forget": append(objects, []string{"everything"}), "skip": objects, "override": objects, "bypass": objects,
		"you": {{"are", "now"}}, "do": {{"anything", "now"}}, "from": {{"now", "on", "you"}}, "act": {{"as"}},
		"new": {{"instruction"}}, "pretend": {{"that", "you"}, {"you"}},
	}
	for _, w := range []string{"reveal", "print", "show", "repeat", "output", "display", "leak"} {
		m[w] = [][]string{{"me"}, {"your"}, {"the"}}
	}
	for _, w := range []string{"developer", "god", "dan", "jailbreak"} {
		m[w] = [][]string{{"mode"}}
	}
	return m
}()

// injectionByFirst lists the triggers by their first letter, with the
// words that follow them.
var injectionByFirst = func() (t [26][]struct {
	word    string
	follows [][]string
}) {
	for w, f := range injectionFollows {
		k := w[0] - 'a'
		t[k] = append(t[k], struct {
			word    string
			follows [][]string
		}{w, f})
	}
	return t
}()

// injectionNext reports whether the trigger at s[i] (a letter at a word
// start) is followed as some pattern requires; false only when no
// pattern can match at i.
func injectionNext(s string, i int) bool {
	for _, t := range injectionByFirst[(s[i]|0x20)-'a'] {
		if !hasPrefixFold(s[i:], t.word) {
			continue
		}
		for _, words := range t.follows {
			if followedBy(s, i+len(t.word), words) {
				return true
			}
		}
	}
	return false
}

// followedBy reports whether s[j:] is, for each word, \s+ then the word
// (ASCII folded).
func followedBy(s string, j int, words []string) bool {
	for _, w := range words {
		k := j
		for k < len(s) && strings.IndexByte(reSpaces, s[k]) >= 0 {
			k++
		}
		if k == j || !hasPrefixFold(s[k:], w) {
			return false
		}
		j = k + len(w)
	}
	return true
}

// tagNext reports whether s[j:], after a '<', can go on as the chat
// template pattern requires (\|?/?\s*(system|im_start|im_end)): a mask's
// placeholder (<EMAIL_ADDRESS>) or markup is passed over without the
// expression.
func tagNext(s string, j int) bool {
	if j < len(s) && s[j] == '|' {
		j++
	}
	if j < len(s) && s[j] == '/' {
		j++
	}
	for j < len(s) && strings.IndexByte(reSpaces, s[j]) >= 0 {
		j++
	}
	return hasPrefixFold(s[j:], "system") || hasPrefixFold(s[j:], "im_")
}
