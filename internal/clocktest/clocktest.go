// Package clocktest helps tests that must show code measures time on the
// monotonic clock: it makes the time.Time that time.Now would return once
// the system's wall clock had been stepped (an NTP correction, an
// operator's date -s). Only tests import it.
package clocktest

import (
	"sync"
	"testing"
	"time"
	"unsafe"
)

// WallStepped is now with its wall reading moved by d (whole seconds) and
// its monotonic reading, which Time.Sub reads, kept. time.Time has no way
// to make one, so it is made on time.Time's layout (wall: the monotonic
// flag, 33 bits of seconds since 1885, 30 of nanoseconds; ext: the
// monotonic reading); Check verifies that layout.
func WallStepped(now time.Time, d time.Duration) time.Time {
	p := (*struct {
		wall uint64
		ext  int64
		loc  *time.Location
	})(unsafe.Pointer(&now))
	p.wall += uint64(int64(d/time.Second)) << 30
	return now
}

// Check fails t when WallStepped does not step the wall clock alone by d
// (a Go release that changed time.Time's layout).
func Check(t testing.TB, d time.Duration) {
	t.Helper()
	now := time.Now()
	s := WallStepped(now, d)
	if s.UnixNano()-now.UnixNano() != int64(d) || s.Sub(now) != 0 {
		t.Fatalf("time.Time's layout is not as clocktest.WallStepped assumes: stepped by %v reads %v on the wall and %v on the monotonic clock",
			d, time.Duration(s.UnixNano()-now.UnixNano()), s.Sub(now))
	}
}

// Stepper is a clock a test sets: Set puts it at a time, and each Now
// reads it a step later than the read before (so that two reads of one
// instant, a loop's scan and then its script's start, come in order, as on
// a real clock). Safe for concurrent use.
type Stepper struct {
	mu   sync.Mutex
	at   time.Time
	step time.Duration
}

// NewStepper starts at at; each Now moves it on by step.
func NewStepper(at time.Time, step time.Duration) *Stepper {
	return &Stepper{at: at, step: step}
}

// Now moves the clock on by its step and reads it.
func (s *Stepper) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.at = s.at.Add(s.step)
	return s.at
}

// Set puts the clock at t.
func (s *Stepper) Set(t time.Time) {
	s.mu.Lock()
	s.at = t
	s.mu.Unlock()
}
