package ratelimit

import (
	"context"
	"testing"
	"time"
)

// TestTokenAllotmentWithoutEstimateCoversRequestsInFlight: a tpm rule whose
// requests carry no estimate (no tokenize: Est 0) books tokens only when a
// request ends. An interval whose requests were all still in flight at
// the flush (a stalled upstream) must still size the next allotment on
// what it admitted, so that the next requests are decided in process;
// before branch slot it was sized on the tokens booked (none): two
// requests' worth, full after two and every request after them ran the
// per-request script until the flush after.
func TestTokenAllotmentWithoutEstimateCoversRequestsInFlight(t *testing.T) {
	c, prefix := realRedis(t)
	l, a := allotReplica(t, c, prefix, 100*time.Millisecond) // flushed by the test only
	tpm := Rule{Scope: keyScope, Kind: Tokens, Limit: 10_000_000, Window: time.Hour, Name: "tph"}
	flush := func() {
		t.Helper()
		if err := a.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	admit := func() *Ticket {
		t.Helper()
		tk := ticket(0, tpm)
		if d := l.Admit(context.Background(), tk); d != nil {
			t.Fatal(d)
		}
		return tk
	}
	for range 2 { // two requests of 10 tokens: the rule's unit, an allotment at the flush
		l.Done(admit(), 10)
	}
	flush()
	var inFlight []*Ticket
	for range 50 { // an interval whose requests are all in flight at the flush
		inFlight = append(inFlight, admit())
	}
	flush()
	for _, tk := range inFlight {
		l.Done(tk, 10)
	}
	remote := a.Remote.Load()
	for range 20 { // the next requests, one at a time
		l.Done(admit(), 10)
	}
	if n := a.Remote.Load() - remote; n != 0 {
		t.Fatalf("%d of 20 requests after an interval that admitted 50 ran the per-request script (allotment: %+v)", n, a.Held())
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := windowSum(t, c, prefix, tpm); s != 72*10 {
		t.Fatalf("Redis counts %d tokens, requests used %d", s, 72*10)
	}
}

// TestWindowAllotmentAheadOfALateFlush: when flushes answer late, a window
// rule's next allotment is granted in the next slot early enough for the
// flush after to answer before the current slot ends (two intervals plus
// two recent round trips ahead), so that requests at a slot's end are not
// left without an allotment (branch tail: the most common reason for a
// per-request script at 2,000 req/s). Before branch slot only two
// intervals counted: after a flush that took 400 ms, one built 300–800 ms
// before the slot's end still granted in the slot ending then.
func TestWindowAllotmentAheadOfALateFlush(t *testing.T) {
	c, prefix := realRedis(t)
	px, r := proxiedRunner(t, c)
	every := 100 * time.Millisecond
	l := New(NewRedis(r, prefix))
	a := NewAllotter(l, AllotOptions{Every: every})                                                       // flushed by the test only
	rpm := Rule{Scope: keyScope, Kind: Requests, Limit: 10_000_000, Window: 2 * time.Minute, Name: "r2m"} // 2 s slots
	sl := slotLen(rpm.Window).Milliseconds()
	admit := func() {
		t.Helper()
		for range 2 {
			tk := ticket(0, rpm)
			if d := l.Admit(context.Background(), tk); d != nil {
				t.Fatal(d)
			}
			l.Done(tk, 0)
		}
	}
	flush := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// ms to the end of the current slot, on Redis's clock
	toEnd := func() int64 {
		t.Helper()
		now, err := c.Time(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		return sl - now.UnixMilli()%sl
	}
	e := a.entryOf(&rpm)
	checked := false
	for attempt := 0; attempt < 20 && !checked; attempt++ {
		admit()
		px.Delay(400 * time.Millisecond)
		flush() // answered ≥ 400 ms after it was sent: a late flush
		px.Delay(0)
		// Wait for a point 500–800 ms before the slot's end.
		if !within(t, func() bool { te := toEnd(); return te >= 500 && te <= 800 }) {
			t.Fatal("never 500–800 ms before a slot's end")
		}
		admit()
		start := time.Now()
		flush() // sets the interval since the last flush
		admit()
		flush() // within an interval of the one before: the interval counts `every`
		took, te := time.Since(start), toEnd()
		if took >= every || te < 300 {
			continue // the machine was slow: the conditions did not hold, again
		}
		checked = true
		e.mu.Lock()
		g := e.open
		e.mu.Unlock()
		if g == nil {
			t.Fatal("no allotment granted")
		}
		// granted in the current slot: usable ≤ 800 ms more; in the
		// next: ≥ a slot more
		if left := time.Duration(g.deadline - a.clock()); left < time.Duration(sl)*time.Millisecond {
			t.Fatalf("%d ms before the slot's end, after a flush that took 400 ms, the allotment was granted in the slot ending then (usable %v more): the next flush's answer may come after it", te, left)
		}
	}
	if !checked {
		t.Skip("the machine was too slow for two flushes within an interval in 20 attempts")
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
