// Package echo is the deterministic answer of the built-in demo model and of
// the mock upstream: "Hello! You said:" and the first twelve words of the
// last user message. Both serve it, so the demo answers exactly as the fake
// the tests use.
package echo

import (
	"encoding/json"
	"strings"
)

// Text is the text of a content or prompt value: a string, or the text
// parts of an array (anything else as it is).
func Text(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) == nil {
		var b strings.Builder
		for _, p := range parts {
			b.WriteString(p.Text)
		}
		return b.String()
	}
	return string(raw)
}

// Words is the answer to a user who said said, a word per token.
func Words(said string) []string {
	w := strings.Fields(said)
	return append([]string{"Hello!", "You", "said:"}, w[:min(len(w), 12)]...)
}
