package guardrail

import "strings"

// reSpaces are the bytes RE2's \s matches.
const reSpaces = "\t\n\f\r "

// injectionFollows lists, for each trigger, the words the patterns that
// start with it go on with, each after \s+ (RE2's ASCII \s): the next
// word, or the next few where only one path goes on. injectionAt tests
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

// followedByAny reports whether s[j:] goes on as one of the word lists
// says (followedBy).
func followedByAny(s string, j int, lists [][]string) bool {
	for _, words := range lists {
		if followedBy(s, j, words) {
			return true
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
