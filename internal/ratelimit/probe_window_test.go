package ratelimit

import (
	"testing"
	"time"
)

// TestProbeWindowSlotLeftThenClockBackOne: a use leaves the window at a
// read that counts nothing (the request refused by another rule), and the
// clock then steps back one sub-window, where the use is inside the window
// again: the limit still holds. With the bound on the slots that left one
// sub-window short (dead = idx-slots-1 in advance), the running total
// answers this read without the use and admits a second request within
// 60 s of the first (TestWindowMatchesSum and TestLocalMatchesOld do not
// reach this boundary).
func TestProbeWindowSlotLeftThenClockBackOne(t *testing.T) {
	l := NewLocal()
	start := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	now := start
	l.now = func() time.Time { return now }
	rpm := Rule{Scope: keyScope, Kind: Requests, Limit: 1, Window: time.Minute, Name: "rpm_limit"}
	tpm := Rule{Scope: keyScope, Kind: Tokens, Limit: 10, Window: time.Minute, Name: "tpm_limit"}
	admit := func(est int64) *Denied {
		tk := new(Ticket)
		tk.Add(rpm)
		tk.Add(tpm)
		tk.Est = est
		d := l.Admit(tk)
		if d == nil {
			l.Done(tk, est)
		}
		return d
	}
	if d := admit(1); d != nil {
		t.Fatalf("first request refused: %+v", d)
	}
	// 61 sub-windows on: the use has left; rpm reads 0, tpm refuses for good.
	now = start.Add(61 * time.Second)
	if d := admit(20); d == nil || !d.Never || d.Rule.Name != "tpm_limit" {
		t.Fatalf("want a tpm refusal (estimate past the limit), got %+v", d)
	}
	// The clock steps back one sub-window: the first use is in the window.
	now = start.Add(60 * time.Second)
	if d := admit(1); d == nil || d.Rule.Name != "rpm_limit" {
		t.Fatalf("second request 60 s after the first admitted past rpm_limit 1 (or refused by the wrong rule): %+v", d)
	}
}

// TestProbeWindowFallbackEnds: after the clock steps back by more than a
// window, reads sum the slots while slots from before the step are kept;
// under steady traffic every slot is overwritten within a window, and the
// reads must go back to the running total then (head following the
// clock), not stay on the summing path until the clock passes where it
// was before the step. Decisions stay the summing ones throughout.
func TestProbeWindowFallbackEnds(t *testing.T) {
	l := NewLocal()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	rpm := Rule{Scope: keyScope, Kind: Requests, Limit: 1 << 40, Window: time.Minute, Name: "rpm_limit"}
	admit := func() {
		tk := new(Ticket)
		tk.Add(rpm)
		if d := l.Admit(tk); d != nil {
			t.Fatalf("refused: %+v", d)
		}
		l.Done(tk, 0)
	}
	for range 180 {
		admit()
		now = now.Add(time.Second)
	}
	now = now.Add(-5 * time.Minute) // stepped back past the whole window
	s := l.lookup(stateKey{rpm.Scope, rpm.Kind, rpm.Name})
	followed := -1
	for i := range 240 {
		admit()
		wu, wi, wr := sumWindowOld(s.w, &rpm, now)
		if gu, gi, gr := s.w.window(&rpm, now); gu != wu || gi != wi || gr != wr {
			t.Fatalf("admission %d after the step: window = %d, %d, %s; summing %d, %d, %s", i, gu, gi, gr, wu, wi, wr)
		}
		if s.w.head == wi && followed < 0 {
			followed = i
		}
		now = now.Add(time.Second)
	}
	// 61 admissions, one a sub-window, overwrite every slot.
	if followed < 0 || followed > 70 {
		t.Fatalf("head followed the clock again only after %d admissions a second apart (-1: never in 240), want ≤ 70", followed)
	}
}
