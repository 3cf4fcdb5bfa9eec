package ratelimit

// Issue 31, item 3: a window's read keeps a running total instead of
// summing its 61 slots. sumWindowOld and addOld are the window's read and
// add as they were (main at 59a740a), kept only so that the tests here can
// drive both side by side and the benchmarks can compare them.

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// sumWindowOld is slotCounts.window before the running total: it sums the
// slots still inside r's window at now.
func sumWindowOld(c *slotCounts, r *Rule, now time.Time) (used, idx int64, reset time.Duration) {
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
		lo := idx - slots
		loLap, loSlot := lo/(slots+1), lo%(slots+1)
		if loSlot < 0 {
			loLap, loSlot = loLap-1, loSlot+slots+1
		}
		dl := loLap - c.base
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

// addOld is slotCounts.add before the running total (for the benchmarks).
func addOld(c *slotCounts, idx, n int64) {
	lap, i := idx/(slots+1), idx%(slots+1)
	if c.wide == nil && c.base+int64(c.off[i]) == lap {
		if sum := int64(c.count[i]) + n; sum == int64(int32(sum)) {
			c.count[i] = int32(sum)
			return
		}
	}
	c.addSlot(i, lap, idx, n)
}

// windowWalk drives one slotCounts through steps random reads, adds (as
// Admit and Done make them: at now's sub-window, at a recent one for a
// refund, counts past an int32), time moving on by a few milliseconds to
// days, stepping back as far, and the rule's window changing; every read
// is checked against sumWindowOld on the same slots.
func windowWalk(t *testing.T, seed uint64, steps int) {
	seed0 := seed
	rnd := func(n uint64) uint64 { seed = seed*6364136223846793005 + 1442695040888963407; return (seed >> 33) % n }
	windows := []time.Duration{time.Minute, time.Minute, time.Minute, time.Hour, 6 * time.Second, 30 * time.Millisecond, 24 * time.Hour}
	r := Rule{Kind: Tokens, Limit: 1000, Window: time.Minute}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	c := new(slotCounts)
	var recent []int64 // sub-windows added to, for refunds
	for step := range steps {
		sl := slotLen(r.Window)
		switch x := rnd(1000); {
		case x < 450: // an admission: read, then add at its sub-window
			wu, wi, wr := sumWindowOld(c, &r, now)
			gu, gi, gr := c.window(&r, now)
			if gu != wu || gi != wi || gr != wr {
				t.Fatalf("seed %d step %d (window %s, now %s): window = %d, %d, %s; summing %d, %d, %s",
					seed0, step, r.Window, now.Format(time.RFC3339Nano), gu, gi, gr, wu, wi, wr)
			}
			n := int64(1 + rnd(50))
			switch rnd(200) {
			case 0:
				n = 1<<31 + int64(rnd(1<<20)) // past an int32: wide
			case 1:
				n = 0
			}
			c.add(gi, n)
			recent = append(recent, gi)
			if len(recent) > 64 {
				recent = recent[1:]
			}
		case x < 600: // a settlement's extra tokens at now's sub-window
			c.add(now.UnixNano()/int64(sl), int64(1+rnd(200)))
		case x < 700 && len(recent) > 0: // a refund where the estimate was charged
			at, cur := recent[rnd(uint64(len(recent)))], now.UnixNano()/int64(sl)
			if at >= cur-slots {
				c.add(at, -int64(1+rnd(60)))
			}
		case x < 850:
			now = now.Add(time.Duration(rnd(uint64(3 * sl))))
		case x < 900:
			now = now.Add(time.Duration(rnd(uint64(70 * sl))))
		case x < 930:
			now = now.Add(-time.Duration(rnd(uint64(3 * sl)))) // a clock stepped back a little
		case x < 950:
			now = now.Add(-time.Duration(rnd(uint64(70 * sl))))
		case x < 960:
			now = now.Add(time.Duration(rnd(uint64(40_000 * 61 * sl)))) // past an int16 of laps
		case x < 965:
			now = now.Add(-time.Duration(rnd(uint64(40_000 * 61 * sl))))
		case x < 975:
			r.Window = windows[rnd(uint64(len(windows)))]
		default: // a read without an admission (a refusal changes nothing)
			wu, wi, wr := sumWindowOld(c, &r, now)
			gu, gi, gr := c.window(&r, now)
			if gu != wu || gi != wi || gr != wr {
				t.Fatalf("seed %d step %d (window %s): read = %d, %d, %s; summing %d, %d, %s", seed0, step, r.Window, gu, gi, gr, wu, wi, wr)
			}
		}
	}
}

// TestWindowMatchesSum: the running total decides exactly as summing the
// slots, over millions of random reads, adds and time jumps (forward,
// back, past an idle window, past the laps an int16 reaches), window
// changes and counts past an int32.
//
// The seeds run in four parallel groups (each walk has its own slots).
// Under the race detector, which has no concurrency to watch in a walk and
// runs it about ten times slower, every tenth seed only (20 walks, 400,000
// steps); without it all 200.
func TestWindowMatchesSum(t *testing.T) {
	seeds, stride, steps := 200, 1, 20_000 // 4 M steps
	if testing.Short() {
		seeds = 10
	}
	if raceOn {
		stride = 10
	}
	const groups = 4
	for g := range groups {
		t.Run(fmt.Sprintf("group%d", g), func(t *testing.T) {
			t.Parallel()
			for seed := g * stride; seed < seeds; seed += groups * stride {
				windowWalk(t, uint64(seed)*7919+1, steps)
			}
		})
	}
}

// TestWindowMatchesSumSteady: a busy key on a monotonic clock (the common
// case: every read is the total, none sums) decides as summing, and never
// needs the slots summed.
func TestWindowMatchesSumSteady(t *testing.T) {
	r := Rule{Kind: Requests, Limit: 1 << 40, Window: time.Minute}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	c := new(slotCounts)
	seed := uint64(3)
	rnd := func(n uint64) uint64 { seed = seed*6364136223846793005 + 1442695040888963407; return (seed >> 33) % n }
	for step := range 1_000_000 {
		now = now.Add(time.Duration(rnd(uint64(3 * time.Second))))
		wu, wi, wr := sumWindowOld(c, &r, now)
		gu, gi, gr := c.window(&r, now)
		if gu != wu || gi != wi || gr != wr {
			t.Fatalf("step %d: window = %d, %d, %s; summing %d, %d, %s", step, gu, gi, gr, wu, wi, wr)
		}
		if c.head != gi {
			t.Fatalf("step %d: head %d after a read at %d on a monotonic clock (the slots were summed)", step, c.head, gi)
		}
		c.add(gi, int64(1+rnd(5)))
	}
}

// TestLocalWindowsConcurrent (run with -race): goroutines admit and settle
// on shared keys while the clock moves on and steps back; with the clock
// still, exactly the limit is admitted; after, every window's total reads
// as its slots' sum.
func TestLocalWindowsConcurrent(t *testing.T) {
	l := NewLocal()
	var clock atomic.Int64
	clock.Store(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).UnixNano())
	l.now = func() time.Time { return time.Unix(0, clock.Load()) }
	rules := func(k int) []Rule {
		sc := Scope{Entity: store.KindKey, ID: string(rune('a' + k))}
		return []Rule{
			{Scope: sc, Kind: Requests, Limit: 500, Window: time.Minute, Name: "rpm_limit"},
			{Scope: sc, Kind: Tokens, Limit: 20_000, Window: time.Minute, Name: "tpm_limit"},
		}
	}
	// The clock still: one key's 500 requests a minute, raced for by 16
	// goroutines, are admitted exactly.
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				tk := new(Ticket)
				for _, r := range rules(0)[:1] {
					tk.Add(r)
				}
				if l.Admit(tk) == nil {
					admitted.Add(1)
					l.Done(tk, 0)
				}
			}
		}()
	}
	wg.Wait()
	if admitted.Load() != 500 {
		t.Fatalf("admitted %d of 1,600 against a limit of 500 with the clock still", admitted.Load())
	}
	// The clock moving (and now and then stepping back) under load.
	stop := make(chan struct{})
	var mover sync.WaitGroup
	mover.Add(1)
	go func() {
		defer mover.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			d := int64(37 * time.Millisecond)
			if i%97 == 0 {
				d = -int64(5 * time.Second)
			}
			clock.Add(d)
		}
	}()
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				tk := new(Ticket)
				for _, r := range rules((g + i) % 4) {
					tk.Add(r)
				}
				tk.Est = int64(i % 40)
				if l.Admit(tk) == nil {
					l.Done(tk, int64(i%70))
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	mover.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range 4 {
		for _, r := range rules(k) {
			s := l.get(&r, l.now(), &lastScope{})
			for _, d := range []time.Duration{0, time.Second, -3 * time.Second, 30 * time.Second, 2 * time.Minute} {
				at := l.now().Add(d)
				wu, wi, wr := sumWindowOld(s.w, &r, at)
				gu, gi, gr := s.w.window(&r, at)
				if gu != wu || gi != wi || gr != wr {
					t.Fatalf("key %d %s at %s: window = %d, %d, %s; summing %d, %d, %s", k, r.Name, d, gu, gi, gr, wu, wi, wr)
				}
			}
		}
	}
}

