package server

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

// markStart and markEnd move the synthetic collector's counters as a
// cycle's sweep-termination pause and its mark-termination pause do.
func (w *cpuWindows) markStart() { w.gcCPU += 0.0002; w.pauses++ }
func (w *cpuWindows) markEnd()   { w.cycles++; w.gcCPU += 0.035; w.pauses++ }

// TestProbeMarkRunningThroughWindowsIsTheCollection: a mark that runs
// through two whole windows after the one it started in (a long mark:
// neither counter moves in them) is still the collection's, the third slow
// window in a row. (TestShedderCollectionIsNotAShortage only checks the
// window right after the start, which "the window before" covers: it
// passes with the mark-running rule removed.)
func TestProbeMarkRunningThroughWindowsIsTheCollection(t *testing.T) {
	w := newCPUWindows(1000)
	w.step(false, 800)
	w.markStart()
	for i := range 3 {
		if verdict, limit := w.step(true, 800); verdict != cpuCollecting || limit != 1000 {
			t.Fatalf("slow window %d of a mark: verdict %d, bound %d; want cpuCollecting, 1000", i, verdict, limit)
		}
	}
}

// TestProbeMarkStartingInTheWindowACycleEnded: with the collector running
// often (the headroom rule under load), a cycle ends and the next one
// starts in the same window; the new mark then runs through the next two
// windows. They are the collection's as a mark started after a quiet
// window is; before the review the third window was judged a shortage (the
// GC CPU time seen at the window of the end already held the new start's
// pause, so the running mark was not seen).
func TestProbeMarkStartingInTheWindowACycleEnded(t *testing.T) {
	w := newCPUWindows(1000)
	w.step(false, 800)
	w.markStart()
	w.step(false, 800)
	w.markEnd()
	w.markStart()
	for i := range 3 {
		if verdict, limit := w.step(true, 800); verdict != cpuCollecting || limit != 1000 {
			t.Fatalf("slow window %d from the end of one cycle and the start of the next: verdict %d, bound %d; want cpuCollecting, 1000", i, verdict, limit)
		}
	}
	// The mark ends, then a shortage: the window after the end is the
	// collection's, the next one with nothing running is a shortage.
	w.markEnd()
	w.step(false, 800)
	w.step(false, 800)
	if verdict, limit := w.step(true, 800); verdict != cpuSaturated || limit != 600 {
		t.Fatalf("slow window with no collection in or before it: verdict %d, bound %d; want cpuSaturated, 600", verdict, limit)
	}
}

// TestShedderGCPausesTwoPerCycle checks the runtime the signal reads:
// each collection makes two stop-the-world pauses in
// /sched/pauses/total/gc (its mark's start and end), so the pauses beyond
// two per ended cycle are a mark running.
func TestShedderGCPausesTwoPerCycle(t *testing.T) {
	read := func() (cycles, pauses uint64) {
		s := []metrics.Sample{{Name: sampleNames[sampleCycles]}, {Name: sampleNames[sampleGCPauses]}}
		metrics.Read(s)
		for _, n := range s[1].Value.Float64Histogram().Counts {
			pauses += n
		}
		return s[0].Value.Uint64(), pauses
	}
	runtime.GC()
	c0, p0 := read()
	for range 5 {
		runtime.GC()
	}
	c1, p1 := read()
	// A collection running at either read (started by this process's
	// allocation) adds at most one pause beyond two per cycle.
	if dc, dp := c1-c0, p1-p0; dc < 5 || dp < 2*dc-1 || dp > 2*dc+1 {
		t.Fatalf("%d cycles ended with %d GC pauses; want two a cycle", dc, dp)
	}
}

// TestShedderMemoryLowersDuringACollection: a window the collection
// explains leaves the CPU's bound as it is, but memory near the soft limit
// still lowers it (apply checks memory before it returns on cpuCollecting).
func TestShedderMemoryLowersDuringACollection(t *testing.T) {
	s := newShedder(1000, true, func(string) {})
	s.apply(cpuCollecting, true, 800)
	if limit := s.limit.Load(); limit != 600 || !s.byMemory.Load() {
		t.Fatalf("memory near the limit in a collection's window: bound %d, by memory %v; want 600 by memory", limit, s.byMemory.Load())
	}
	s.apply(cpuCollecting, false, 800)
	if limit := s.limit.Load(); limit != 600 {
		t.Fatalf("a collection's window after it: bound %d, want it left at 600", limit)
	}
}

// TestShedderMarkRestartIsAbsorbed: a mark termination the runtime
// restarts (runtime issue 27993) makes a third pause in its cycle. In the
// middle of a mark it changes nothing; in the window its cycle ends in, the
// mark is taken as running until the next cycle starts, and the count is
// right again from there.
func TestShedderMarkRestartIsAbsorbed(t *testing.T) {
	w := newCPUWindows(1000)
	w.markStart()
	w.step(false, 800)
	w.pauses++ // the restarted mark termination
	w.step(false, 800)
	w.markEnd()
	w.step(false, 800)
	if w.s.marking {
		t.Fatal("a mark is taken as running after a restarted cycle ended")
	}
	// Start, restart and end in one window: taken as running until the
	// next start, right after the next end.
	w.markStart()
	w.pauses++
	w.markEnd()
	w.step(false, 800)
	w.markStart()
	w.step(false, 800)
	if !w.s.marking {
		t.Fatal("a mark that started is not taken as running")
	}
	w.markEnd()
	w.step(false, 800)
	if w.s.marking {
		t.Fatal("the count did not recover at the next cycle")
	}
	// And then a quiet slow window is a shortage again.
	w.step(false, 800)
	if verdict, limit := w.step(true, 800); verdict != cpuSaturated || limit != 600 {
		t.Fatalf("slow window with no collection after the recovery: verdict %d, bound %d; want cpuSaturated, 600", verdict, limit)
	}
}
