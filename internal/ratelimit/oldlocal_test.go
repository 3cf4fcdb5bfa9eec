package ratelimit

// The in-process limiter as it was before its states were made smaller
// (main at 559ff5d: 61 int64 counts and 61 int64 sub-window indexes in
// every state of every kind, and the last rule seen), kept only so that
// TestLocalMatchesOld can drive both side by side.

import (
	"strings"
	"sync"
	"time"
)

// oldLocal keeps counters in process. One mutex makes a multi-rule admission
// atomic; it is held for a few hundred nanoseconds.
type oldLocal struct {
	mu     sync.Mutex
	states map[stateKey]*oldState
	now    func() time.Time
	// swept is when idle states were last dropped.
	swept time.Time
}

// state is one rule's counters; which fields are used depends on the kind.
type oldState struct {
	// sliding window: counts per sub-window, and the sub-window each holds.
	counts [slots + 1]int64
	index  [slots + 1]int64
	// parallel
	inflight int64
	// bucket
	tokens int64
	filled time.Time // when tokens was last brought up to date
	used   time.Time // last admission, for idle sweeping
	rule   Rule      // the rule as last seen, for sweeping
}

// newOldLocal returns an empty in-process backend.
func newOldLocal() *oldLocal {
	return &oldLocal{states: map[stateKey]*oldState{}, now: time.Now}
}

func (l *oldLocal) get(r *Rule, now time.Time) *oldState {
	k := stateKey{r.Scope, r.Kind, r.Name}
	s := l.states[k]
	if s == nil {
		// The state outlives the request: its scope's id must not be a
		// slice of something the request holds (a principal's hash is
		// formatted into the principal, and would keep all of it alive).
		k.scope.ID = strings.Clone(k.scope.ID)
		s = &oldState{tokens: r.Limit, filled: now, rule: Rule{Scope: k.scope}}
		l.states[k] = s
	}
	s.used = now
	scope := s.rule.Scope
	s.rule = *r
	s.rule.Scope = scope
	return s
}

// window sums the uses still inside r's window at now, and returns the
// sub-window index of now and when the oldest counted use expires.
func (s *oldState) window(r *Rule, now time.Time) (used, idx int64, reset time.Duration) {
	sl := slotLen(r.Window)
	idx = now.UnixNano() / int64(sl)
	oldest := int64(-1)
	for i := range s.counts {
		if s.index[i] >= idx-slots && s.counts[i] != 0 {
			used += s.counts[i]
			if oldest < 0 || s.index[i] < oldest {
				oldest = s.index[i]
			}
		}
	}
	if oldest >= 0 {
		reset = time.Duration((oldest+slots+1)*int64(sl) - now.UnixNano())
	}
	return max(used, 0), idx, reset
}

func (s *oldState) add(idx, n int64) {
	i := idx % int64(len(s.counts))
	if s.index[i] != idx {
		s.index[i], s.counts[i] = idx, 0
	}
	s.counts[i] += n
}

// refill brings a bucket up to date.
func (s *oldState) refill(r *Rule, now time.Time) {
	if r.Window <= 0 || r.Fill <= 0 {
		return
	}
	fills := int64(now.Sub(s.filled) / r.Window)
	if fills > 0 {
		s.tokens = min(r.Limit, s.tokens+fills*r.Fill)
		s.filled = s.filled.Add(time.Duration(fills) * r.Window)
	}
	if s.tokens >= r.Limit {
		s.filled = now
	}
}

// untilRefilled is how long until a bucket holds need tokens.
func (s *oldState) untilRefilled(r *Rule, now time.Time, need int64) time.Duration {
	if r.Fill <= 0 || r.Window <= 0 {
		return 0
	}
	missing := need - s.tokens
	if missing <= 0 {
		return 0
	}
	fills := (missing + r.Fill - 1) / r.Fill
	return s.filled.Add(time.Duration(fills) * r.Window).Sub(now)
}

