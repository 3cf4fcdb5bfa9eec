package memlimit

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// The collector's headroom (docs/performance.md, "Issue 31, item 5: RSS
// at 2,000 req/s" and "Issue 31, item 3: a heap goal of at least 32 MiB").
// With GOGC=100 the runtime lets the heap grow to twice what the last
// collection found live before it collects again: for a gateway whose
// live heap is mostly the key snapshot (≈ 30 MB with 100,000 keys) that
// doubling is the largest part of its RSS under load; for a gateway with
// few keys (live 6–9 MB) it is a goal of 13–20 MB, reached 4–5 times a
// second at 2,000 req/s, and the slowest requests overlap those cycles far
// more often than chance. Headroom sets the growth allowed after a
// collection to
//
//	max(HeadroomFloor, HeadroomFraction × live, HeadroomMinGoal − live)
//
// by setting GOGC after every collection: a heap goal of live + that
// headroom, and never under HeadroomMinGoal.
//
//   - A small live heap gets a goal of HeadroomMinGoal (32 MiB), more than
//     GOGC=100 would give it (the percent may exceed 100): fewer
//     collections where each one costs little memory. Above
//     HeadroomMinGoal − HeadroomFloor (20 MiB) of live heap the floor
//     rules, above HeadroomFloor/HeadroomFraction (24 MiB) the fraction:
//     there the goal is at most GOGC=100's, as before.
//   - It never sets a goal under the live heap: the headroom is at least
//     HeadroomFraction of the live heap and at least HeadroomFloor, so the
//     collector cannot run back to back whatever the deployment's size;
//     the collector's work per byte allocated is at most 1/HeadroomFraction
//     times GOGC=100's, at any live heap.
//   - It is not a memory limit: the soft limit in force (GOMEMLIMIT,
//     memory_limit, the cgroup's) still caps the heap, the small heap's
//     larger goal included, and the shedder's memory signal, which reads
//     that limit, is untouched.
//   - An operator who sets GOGC, GOMEMLIMIT or memory_limit gets the
//     runtime as they set it (HeadroomApplies).
//
// The floor is 12 MiB (16 MiB before branch mem79): with 100,000 keys the
// live heap is ≈ 23–27 MB, so the floor sets the goal (≈ 35–39 MiB, above
// HeadroomMinGoal), and every MiB of it is a MiB of RSS. Measured at
// 2,000 req/s (docs/performance.md, branch mem79, GODEBUG=gctrace=1):
// 1.35× the collections, GC CPU 36 → 48 µs a request, RSS 78 → 72 MB.
// The minimum goal is 32 MiB (branch gcgoal; GOGC=100 before it below
// 12 MiB live).
const (
	HeadroomFloor    = 12 << 20
	HeadroomFraction = 0.5
	HeadroomMinGoal  = 32 << 20
)

// HeadroomApplies says whether the headroom rule runs: only when the
// operator set none of GOGC, GOMEMLIMIT (both in the environment) and
// general_settings.memory_limit (configured). A limit derived from the
// cgroup is the gateway's own default and leaves the rule on.
func HeadroomApplies(getenv func(string) string, configured string) bool {
	return getenv("GOGC") == "" && getenv("GOMEMLIMIT") == "" && configured == ""
}

// Percent is the GOGC that gives a heap goal of live +
// max(floor, fraction × live, minGoal − live), given what the last
// collection found: the live heap and the stacks and globals it scanned
// (the runtime's goal is live + (live + stacks + globals) × GOGC/100). It
// is at least 1, rounded up (the headroom is never under the rule's); it
// exceeds 100 only where minGoal − live or the floor is more than the
// base (a small heap), and is at most 100 × minGoal / 4 MiB (800 for
// 32 MiB; see heapMinimum100).
func Percent(live, stacks, globals uint64, floor, minGoal uint64, fraction float64) int {
	base := float64(live) + float64(stacks) + float64(globals)
	if base <= 0 {
		return 100
	}
	h := max(float64(floor), fraction*float64(live), float64(minGoal)-float64(live))
	p := math.Ceil(100 * h / base)
	return int(min(max(p, 1), max(100, math.Floor(100*float64(minGoal)/heapMinimum100))))
}

// heapMinimum100 is the runtime's least heap goal at GOGC=100 (4 MiB): it
// scales with GOGC, so for a heap of a few MiB (at start) a percent past
// 100 × minGoal / heapMinimum100 would set a goal above minGoal. Percent
// stops there: at that percent the runtime's least goal is minGoal.
const heapMinimum100 = 4 << 20

// Headroom keeps GOGC at Percent(HeadroomFloor, HeadroomMinGoal,
// HeadroomFraction) from
// now on, recomputed after every collection (a finalizer on an object
// made for the purpose runs once each cycle finds it unreachable). stop
// ends it and puts GOGC back to 100.
func Headroom() (stop func()) {
	_, stop = startHeadroom(HeadroomFloor, HeadroomMinGoal, HeadroomFraction)
	return stop
}

type headroom struct {
	floor    uint64
	minGoal  uint64
	fraction float64
	stopped  atomic.Bool
	mu       sync.Mutex // tune against stop
	samples  []metrics.Sample
	percent  int
	// cycles counts the collections it followed (tests).
	cycles atomic.Int64
}

// gcMark is made unreachable at once; its finalizer runs after the next
// collection. It holds a pointer, so the tiny allocator never batches it
// with other objects (which could keep it alive).
type gcMark struct{ h *headroom }

func startHeadroom(floor, minGoal uint64, fraction float64) (*headroom, func()) {
	h := &headroom{floor: floor, minGoal: minGoal, fraction: fraction, percent: 100, samples: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"},
	}}
	h.tune()
	h.arm()
	return h, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if !h.stopped.Swap(true) {
			debug.SetGCPercent(100)
		}
	}
}

func (h *headroom) arm() {
	runtime.SetFinalizer(&gcMark{h: h}, func(m *gcMark) {
		if m.h.stopped.Load() {
			return
		}
		m.h.cycles.Add(1)
		m.h.tune()
		m.h.arm()
	})
}

// tune runs on the finalizer goroutine (and once at start).
func (h *headroom) tune() {
	h.mu.Lock()
	defer h.mu.Unlock()
	metrics.Read(h.samples)
	p := Percent(h.samples[0].Value.Uint64(), h.samples[1].Value.Uint64(), h.samples[2].Value.Uint64(), h.floor, h.minGoal, h.fraction)
	if p != h.percent && !h.stopped.Load() {
		debug.SetGCPercent(p)
		h.percent = p
	}
}
