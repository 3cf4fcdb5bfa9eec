package guardrail

import (
	"strings"
	"testing"
)

// TestInjectionAnchorsAreSound: each anchor is its trigger's bytes at its
// offset (or the space the patterns need after a short trigger), every
// trigger but "<" has one.
func TestInjectionAnchorsAreSound(t *testing.T) {
	t.Parallel()
	byTrigger := map[string]bool{}
	for _, a := range injectionAnchors {
		var trig strings.Builder
		for p := 0; p < anchorLen; p++ {
			if c := a.b[p]; c > anchorClasses {
				trig.WriteByte(c)
			} else {
				break
			}
		}
		// The trigger whose bytes from a.off begin with the anchor's letters.
		found := ""
		for c := range injectionTriggers {
			for _, w := range injectionTriggers[c] {
				if len(w) >= a.off+trig.Len() && w[a.off:a.off+trig.Len()] == trig.String() {
					letters := a.off + trig.Len()
					if letters < len(w) && letters-a.off < anchorLen {
						continue // the anchor has a space where the trigger has a letter
					}
					found = w
				}
			}
		}
		if found == "" {
			t.Errorf("anchor %q at %d is part of no trigger", a.b, a.off)
			continue
		}
		byTrigger[found] = true
	}
	for c := range injectionTriggers {
		for _, w := range injectionTriggers[c] {
			if w != "<" && !byTrigger[w] {
				t.Errorf("trigger %q has no anchor", w)
			}
		}
	}
}
