package ratelimit

import (
	"math"
	"math/bits"
	"strings"
	"sync"
	"time"
)

// Local keeps counters in process. One mutex makes a multi-rule admission
// atomic; it is held for a few hundred nanoseconds.
type Local struct {
	mu sync.Mutex
	// scopes holds each scope's states, one a rule (its kind and name), in
	// a list: one map entry, and one copy of the id, for a key's rpm, tpm
	// and parallel limits.
	scopes map[Scope]*state
	now    func() time.Time
	// swept is when idle states were last dropped.
	swept time.Time
}

// state is one rule's counters. Its parts for other kinds are not made:
// a parallel rule's state is 96 bytes, a window's 96 + 416 (384 before
// its running total), a bucket's 96 + 48 (they were 1,152 each, and a map
// slot of 64 bytes each).
type state struct {
	used   time.Time     // last admission, for idle sweeping
	window time.Duration // the rule's window as last seen, for sweeping
	// parallel
	inflight int64
	w        *slotCounts // sliding windows (Requests, Tokens)
	b        *bucket     // buckets
	next     *state      // the scope's next rule
	name     string      // the rule's
	kind     Kind
}

// bucket is a token bucket's state and its rule's limit and fill as last
// seen (for sweeping).
type bucket struct {
	tokens      int64
	filled      time.Time // when tokens was last brought up to date
	limit, fill int64
}

// slotCounts is a sliding window's counts per sub-window: slot p holds the
// count of the sub-window index(p), the last one of index ≡ p (mod slots+1)
// that was counted. They are what 61 int64 counts and 61 int64 indexes
// held, in 4 and 2 bytes: a counted slot's index is p plus slots+1 times
// its lap, and the lap is base plus an int16 offset (base moves to the lap
// being counted when that one is out of reach; a slot whose count is 0 may
// hold any lap, as it counts for nothing), a count an int32. An offset in
// laps reaches 32,767 × 61 sub-windows (23 days of a minute's window): an
// offset in sub-windows reached 9.1 hours, and a key used every 20 minutes
// kept counts that old in slots not written since, and went wide
// (TestProbeLowRateKeyWindowsStayNarrow). A count or a lap that does not
// fit moves the window to wide, the old arrays, for good: so every
// sequence of calls decides exactly as the arrays did (TestLocalMatchesOld),
// with a wall clock stepped back, a rule's window changed, or a token count
// past 2^31 in one sub-window.
//
// A read does not sum the slots: total is the sum of the live slots, those
// counted (count != 0) whose sub-window is one of the 61 up to head, the
// latest sub-window seen; live has bit p set for each. When time moves on,
// the slots that leave are subtracted once (advance), so a read or an add
// costs the same at any slot count (Issue 31, item 3). A counted slot that
// is not live has an index below dead (a slot that left, or one added
// behind the window after a clock stepped back); no counted slot is past
// head. A read at or past head, or behind it with nothing counted that
// could come back into its window (dead <= its first sub-window), is
// total; any other read (a clock stepped back over slots that left, or a
// rule's window lengthened) sums the slots as before and recounts total
// from them (rebuild), so every decision is the summing one's
// (TestWindowMatchesSum).
type slotCounts struct {
	base  int64
	off   [slots + 1]int16
	count [slots + 1]int32
	wide  *wideCounts
	head  int64
	total int64
	live  uint64
	dead  int64
}

type wideCounts struct {
	count [slots + 1]int64
	index [slots + 1]int64
}

// NewLocal returns an empty in-process backend.
func NewLocal() *Local {
	return &Local{scopes: map[Scope]*state{}, now: time.Now}
}

// get returns r's state, made if new.
func (l *Local) get(r *Rule, now time.Time, last *lastScope) *state {
	var head *state
	if last.head != nil && last.scope == r.Scope {
		head = last.head // a ticket's rules are mostly one scope's (a key's rpm, tpm, parallel)
	} else {
		head = l.scopes[r.Scope]
	}
	s := l.getIn(head, r, now)
	last.scope, last.head = r.Scope, head
	if head == nil {
		last.head = s // s is now the scope's head
	}
	return s
}

// lastScope is the scope a call of Admit or Done looked up last, and the
// head of its states' list: the next rule of the same scope skips the map
// (hashing the scope's id, a key's 64 hex digits). Valid under l.mu for
// one call only (a sweep may drop the scope between calls).
type lastScope struct {
	scope Scope
	head  *state
}

