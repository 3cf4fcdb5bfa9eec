package guardrail

import (
	"strings"

	"github.com/tollgate/tollgate/internal/redact"
)

// MaxPending is the most streamed text Pending ever keeps back.
const MaxPending = redact.MaxPending

// pender is a check that can say how much of the end of a text could be
// the start of a finding the text to come completes.
type pender interface {
	pending(s string) int
}

// Pending returns how many bytes at the end of the streamed text s the
// post_call guardrails of gs could still find part of a finding in: a
// stream keeps them back until the next text decides, so that a finding
// split across two events is masked (or blocked) whole before any of it
// is sent. It is 0 for ordinary prose (redact.Pending), and at most
// MaxPending.
func Pending(gs []*Guardrail, s string) int {
	n := 0
	for _, g := range gs {
		if g.Mode&PostCall == 0 || !g.Active {
			continue
		}
		if p, ok := g.check.(pender); ok {
			n = max(n, p.pending(s))
		}
	}
	return min(n, MaxPending, len(s))
}

// Holds reports whether any post_call guardrail of gs may keep text back.
func Holds(gs []*Guardrail) bool {
	for _, g := range gs {
		if _, ok := g.check.(pender); ok && g.Mode&PostCall != 0 && g.Active {
			return true
		}
	}
	return false
}

func (p *piiCheck) pending(s string) int {
	n := redact.Pending(s)
	if _, ok := p.actions[redact.EmailAddress]; ok {
		// An address split just before its '@' ("jane" | "@example.com"):
		// the word at the end may be its local part.
		n = max(n, redact.PendingLocal(s))
	}
	return n
}

// pending: the prebuilt patterns' tail, and the longest end of s that is
// the start of a keyword (ASCII folded; keywords match inside words). A
// regex pattern's matches are not waited for.
func (f *filterCheck) pending(s string) int {
	n := 0
	if f.pii != nil {
		n = f.pii.pending(s)
	}
	for _, w := range f.words {
		kw := w.lower
		if kw == "" {
			continue
		}
		for k := min(len(kw)-1, len(s)); k > n; k-- {
			if strings.EqualFold(s[len(s)-k:], kw[:k]) {
				n = k
				break
			}
		}
	}
	return n
}