// Admit checks every rule of t and, if all pass, takes from each. A refusal
// changes nothing.
func (l *oldLocal) Admit(t *Ticket) *Denied {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maybeSweep(now)
	var stBuf [inlineRules]*oldState
	var idxBuf [inlineRules]int64
	st, idx := stBuf[:], idxBuf[:]
	if t.n > inlineRules {
		st, idx = make([]*oldState, t.n), make([]int64, t.n)
	}
	for i := range t.n {
		r := &t.rules[i]
		s := l.get(r, now)
		st[i] = s
		switch r.Kind {
		case Requests, Tokens:
			used, at, reset := s.window(r, now)
			idx[i] = at
			need := int64(1)
			if r.Kind == Tokens {
				need = t.Est
			}
			if need > r.Limit {
				return &Denied{Rule: *r, Used: used, Never: true, Need: need}
			}
			if used+need > r.Limit || (need == 0 && used >= r.Limit) {
				return &Denied{Rule: *r, Used: used, RetryAfter: reset}
			}
			t.States[i] = State{Remaining: r.Limit - used - need, Reset: reset}
		case Parallel:
			if s.inflight >= r.Limit {
				return &Denied{Rule: *r, Used: s.inflight, RetryAfter: time.Second}
			}
			t.States[i] = State{Remaining: r.Limit - s.inflight - 1}
		case RequestBucket, TokenBucket:
			s.refill(r, now)
			need := int64(1)
			if r.Kind == TokenBucket {
				need = t.Est
			}
			if need > r.Limit {
				return &Denied{Rule: *r, Used: r.Limit - s.tokens, Never: true, Need: need}
			}
			if (need == 0 && s.tokens <= 0) || (need > 0 && s.tokens < need) {
				return &Denied{Rule: *r, Used: r.Limit - s.tokens, RetryAfter: s.untilRefilled(r, now, max(need, 1))}
			}
			t.States[i] = State{Remaining: s.tokens - need, Reset: s.untilRefilled(r, now, r.Limit)}
		}
	}
	for i := range t.n {
		r, s := &t.rules[i], st[i]
		switch r.Kind {
		case Requests:
			s.add(idx[i], 1)
		case Tokens:
			s.add(idx[i], t.Est)
		case Parallel:
			s.inflight++
		case RequestBucket:
			s.tokens--
		case TokenBucket:
			s.tokens -= t.Est
		}
	}
	t.admitted, t.at = true, now
	return nil
}

// Done settles t: token rules are charged the difference between the real
// usage and the estimate taken at admission, and parallel slots are freed.
func (l *oldLocal) Done(t *Ticket, tokens int64) {
	now := l.now()
	delta := tokens - t.Est
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range t.n {
		r := &t.rules[i]
		s := l.get(r, now)
		switch r.Kind {
		case Tokens:
			cur := now.UnixNano() / int64(slotLen(r.Window)) // the sub-window of now, as window gives it, without its sum
			switch {
			case delta > 0:
				s.add(cur, delta)
			case delta < 0:
				// A refund cancels the estimate where it was charged; once that
				// has left the window there is nothing left to cancel.
				if at := t.at.UnixNano() / int64(slotLen(r.Window)); at >= cur-slots {
					s.add(at, delta)
				}
			}
		case TokenBucket:
			s.refill(r, now)
			s.tokens = min(s.tokens-delta, r.Limit)
		case Parallel:
			s.inflight = max(s.inflight-1, 0)
		}
	}
}

// maybeSweep drops, once a minute, states idle for an hour that a new state
// would equal: windows whose uses expired, no slots held, buckets full again.
// A bucket in debt or still refilling is kept.
func (l *oldLocal) maybeSweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	for k, s := range l.states {
		if now.Sub(s.used) < time.Hour+s.rule.Window || s.inflight > 0 {
			continue
		}
		if k.kind.isBucket() {
			s.refill(&s.rule, now)
			if s.tokens < s.rule.Limit {
				continue
			}
		}
		delete(l.states, k)
	}
}