// getIn is get given the scope's list's head (nil: the scope has none yet).
func (l *Local) getIn(head *state, r *Rule, now time.Time) *state {
	s := head
	for s != nil && (s.kind != r.Kind || s.name != r.Name) {
		s = s.next
	}
	if s == nil {
		s = &state{name: r.Name, kind: r.Kind}
		switch r.Kind {
		case Requests, Tokens:
			s.w = new(slotCounts)
		case RequestBucket, TokenBucket:
			s.b = &bucket{tokens: r.Limit, filled: now}
		}
		if head != nil {
			// Behind the head: the map's entry (and its key) stays as it is.
			s.next, head.next = head.next, s
		} else {
			// The state outlives the request: its scope's id must not be a
			// slice of something the request holds (a principal's hash is
			// formatted into the principal, and would keep all of it alive).
			sc := r.Scope
			sc.ID = strings.Clone(sc.ID)
			l.scopes[sc] = s
		}
	}
	s.used = now
	s.window = r.Window
	if s.b != nil {
		s.b.limit, s.b.fill = r.Limit, r.Fill
	}
	return s
}

// window returns the uses still inside r's window at now, the sub-window
// index of now and when the oldest counted use expires.
func (c *slotCounts) window(r *Rule, now time.Time) (used, idx int64, reset time.Duration) {
	sl := int64(slotLen(r.Window))
	idx = now.UnixNano() / sl
	if idx < slots || (idx < c.head && c.dead > idx-slots) {
		// Behind head with slots that left counted again, or near the
		// epoch (where the sum's reset differs for negative indexes).
		used, idx, reset = c.sum(r, now)
		c.rebuild(idx)
		return used, idx, reset
	}
	if idx > c.head {
		c.advance(idx)
	}
	if c.live != 0 {
		// The oldest live slot: the first from head-slots's, round the ring.
		s := mod61(c.head - slots)
		rot := (c.live>>s | c.live<<(slots+1-s)) & ringAll
		oldest := c.head - slots + int64(bits.TrailingZeros64(rot))
		reset = time.Duration((oldest+slots+1)*sl - now.UnixNano())
	}
	return max(c.total, 0), idx, reset
}

// ringAll has a bit for each of the slots+1 slots.
const ringAll = uint64(1)<<(slots+1) - 1

// mod61 is i's slot: i mod slots+1, in [0, slots].
func mod61(i int64) uint {
	m := i % (slots + 1)
	if m < 0 {
		m += slots + 1
	}
	return uint(m)
}

// advance moves head on to idx (> head): the live slots whose sub-windows
// leave the window are subtracted from total, once.
func (c *slotCounts) advance(idx int64) {
	if c.live != 0 {
		gone := c.live
		if k := idx - c.head; k <= slots {
			// The k sub-windows from head-slots leave: their slots, from
			// head-slots's round the ring.
			s, m := mod61(c.head-slots), uint64(1)<<k-1
			gone &= (m<<s | m>>(slots+1-s)) & ringAll
		}
		if gone != 0 {
			for g := gone; g != 0; g &= g - 1 {
				c.total -= c.countAt(bits.TrailingZeros64(g))
			}
			c.live &^= gone
			c.dead = max(c.dead, idx-slots)
		}
	}
	c.head = idx
}

// countAt is slot i's count.
func (c *slotCounts) countAt(i int) int64 {
	if c.wide != nil {
		return c.wide.count[i]
	}
	return int64(c.count[i])
}

// indexAt is slot i's sub-window.
func (c *slotCounts) indexAt(i int) int64 {
	if c.wide != nil {
		return c.wide.index[i]
	}
	return (c.base+int64(c.off[i]))*(slots+1) + int64(i)
}

// rebuild recounts total, live and dead from the slots, with head the
// latest of idx and every counted slot's sub-window.
func (c *slotCounts) rebuild(idx int64) {
	head := idx
	for i := range slots + 1 {
		if c.countAt(i) != 0 {
			head = max(head, c.indexAt(i))
		}
	}
	c.head, c.total, c.live, c.dead = head, 0, 0, math.MinInt64
	for i := range slots + 1 {
		n := c.countAt(i)
		if n == 0 {
			continue
		}
		if at := c.indexAt(i); at >= head-slots {
			c.total += n
			c.live |= 1 << i
		} else {
			c.dead = max(c.dead, at+1)
		}
	}
}

