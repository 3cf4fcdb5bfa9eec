// Package reqtags holds the rule for a request tag that an operator sets:
// on a key (tags, metadata.tags), on a team (metadata.tags) or on a
// deployment (litellm_params.tags). Such a tag is stored and configured
// once and then carried by every request, so it is checked where it is set
// and refused there, instead of being dropped later without a word.
package reqtags

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Bounds on a request's tags. The gateway keeps at most MaxCount tags per
// request, each at most MaxBytes long.
const (
	MaxCount = 32
	MaxBytes = 128
)

// Check reports why list cannot be a set of request tags: more than
// MaxCount of them, or one that is empty, longer than MaxBytes, not UTF-8
// or holding a control character (such as NUL, a tab or a newline).
// field names the list in the message. nil when list is fine.
func Check(field string, list []string) error {
	if len(list) > MaxCount {
		return fmt.Errorf("%s has %d tags: at most %d are allowed", field, len(list), MaxCount)
	}
	for i, t := range list {
		if err := check(t); err != nil {
			return fmt.Errorf("%s[%d] %v", field, i, err)
		}
	}
	return nil
}

func check(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("is empty: a tag is 1 to %d bytes", MaxBytes)
	case len(t) > MaxBytes:
		return fmt.Errorf("is %d bytes long: a tag is at most %d bytes", len(t), MaxBytes)
	case !utf8.ValidString(t):
		return fmt.Errorf("is not valid UTF-8")
	}
	for _, r := range t {
		if unicode.IsControl(r) {
			return fmt.Errorf("holds the control character %U: a tag may not", r)
		}
	}
	return nil
}

// CheckAny is Check for a decoded JSON value (a metadata object's tags):
// nil and a list of valid strings pass.
func CheckAny(field string, v any) error {
	if v == nil {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		if l, ok := v.([]string); ok {
			return Check(field, l)
		}
		return fmt.Errorf("%s must be an array of strings", field)
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			return fmt.Errorf("%s must be an array of strings", field)
		}
		out = append(out, s)
	}
	return Check(field, out)
}
