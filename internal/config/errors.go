package config

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
)

// positioned rewrites a YAML error as "file:line:col: message", followed by
// the source excerpt, and suggests a known key for an unknown one.
func positioned(name string, err error) error {
	var ye yaml.Error
	if !errors.As(err, &ye) || ye.GetToken() == nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	pos := ye.GetToken().Position
	msg := ye.GetMessage()
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		if s := suggest(m[1]); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
	}
	src := ye.FormatError(false, true)
	if i := strings.IndexByte(src, '\n'); i >= 0 {
		src = src[i:]
	} else {
		src = ""
	}
	return fmt.Errorf("%s:%d:%d: %s%s", name, pos.Line, pos.Column, msg, src)
}

var unknownField = regexp.MustCompile(`unknown field "([^"]+)"`)

// knownKeys is every key any config section accepts, for suggestions.
var knownKeys = func() []string {
	seen := map[string]bool{}
	for _, v := range []any{Config{}, ModelEntry{}, LiteLLMParams{}, ModelInfo{}, GeneralSettings{}, KeyGenerateParams{},
		LiteLLMSettings{}, RouterSettings{}, LLM{}, LLMPolicies{}, APIKeyPolicy{}, APIKeySpec{}, LocalRateLimitSpec{},
		BackendAuth{}, LLMModel{}, LLMParams{}, Bind{}, Listener{}, Route{}, Backend{}, AIBackend{}, AIProviderParams{}} {
		for _, k := range yamlKeys(v) {
			seen[k] = true
		}
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}()

// suggest returns the known key closest to k, if it is close enough to be a
// typo, and never k itself (a known key rejected where it stands is
// misplaced, not misspelled).
func suggest(k string) string { return closest(k, knownKeys, 3) }

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			// transposition
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev[j-1]) // approximate Damerau step
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