// sum sums the uses still inside r's window at now, slot by slot: window
// as it was before total (kept for the reads total cannot answer).
func (c *slotCounts) sum(r *Rule, now time.Time) (used, idx int64, reset time.Duration) {
	sl := slotLen(r.Window)
	idx = now.UnixNano() / int64(sl)
	oldest := int64(-1)
	if c.wide != nil {
		for i := range c.wide.count {
			if c.wide.index[i] >= idx-slots && c.wide.count[i] != 0 {
				used += c.wide.count[i]
				if oldest < 0 || c.wide.index[i] < oldest {
					oldest = c.wide.index[i]
				}
			}
		}
	} else {
		// index(i) >= idx-slots, in laps from base: lap(i) past that
		// index's lap, or the same lap and i at or past its slot.
		lo := idx - slots
		loLap, loSlot := lo/(slots+1), lo%(slots+1)
		if loSlot < 0 {
			loLap, loSlot = loLap-1, loSlot+slots+1
		}
		dl := loLap - c.base
		// The oldest is the least (lap, slot): i ascends, so a slot of the
		// same lap as the least so far is not older.
		least, leastSlot := int64(math.MaxInt64), 0
		for i, n := range c.count {
			if n == 0 {
				continue
			}
			if o := int64(c.off[i]); o > dl || (o == dl && int64(i) >= loSlot) {
				used += int64(n)
				if o < least {
					least, leastSlot = o, i
				}
			}
		}
		if least != math.MaxInt64 {
			oldest = (c.base+least)*(slots+1) + int64(leastSlot)
		}
	}
	if oldest >= 0 {
		reset = time.Duration((oldest+slots+1)*int64(sl) - now.UnixNano())
	}
	return max(used, 0), idx, reset
}

// add counts n in the sub-window idx: its slot is that sub-window's from
// now on, its count reset if it held another's; total follows.
func (c *slotCounts) add(idx, n int64) {
	if idx > c.head {
		c.advance(idx)
	}
	lap, i := idx/(slots+1), idx%(slots+1)
	var before int64 // the slot's count in total
	if c.live&(1<<i) != 0 {
		before = c.countAt(int(i))
	}
	if c.wide == nil && c.base+int64(c.off[i]) == lap {
		if sum := int64(c.count[i]) + n; sum == int64(int32(sum)) {
			c.count[i] = int32(sum) // the common case
			c.track(i, idx, before, sum)
			return
		}
	}
	c.addSlot(i, lap, idx, n)
	c.track(i, idx, before, c.countAt(int(i)))
}

// track moves slot i's part of total from before to after, its count now
// that it holds the sub-window idx (<= head).
func (c *slotCounts) track(i, idx, before, after int64) {
	c.total -= before
	if after != 0 && idx >= c.head-slots {
		c.total += after
		c.live |= 1 << i
		return
	}
	c.live &^= 1 << i
	if after != 0 {
		c.dead = max(c.dead, idx+1)
	}
}

// addSlot is add when the slot holds another sub-window, or the sum does
// not fit an int32, or the counts are wide.
func (c *slotCounts) addSlot(i, lap, idx, n int64) {
	if c.wide == nil {
		var cur int64
		if c.base+int64(c.off[i]) == lap {
			cur = int64(c.count[i])
		}
		sum := cur + n
		if sum == int64(int32(sum)) && c.place(i, lap) {
			c.count[i] = int32(sum)
			return
		}
		c.widen()
	}
	w := c.wide
	if w.index[i] != idx {
		w.index[i], w.count[i] = idx, 0
	}
	w.count[i] += n
}

// place makes slot i's lap lap, moving base to lap when lap is out of
// reach of it; false (nothing changed) when a counted slot would then be.
func (c *slotCounts) place(i, lap int64) bool {
	if d := lap - c.base; d == int64(int16(d)) {
		c.off[i] = int16(d)
		return true
	}
	var off [slots + 1]int16
	for j, n := range c.count {
		if int64(j) == i || n == 0 {
			continue // off 0: lap lap (slot i), or a slot that counts nothing
		}
		d := c.base + int64(c.off[j]) - lap
		if d != int64(int16(d)) {
			return false
		}
		off[j] = int16(d)
	}
	c.base, c.off = lap, off
	return true
}

// widen moves the counts to int64 counts and indexes.
func (c *slotCounts) widen() {
	w := new(wideCounts)
	for i := range c.count {
		w.index[i] = (c.base+int64(c.off[i]))*(slots+1) + int64(i)
		w.count[i] = int64(c.count[i])
	}
	c.wide = w
}

// refill brings a bucket up to date.
func (b *bucket) refill(window time.Duration, now time.Time) {
	if window <= 0 || b.fill <= 0 {
		return
	}
	fills := int64(now.Sub(b.filled) / window)
	if fills > 0 {
		b.tokens = min(b.limit, b.tokens+fills*b.fill)
		b.filled = b.filled.Add(time.Duration(fills) * window)
	}
	if b.tokens >= b.limit {
		b.filled = now
	}
}

