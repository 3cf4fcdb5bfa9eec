package ratelimit

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestProbeWindowAheadNeverAdmitsPastLimit: two replicas try one request
// window (3,000 per 3 s: 50 ms slots, flushes every 10 ms) at 1.5 times
// its rate for more than two windows, so that room comes back at each
// slot's turn and is allotted at the slot boundary; one replica's Redis is 25 ms away for the
// first half (its flushes answer late: its lead covers a whole slot, so
// every allotment it is granted is counted in the next slot), then near;
// a third replica takes an allotment and dies holding it. No interval of
// one window's length may hold more admissions than the limit (counted
// from just before Admit to its return, so a boundary case is never
// counted in a window it may lie outside of).
func TestProbeWindowAheadNeverAdmitsPastLimit(t *testing.T) {
	c, prefix := realRedis(t)
	px, rb := proxiedRunner(t, c)
	every := 10 * time.Millisecond
	rule := Rule{Scope: keyScope, Kind: Requests, Limit: 3000, Window: 3 * time.Second, Name: "r3s"}
	la, aa := allotReplica(t, c, prefix, every)
	lb := New(NewRedis(rb, prefix))
	ab := NewAllotter(lb, AllotOptions{Every: every})
	// The dying replica: an allotment granted, then never given back.
	ld, ad := allotReplica(t, c, prefix, every)
	for range 3 {
		tk := ticket(0, rule)
		if d := ld.Admit(context.Background(), tk); d != nil {
			t.Fatal(d)
		}
		ld.Done(tk, 0)
	}
	if err := ad.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	px.Delay(25 * time.Millisecond)
	ctx, stop := context.WithCancel(context.Background())
	var runs sync.WaitGroup
	for _, a := range []*Allotter{aa, ab} {
		runs.Add(1)
		go func() { defer runs.Done(); a.Run(ctx) }()
	}
	type adm struct{ before, after time.Time }
	var mu sync.Mutex
	var got []adm
	sl := slotLen(rule.Window).Milliseconds()
	t0 := time.Now()
	rnow, err := c.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	base, baseMs := t0.Add(t1.Sub(t0)/2), rnow.UnixMilli()
	slack := t1.Sub(t0).Milliseconds() + 2
	start := time.Now()
	span := 5*rule.Window/2 + rule.Window/6
	var work sync.WaitGroup
	for w := range 12 {
		l := la
		if w%2 == 1 {
			l = lb
		}
		work.Add(1)
		go func() {
			defer work.Done()
			tick := time.NewTicker(3 * time.Millisecond) // open-loop load: 4,000 tries/s, 4× the limit's rate
			defer tick.Stop()
			for time.Since(start) < span {
				<-tick.C
				before := time.Now()
				tk := ticket(0, rule)
				if l.Admit(context.Background(), tk) != nil {
					continue
				}
				after := time.Now()
				l.Done(tk, 0)
				mu.Lock()
				got = append(got, adm{before, after})
				mu.Unlock()
			}
		}()
	}
	// The far replica's lead: sample how often its open allotment is
	// counted in a slot after the current one.
	eb := ab.entryOf(&rule)
	ahead, samples := 0, 0
	for time.Since(start) < span/2 {
		now, err := c.Time(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		eb.mu.Lock()
		if g := eb.open; g != nil {
			samples++
			if g.slot > now.UnixMilli()/sl {
				ahead++
			}
		}
		eb.mu.Unlock()
		time.Sleep(3 * time.Millisecond) // sampling pace, not a wait
	}
	px.Delay(0)
	work.Wait()
	stop()
	runs.Wait()
	// Each admission's slot on Redis's clock, from just before Admit to its
	// return (widened by the clock offset's error): the window counts the
	// current slot and the 60 before it, so no 61 consecutive slots may
	// hold more admissions than the limit, counting only those surely in
	// them.
	worst, at := 0, int64(0)
	lo, hi := make([]int64, len(got)), make([]int64, len(got))
	first, last := int64(1<<62), int64(0)
	for i, g := range got {
		lo[i] = (g.before.Sub(base).Milliseconds() + baseMs - slack) / sl
		hi[i] = (g.after.Sub(base).Milliseconds() + baseMs + slack) / sl
		first, last = min(first, lo[i]), max(last, hi[i])
	}
	for j0 := first; j0+60 <= last; j0++ {
		n := 0
		for i := range got {
			if lo[i] >= j0 && hi[i] <= j0+60 {
				n++
			}
		}
		if n > worst {
			worst, at = n, j0-first
		}
	}
	t.Logf("admitted %d over %v; most in 61 slots: %d (from slot %d); in process %d/%d tickets; far replica's allotment ahead in %d of %d samples",
		len(got), span, worst, at, aa.Local.Load()+ab.Local.Load(), aa.Local.Load()+ab.Local.Load()+aa.Remote.Load()+ab.Remote.Load(), ahead, samples)
	if worst > int(rule.Limit) {
		t.Fatalf("%d admissions within one window (61 slots from slot %d), limit %d", worst, at, rule.Limit)
	}
	if aa.Local.Load()+ab.Local.Load() == 0 || ahead == 0 {
		t.Fatal("the probe did not exercise allotments granted ahead")
	}
	if len(got) < 2*int(rule.Limit) {
		t.Fatalf("only %d admitted over more than two windows: the limit was not reached", len(got))
	}
}
