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
// at 2,000 req/s"). With GOGC=100 the runtime lets the heap grow to twice
// what the last collection found live before it collects again: for a
// gateway whose live heap is mostly the key snapshot (≈ 30 MB with
// 100,000 keys) that doubling is the largest part of its RSS under load.
// Headroom keeps the growth allowed after a collection at
// max(HeadroomFloor, HeadroomFraction × live) instead, by setting GOGC
// after every collection: a heap goal of live + that headroom.
//
//   - It never lets the heap grow more than GOGC=100 would (the percent is
//     at most 100): below HeadroomFloor of live heap nothing changes.
//   - It never sets a goal under the live heap: the headroom is at least
//     HeadroomFraction of the live heap and at least HeadroomFloor, so the
//     collector cannot run back to back whatever the deployment's size;
//     the collector's work per byte allocated is at most 1/HeadroomFraction
//     times GOGC=100's, at any live heap.
//   - It is not a memory limit: the soft limit in force (GOMEMLIMIT,
//     memory_limit, the cgroup's) still caps the heap, and the shedder's
//     memory signal, which reads that limit, is untouched.
//   - An operator who sets GOGC, GOMEMLIMIT or memory_limit gets the
//     runtime as they set it (HeadroomApplies).
//
// The floor is 12 MiB (16 MiB before branch mem79): with 100,000 keys the
// live heap is ≈ 23–27 MB, so the floor sets the goal, and every MiB of it
// is a MiB of RSS. Measured at 2,000 req/s (docs/performance.md, branch
// mem79, GODEBUG=gctrace=1): 1.35× the collections, GC CPU 36 → 48 µs a
// request, RSS 78 → 72 MB. A deployment whose live heap is under 12 MiB
// (no keys: 7–10 MB) keeps GOGC=100 as before; over 24 MiB the fraction
// rules and nothing changes either.
const (
	HeadroomFloor    = 12 << 20
	HeadroomFraction = 0.5
)

// HeadroomApplies says whether the headroom rule runs: only when the
// operator set none of GOGC, GOMEMLIMIT (both in the environment) and
// general_settings.memory_limit (configured). A limit derived from the
// cgroup is the gateway's own default and leaves the rule on.
func HeadroomApplies(getenv func(string) string, configured string) bool {
	return getenv("GOGC") == "" && getenv("GOMEMLIMIT") == "" && configured == ""
}

// Percent is the GOGC that gives a heap goal of live +
// max(floor, fraction × live), given what the last collection found:
// the live heap and the stacks and globals it scanned (the runtime's
// goal is live + (live + stacks + globals) × GOGC/100). It is at most 100
// and at least 1, rounded up (the headroom is never under the rule's).
func Percent(live, stacks, globals uint64, floor uint64, fraction float64) int {
	base := float64(live) + float64(stacks) + float64(globals)
	if base <= 0 {
		return 100
	}
	h := max(float64(floor), fraction*float64(live))
	p := math.Ceil(100 * h / base)
	return int(min(max(p, 1), 100))
}

// Headroom keeps GOGC at Percent(HeadroomFloor, HeadroomFraction) from
// now on, recomputed after every collection (a finalizer on an object
// made for the purpose runs once each cycle finds it unreachable). stop
// ends it and puts GOGC back to 100.
func Headroom() (stop func()) {
	_, stop = startHeadroom(HeadroomFloor, HeadroomFraction)
	return stop
}

type headroom struct {
	floor    uint64
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

func startHeadroom(floor uint64, fraction float64) (*headroom, func()) {
	h := &headroom{floor: floor, fraction: fraction, percent: 100, samples: []metrics.Sample{
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
	p := Percent(h.samples[0].Value.Uint64(), h.samples[1].Value.Uint64(), h.samples[2].Value.Uint64(), h.floor, h.fraction)
	if p != h.percent && !h.stopped.Load() {
		debug.SetGCPercent(p)
		h.percent = p
	}
}