// untilRefilled is how long until a bucket holds need tokens.
func (b *bucket) untilRefilled(window time.Duration, now time.Time, need int64) time.Duration {
	if b.fill <= 0 || window <= 0 {
		return 0
	}
	missing := need - b.tokens
	if missing <= 0 {
		return 0
	}
	fills := (missing + b.fill - 1) / b.fill
	return b.filled.Add(time.Duration(fills) * window).Sub(now)
}

// Admit checks every rule of t and, if all pass, takes from each. A refusal
// changes nothing.
func (l *Local) Admit(t *Ticket) *Denied {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maybeSweep(now)
	var stBuf [sizedRules]*state
	var idxBuf [sizedRules]int64
	st, idx := stBuf[:], idxBuf[:]
	if len(t.rules) > sizedRules {
		st, idx = make([]*state, len(t.rules)), make([]int64, len(t.rules))
	}
	var last lastScope
	for i := range len(t.rules) {
		r := &t.rules[i]
		s := l.get(r, now, &last)
		st[i] = s
		switch r.Kind {
		case Requests, Tokens:
			used, at, reset := s.w.window(r, now)
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
			b := s.b
			b.refill(r.Window, now)
			need := int64(1)
			if r.Kind == TokenBucket {
				need = t.Est
			}
			if need > r.Limit {
				return &Denied{Rule: *r, Used: r.Limit - b.tokens, Never: true, Need: need}
			}
			if (need == 0 && b.tokens <= 0) || (need > 0 && b.tokens < need) {
				return &Denied{Rule: *r, Used: r.Limit - b.tokens, RetryAfter: b.untilRefilled(r.Window, now, max(need, 1))}
			}
			t.States[i] = State{Remaining: b.tokens - need, Reset: b.untilRefilled(r.Window, now, r.Limit)}
		}
	}
	for i := range len(t.rules) {
		r, s := &t.rules[i], st[i]
		switch r.Kind {
		case Requests:
			s.w.add(idx[i], 1)
		case Tokens:
			s.w.add(idx[i], t.Est)
		case Parallel:
			s.inflight++
		case RequestBucket:
			s.b.tokens--
		case TokenBucket:
			s.b.tokens -= t.Est
		}
	}
	t.admitted, t.at = true, now.UnixNano()
	return nil
}

// Done settles t: token rules are charged the difference between the real
// usage and the estimate taken at admission, and parallel slots are freed.
func (l *Local) Done(t *Ticket, tokens int64) {
	now := l.now()
	delta := tokens - t.Est
	l.mu.Lock()
	defer l.mu.Unlock()
	var last lastScope
	for i := range len(t.rules) {
		r := &t.rules[i]
		s := l.get(r, now, &last)
		switch r.Kind {
		case Tokens:
			cur := now.UnixNano() / int64(slotLen(r.Window)) // the sub-window of now, as window gives it, without its sum
			switch {
			case delta > 0:
				s.w.add(cur, delta)
			case delta < 0:
				// A refund cancels the estimate where it was charged; once that
				// has left the window there is nothing left to cancel.
				if at := t.at / int64(slotLen(r.Window)); at >= cur-slots {
					s.w.add(at, delta)
				}
			}
		case TokenBucket:
			s.b.refill(r.Window, now)
			s.b.tokens = min(s.b.tokens-delta, r.Limit)
		case Parallel:
			s.inflight = max(s.inflight-1, 0)
		}
	}
}

// maybeSweep drops, once a minute, states idle for an hour that a new state
// would equal: windows whose uses expired, no slots held, buckets full again.
// A bucket in debt or still refilling is kept.
func (l *Local) maybeSweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	for sc, head := range l.scopes {
		kept := head // the list's head once the idle are dropped
		for prev, s := (*state)(nil), head; s != nil; s = s.next {
			if !s.idle(now) {
				prev = s
				continue
			}
			if prev == nil {
				kept = s.next
			} else {
				prev.next = s.next
			}
		}
		switch {
		case kept == nil:
			delete(l.scopes, sc)
		case kept != head:
			// A map assignment would store this loop's copy of the key, the
			// same clone: the entry's id is not the request's.
			l.scopes[sc] = kept
		}
	}
}

// idle reports whether the state is one to drop: idle for an hour past
// its window, no slot held, a bucket full again.
func (s *state) idle(now time.Time) bool {
	if now.Sub(s.used) < time.Hour+s.window || s.inflight > 0 {
		return false
	}
	if s.b != nil {
		s.b.refill(s.window, now)
		if s.b.tokens < s.b.limit {
			return false
		}
	}
	return true
}
