package ratelimit

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// localPair drives the in-process limiter and its old copy (oldlocal_test.go)
// with the same calls at the same times.
type localPair struct {
	now  time.Time
	nw   *Local
	old  *oldLocal
	open []ticketPair // admitted, not yet done
}

type ticketPair struct{ nw, old *Ticket }

func newLocalPair() *localPair {
	p := &localPair{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), nw: NewLocal(), old: newOldLocal()}
	p.nw.now = func() time.Time { return p.now }
	p.old.now = func() time.Time { return p.now }
	return p
}

// diffRules is the pool a sequence draws its tickets' rules from: every
// kind, on two scopes, with windows of a minute (slots of a second), of
// 60 ms (slots of a millisecond, so that gaps of seconds reach past an
// int16 of slots) and of 3 s, limits from 1 to past 2^31.
func diffRules() []Rule {
	var rs []Rule
	for _, id := range []string{"aaaa", "bbbb"} {
		sc := Scope{Entity: store.KindKey, ID: id}
		for _, w := range []time.Duration{time.Minute, 60 * time.Millisecond, 3 * time.Second} {
			for _, lim := range []int64{1, 3, 50, 5_000_000_000} {
				rs = append(rs,
					Rule{Scope: sc, Kind: Requests, Limit: lim, Window: w, Name: "rpm_limit"},
					Rule{Scope: sc, Kind: Tokens, Limit: lim, Window: w, Name: "tpm_limit"},
					Rule{Scope: sc, Kind: RequestBucket, Limit: lim, Window: w, Fill: 1 + lim/3, Name: "bucket"},
					Rule{Scope: sc, Kind: TokenBucket, Limit: lim, Window: w, Fill: 1 + lim/2, Name: "tokens"},
				)
			}
			rs = append(rs, Rule{Scope: sc, Kind: Parallel, Limit: 2, Window: w, Name: "max_parallel_requests"})
		}
	}
	return rs
}

// step does one random call: an admission, a settlement of an admitted
// ticket, or a move of the clock (within a slot, across slot and window
// edges, idle for longer than the window, the hour and the int16 of
// slots, or back). It reports the first difference.
func (p *localPair) step(pool []Rule, next func(n uint64) uint64, stepBack bool) error {
	switch op := next(10); {
	case op < 4:
		tn, to := new(Ticket), new(Ticket)
		n := 1 + int(next(4))
		if next(16) == 0 {
			n = sizedRules + 2 // past the inline rules
		}
		for range n {
			r := pool[next(uint64(len(pool)))]
			tn.Add(r)
			to.Add(r)
		}
		est := []int64{0, 1, 2, 7, 1_000, 3_000_000_000, math.MaxInt32}[next(7)]
		tn.Est, to.Est = est, est
		dn, do := p.nw.Admit(tn), p.old.Admit(to)
		if !reflect.DeepEqual(dn, do) {
			return fmt.Errorf("admission: new %+v, old %+v", dn, do)
		}
		if !reflect.DeepEqual(tn.States, to.States) || tn.admitted != to.admitted || tn.at != to.at {
			return fmt.Errorf("ticket: new %+v %v, old %+v %v", tn.States, tn.admitted, to.States, to.admitted)
		}
		if dn == nil {
			p.open = append(p.open, ticketPair{tn, to})
		}
	case op < 6:
		if len(p.open) == 0 {
			return nil
		}
		i := int(next(uint64(len(p.open))))
		tp := p.open[i]
		p.open = append(p.open[:i], p.open[i+1:]...)
		tokens := []int64{0, 1, tp.nw.Est, tp.nw.Est + 5, 3_000_000_000, math.MaxInt32 + 1}[next(6)]
		p.nw.Done(tp.nw, tokens)
		p.old.Done(tp.old, tokens)
	default:
		d := []time.Duration{
			time.Microsecond, 300 * time.Microsecond, time.Millisecond, 7 * time.Millisecond,
			999 * time.Millisecond, time.Second, 3 * time.Second, 59 * time.Second, 61 * time.Second,
			33 * time.Second, 2 * time.Minute, time.Hour + 2*time.Minute, 10 * time.Hour,
		}[next(13)]
		if stepBack && next(8) == 0 {
			d = -d // a wall clock stepped back
		}
		p.now = p.now.Add(d)
	}
	return p.same()
}