// benchWindow fills a minute's 61 slots and then reads and adds on a clock
// moving 10 ms a call (100 calls a sub-window), as an admission does.
func benchWindow(b *testing.B, read func(c *slotCounts, r *Rule, now time.Time) (int64, int64, time.Duration), add func(c *slotCounts, idx, n int64)) {
	r := Rule{Kind: Requests, Limit: 1 << 40, Window: time.Minute}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	c := new(slotCounts)
	for range 61 {
		_, idx, _ := read(c, &r, now)
		add(c, idx, 1)
		now = now.Add(time.Second)
	}
	var sink int64
	for b.Loop() {
		now = now.Add(10 * time.Millisecond)
		used, idx, _ := read(c, &r, now)
		add(c, idx, 1)
		sink += used
	}
	if sink == 0 {
		b.Fatal("nothing counted")
	}
}

// BenchmarkWindowAdmit61 is a window's read and add at 61 slots with the
// running total.
func BenchmarkWindowAdmit61(b *testing.B) {
	benchWindow(b, (*slotCounts).window, (*slotCounts).add)
}

// BenchmarkWindowAdmit61Old is BenchmarkWindowAdmit61 summing the slots
// (main's code).
func BenchmarkWindowAdmit61Old(b *testing.B) { benchWindow(b, sumWindowOld, addOld) }
