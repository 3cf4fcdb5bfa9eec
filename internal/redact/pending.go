package redact

import "strings"

// MaxPending is the most text Pending holds back: more than any finding it
// waits for spans (a provider key, a card or phone number, an IBAN, an
// e-mail address of ordinary length, a bearer token). A PEM private key
// block is longer and is not waited for.
const MaxPending = 256

// pendingWords are the heads a secret starts with: a tail of text that is
// the beginning of one of them ("s", "sk", "AIz", "Bea") may become a
// finding with the text that follows.
var pendingWords = func() []string {
	out := []string{"eyJ", "AKIA", "ASIA", "Bearer", "bearer", "BEARER", "Basic", "basic", "BASIC", "-----BEGIN"}
	for _, p := range apiKeyPrefixes {
		out = append(out, p.prefix)
	}
	return out
}()

// isPendingByte are the bytes a finding in progress is made of: those of
// keys and tokens, e-mail addresses, numbers and IP addresses.
func isPendingByte(b byte) bool {
	return isToken(b) || strings.IndexByte(".@+%/=~:()", b) >= 0
}

// Pending returns how many bytes at the end of s could be the start of a
// finding that the text to come completes: a streamed answer keeps them
// back until it knows (TestPending). It is 0 for a tail of ordinary
// prose: after a space or punctuation, and after a word of letters alone
// that no secret starts with, so such text is never delayed. A tail that
// holds a digit, an '@' or a separator inside a token, or that is the
// start of a key prefix or an authorization scheme, is pending; digits or
// capitals grouped by single spaces or dashes ("4111 1111 1111",
// "DE89 3704") count as one tail, and so does a scheme before its
// credential ("Bearer eyJ"). It is never more than MaxPending.
func Pending(s string) int {
	i := len(s)
	lo := max(0, len(s)-MaxPending)
	for i > lo {
		b := s[i-1]
		switch {
		case isPendingByte(b):
			i--
			continue
		case b == ' ' && i-1 > lo && i < len(s) &&
			((isDigit(s[i-2]) || s[i-2] == ')') && (isDigit(s[i]) || isUpper(s[i]) || s[i] == '(') ||
				isUpper(s[i-2]) && isDigit(s[i])):
			// Groups of a card, phone or IBAN number (a digit on one
			// side at least: "IBAN DE89" is a word and a group).
			i--
			continue
		case b == ' ' && i == len(s) && i-1 > lo && (isDigit(s[i-2]) || s[i-2] == ')'):
			// The space after a group, before the next ("4111 1111 ").
			i--
			continue
		case b == ' ' || b == '\t':
			// A credential after its scheme: the scheme goes with it.
			for _, w := range []string{"Bearer", "bearer", "BEARER", "Basic", "basic", "BASIC"} {
				if j := i - 1 - len(w); j >= lo && s[j:i-1] == w && (j == 0 || !isWord(s[j-1])) {
					return len(s) - j
				}
			}
		}
		break
	}
	tail := s[i:]
	if tail == "" {
		return 0
	}
	for _, w := range pendingWords {
		if strings.HasPrefix(w, tail) || strings.HasPrefix(tail, w) {
			return len(tail)
		}
	}
	// A separator at the very end ("the end.", "well,") is punctuation
	// unless more of a token follows it; inside a token it is not.
	core := strings.TrimRight(tail, ".:)")
	for j := 0; j < len(core); j++ {
		if b := core[j]; !isUpper(b) && !isLower(b) {
			return len(tail)
		}
	}
	return 0
}

// PendingLocal returns how many bytes at the end of s could be the local
// part of an e-mail address whose '@' the text to come starts with
// ("write to jane" before "@example.com"): a trailing run of the bytes a
// local part is made of, ending in a letter, digit or one of _ % + -,
// at most 64 bytes (the longest local part) and never more than
// MaxPending. A stream whose guardrails mask e-mail addresses holds it
// back, so that an address split just before its '@' is masked whole; it
// is 0 after a space or punctuation.
func PendingLocal(s string) int {
	i := len(s)
	for i > 0 && len(s)-i < 64 && isLocal(s[i-1]) {
		i--
	}
	if i == len(s) || s[len(s)-1] == '.' || (i > 0 && isLocal(s[i-1])) {
		return 0 // nothing, a sentence's end, or a run too long to be a local part
	}
	return len(s) - i
}
