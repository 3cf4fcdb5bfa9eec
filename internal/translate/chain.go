package translate

import (
	"bytes"

	"github.com/tollgate/tollgate/internal/usage"
)

// chain translates a stream twice: each event the upstream sends goes
// through inner, and each event inner makes through outer. The usage is
// inner's, the side that reads the upstream, else outer's; the chunk count
// the larger of the two (an outer translator may count an answer started
// before any content).
type chain struct {
	inner, outer Stream
	buf          []byte
}

// Chain is the stream translation inner then outer (Gemini to chat to
// Messages, say), for an upstream and a client that no one translator
// joins.
func Chain(inner, outer Stream) Stream { return &chain{inner: inner, outer: outer} }

func (s *chain) Event(ev, out []byte) []byte {
	s.buf = s.inner.Event(ev, s.buf[:0])
	return s.feed(out)
}

// feed passes the events in buf, one by one, to outer.
func (s *chain) feed(out []byte) []byte {
	for rest := s.buf; len(rest) > 0; {
		var one []byte
		one, rest, _ = bytes.Cut(rest, []byte("\n\n"))
		if len(one) > 0 {
			out = s.outer.Event(append(one, '\n', '\n'), out)
		}
	}
	return out
}

func (s *chain) End(out []byte) []byte {
	s.buf = s.inner.End(s.buf[:0])
	return s.outer.End(s.feed(out))
}

func (s *chain) Usage() (usage.Usage, bool) {
	if u, ok := s.inner.Usage(); ok {
		return u, true
	}
	return s.outer.Usage()
}

func (s *chain) Chunks() int { return max(s.inner.Chunks(), s.outer.Chunks()) }
