package ratelimit

import (
	"testing"
	"time"
)

// TestProbeLowRateKeyWindowsStayNarrow: a key used every 20 minutes, a
// day long (never idle for the hour that sweeping waits for), decided on
// its rpm_limit and tpm_limit. Its windows' slots, each written once and
// not again for 61 uses (1,200 s ≡ 41 mod 61), keep counts from hours
// before; with int16 offsets of sub-windows (reach 32,767 s ≈ 9.1 h for a
// minute's window) the first move of base past them made both windows
// wide for good (96 + 416 + 1,024 B each, more than main's 1,152 B state),
// so a long-lived low-rate key held ≈ 3.2 KB, not the 1,199 B measured
// on a key's first request.
func TestProbeLowRateKeyWindowsStayNarrow(t *testing.T) {
	l := NewLocal()
	now := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	for i := range 72 { // 24 h
		tk := new(Ticket)
		keyRules(tk, 1, Requests, Tokens, Parallel)
		tk.Est = 100
		if d := l.Admit(tk); d != nil {
			t.Fatalf("use %d refused: %v", i, d)
		}
		l.Done(tk, 120)
		now = now.Add(20 * time.Minute)
	}
	if n := l.count(); n != 3 {
		t.Fatalf("%d states, want 3", n)
	}
	for _, head := range l.scopes {
		for s := head; s != nil; s = s.next {
			if s.w != nil && s.w.wide != nil {
				t.Errorf("%s: window moved to int64 counts and indexes after a day of a use every 20 minutes", s.name)
			}
		}
	}
}