// count is how many states l keeps.
func (l *Local) count() (n int) {
	for _, head := range l.scopes {
		for s := head; s != nil; s = s.next {
			n++
		}
	}
	return n
}

// lookup is k's state in l, or nil.
func (l *Local) lookup(k stateKey) *state {
	s := l.scopes[k.scope]
	for s != nil && (s.kind != k.kind || s.name != k.name) {
		s = s.next
	}
	return s
}

// same compares every state: what the old one holds, the new one holds
// (a window slot counting 0 may hold any index).
func (p *localPair) same() error {
	if n := p.nw.count(); n != len(p.old.states) {
		return fmt.Errorf("%d states, old %d", n, len(p.old.states))
	}
	for k, o := range p.old.states {
		s := p.nw.lookup(k)
		if s == nil {
			return fmt.Errorf("state %v missing", k)
		}
		if !s.used.Equal(o.used) || s.window != o.rule.Window || s.inflight != o.inflight {
			return fmt.Errorf("state %v: used %v window %v inflight %d, old %v %v %d", k, s.used, s.window, s.inflight, o.used, o.rule.Window, o.inflight)
		}
		switch k.kind {
		case Requests, Tokens:
			for i := range o.counts {
				var idx, n int64
				if w := s.w.wide; w != nil {
					idx, n = w.index[i], w.count[i]
				} else {
					idx, n = (s.w.base+int64(s.w.off[i]))*(slots+1)+int64(i), int64(s.w.count[i])
				}
				if n != o.counts[i] || (n != 0 && idx != o.index[i]) {
					return fmt.Errorf("state %v slot %d: %d at %d, old %d at %d", k, i, n, idx, o.counts[i], o.index[i])
				}
			}
		case RequestBucket, TokenBucket:
			b := s.b
			if b.tokens != o.tokens || !b.filled.Equal(o.filled) || b.limit != o.rule.Limit || b.fill != o.rule.Fill {
				return fmt.Errorf("bucket %v: %+v, old %d %v %d %d", k, *b, o.tokens, o.filled, o.rule.Limit, o.rule.Fill)
			}
		}
	}
	return nil
}

// TestLocalMatchesOld: the smaller states decide every sequence of
// admissions, settlements and clock moves as the old ones did, with the
// same standings, refusals and counts after every call, including a clock
// stepped back, a window moved to int64 counts and indexes, and states
// swept. Under the race detector (one goroutine: nothing for it to watch,
// ten times slower) a tenth of the 300 seeds, odd and even (raceOn); CI
// runs them all without it.
func TestLocalMatchesOld(t *testing.T) {
	pool := diffRules()
	var widened, rebased int
	for seed := range uint64(300) {
		if raceOn && seed%20 >= 2 {
			continue
		}
		rng := rand.New(rand.NewPCG(seed, 31))
		next := func(n uint64) uint64 { return rng.Uint64N(n) }
		p := newLocalPair()
		for i := range 1500 {
			if err := p.step(pool, next, seed%2 == 1); err != nil {
				t.Fatalf("seed %d, call %d: %v", seed, i, err)
			}
		}
		for _, head := range p.nw.scopes {
			for s := head; s != nil; s = s.next {
				if s.w != nil && s.w.wide != nil {
					widened++
				} else if s.w != nil && s.w.base != 0 {
					rebased++
				}
			}
		}
	}
	t.Logf("windows left wide %d, moved base %d", widened, rebased)
	if widened == 0 || rebased == 0 {
		t.Fatalf("the sequences never widened (%d) or moved a base (%d): they test less than they say", widened, rebased)
	}
}

// FuzzLocalMatchesOld is TestLocalMatchesOld with the calls read from the
// fuzzer's bytes.
func FuzzLocalMatchesOld(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 9, 9, 9, 0, 5, 4, 7, 7, 8, 1, 0, 2})
	f.Add(binary.LittleEndian.AppendUint64(nil, 0x0123456789abcdef))
	pool := diffRules()
	f.Fuzz(func(t *testing.T, data []byte) {
		next := func(n uint64) uint64 {
			if len(data) == 0 {
				return 0
			}
			v := uint64(data[0])
			if n > 256 && len(data) > 1 {
				v = v<<8 | uint64(data[1])
				data = data[1:]
			}
			data = data[1:]
			return v % n
		}
		p := newLocalPair()
		for i := 0; len(data) > 0 && i < 2000; i++ {
			if err := p.step(pool, next, true); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
	})
}
