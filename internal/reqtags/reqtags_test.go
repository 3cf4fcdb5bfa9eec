package reqtags

import (
	"strings"
	"testing"
)

// TestCheck: the bounds an operator's tags are held to, each refusal
// naming the list and the tag's place.
func TestCheck(t *testing.T) {
	many := make([]string, MaxCount+1)
	for i := range many {
		many[i] = "t"
	}
	tests := []struct {
		list []string
		want string // "" passes; else a part of the message
	}{
		{nil, ""},
		{[]string{"prod", "team:core", "a,b", strings.Repeat("x", MaxBytes), "café"}, ""},
		{many[:MaxCount], ""},
		{many, "at most 32"},
		{[]string{"ok", ""}, "tags[1] is empty"},
		{[]string{strings.Repeat("x", MaxBytes+1)}, "at most 128 bytes"},
		{[]string{"bad\xff"}, "not valid UTF-8"},
		{[]string{"a\x00b"}, "U+0000"},
		{[]string{"a\tb"}, "U+0009"},
	}
	for _, tc := range tests {
		err := Check("tags", tc.list)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: refused: %v", tc.list, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want one saying %q", tc.list, err, tc.want)
		}
	}
}

// TestCheckAny: a decoded JSON value passes only as an array of strings
// within the bounds.
func TestCheckAny(t *testing.T) {
	for _, v := range []any{nil, []any{"a", "b"}, []string{"a"}} {
		if err := CheckAny("metadata.tags", v); err != nil {
			t.Errorf("%v: %v", v, err)
		}
	}
	for _, v := range []any{"a", []any{"a", 1}, map[string]any{}, []any{""}} {
		if err := CheckAny("metadata.tags", v); err == nil || !strings.Contains(err.Error(), "metadata.tags") {
			t.Errorf("%v: error %v, want a refusal naming metadata.tags", v, err)
		}
	}
}
