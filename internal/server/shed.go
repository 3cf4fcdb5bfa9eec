package server

import (
	"errors"
	"math"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
)

// Overload shedding (docs/performance.md, Overload). Inference requests in
// flight are bounded: past the bound a new one is answered 503 at once,
// before its body is read, its key looked up or anything held or booked,
// rather than queued behind the others. The bound is
// general_settings.max_requests_in_flight (1024 per GOMAXPROCS by default).
// A fixed bound alone lets a saturated CPU queue up to that many requests
// in Go's run queue, so the bound also follows the CPU: every window,
// the admitted bound is lowered while goroutines wait too long for a CPU
// (unless the gateway's own collection explains the wait: cpuSignal) and
// raised back while they do not; with a soft memory limit (GOMEMLIMIT)
// it is also lowered while the memory the collector cannot free (the live
// heap and the runtime's memory outside the heap) nears that limit.
const (
	// shedWindow is how often the CPU signal is read.
	shedWindow = 100 * time.Millisecond
	// shedSchedTarget is the 99th percentile of the time runnable
	// goroutines waited for a CPU in a window above which the CPU is
	// taken to be saturated.
	shedSchedTarget = 10 * time.Millisecond
	// shedFloorPerProc is the lowest the CPU signal lowers the bound to,
	// per GOMAXPROCS: a noisy signal never starves the gateway.
	shedFloorPerProc = 32
	// shedSlowRun is the number of slow windows in a row from which a
	// slow window counts as saturated even with a collection in or just
	// before it (cpuSignal): a collection's mark on a gateway that keeps
	// up slows the windows it runs in (one or two at 100,000 keys) and the
	// one after, three in a row at most.
	shedSlowRun = 4
	// shedRetryAfter is the Retry-After of a shed request.
	shedRetryAfter = time.Second
)

// errOverloaded is the cause logged for a shed request.
var errOverloaded = errors.New("gateway overloaded")

// shedder bounds the inference requests in flight.
type shedder struct {
	max      int64 // the configured bound; -1: none
	floor    int64 // the lowest the CPU signal takes the bound to
	inflight atomic.Int64
	limit    atomic.Int64 // the bound in force, floor ≤ limit ≤ max
	next     atomic.Int64 // when the CPU signal is next read (unix ns)
	cpu      bool         // the CPU signal is followed
	onShed   func(reason string)
	// memNear reports whether the memory the collector cannot free nears
	// the soft memory limit (nearLimit); a test may replace it.
	memNear func([]metrics.Sample) bool
	// byMemory is set when the last window that lowered the bound had the
	// memory signal on: a request shed below the configured bound is then
	// counted with reason "memory" rather than "lowered" (the CPU signal).
	byMemory atomic.Bool
	// mu guards the samples and the CPU signal's state between windows.
	mu     sync.Mutex
	sample []metrics.Sample
	cpuSignal
}

// The runtime/metrics samples the shedder reads each window: the
// scheduler's latency histogram and the collector's cycles and CPU time
// (cpuSignal) first, then what nearLimit reads.
const (
	sampleSched = iota
	sampleCycles
	sampleGCCPU
	sampleGCPauses
	sampleLimit
	sampleLive
	sampleTotal
	sampleObjects
	sampleUnused
	sampleFree
	sampleReleased
	nSamples
)

var sampleNames = [nSamples]string{
	sampleSched:    "/sched/latencies:seconds",
	sampleCycles:   "/gc/cycles/total:gc-cycles",
	sampleGCCPU:    "/cpu/classes/gc/total:cpu-seconds",
	sampleGCPauses: "/sched/pauses/total/gc:seconds",
	sampleLimit:    "/gc/gomemlimit:bytes",
	sampleLive:     "/gc/heap/live:bytes",
	sampleTotal:    "/memory/classes/total:bytes",
	sampleObjects:  "/memory/classes/heap/objects:bytes",
	sampleUnused:   "/memory/classes/heap/unused:bytes",
	sampleFree:     "/memory/classes/heap/free:bytes",
	sampleReleased: "/memory/classes/heap/released:bytes",
}

// nearLimit reports whether the memory the collector cannot free has
// passed three quarters of the soft memory limit in force (GOMEMLIMIT,
// general_settings.memory_limit or the cgroup's default; read each window,
// so a limit set after the server was built counts): the heap the last
// collection found live, plus everything the runtime holds outside the
// heap (goroutine stacks, its own structures). The heap's garbage and the
// free and unused spans it keeps are not counted: under a soft limit the
// collector lets the heap grow to the limit by design and frees them when
// it runs, so counting them (as the first version did, with all the Go
// runtime's memory) lowered the bound whenever the limit did its job. Past
// three quarters the collector has less than a quarter of the limit to
// work in and runs ever more often; fewer requests in flight is then what
// frees memory. No limit: never.
func nearLimit(s []metrics.Sample) bool {
	for _, x := range s[sampleLimit:] {
		if x.Value.Kind() != metrics.KindUint64 {
			return false
		}
	}
	limit := s[sampleLimit].Value.Uint64()
	if limit == 0 || limit >= math.MaxInt64 {
		return false
	}
	u := func(i int) uint64 { return s[i].Value.Uint64() }
	heap := u(sampleObjects) + u(sampleUnused) + u(sampleFree) + u(sampleReleased)
	outside := uint64(0)
	if t := u(sampleTotal); t > heap {
		outside = t - heap
	}
	return u(sampleLive)+outside > limit/4*3
}

func newShedder(max int64, cpu bool, onShed func(string)) *shedder {
	s := &shedder{max: max, cpu: cpu, onShed: onShed}
	s.floor = min(max, shedFloorPerProc*int64(runtime.GOMAXPROCS(0)))
	s.limit.Store(max)
	s.sample = make([]metrics.Sample, nSamples)
	for i, name := range sampleNames {
		s.sample[i].Name = name
	}
	s.memNear = nearLimit
	return s
}

// InFlight reports the inference requests in flight and the bound in force.
func (s *shedder) InFlight() (n, limit int64) {
	if s.max < 0 {
		return s.inflight.Load(), -1
	}
	return s.inflight.Load(), s.limit.Load()
}

// wrap sheds h's requests past the bound.
func (s *shedder) wrap(h http.Handler) http.Handler {
	if s.max < 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := s.inflight.Add(1)
		defer s.inflight.Add(-1)
		if s.cpu {
			if now := time.Now().UnixNano(); now >= s.next.Load() {
				s.adjust(now, n)
			}
		}
		if limit := s.limit.Load(); n > limit {
			s.onShed(s.reason(limit))
			if limit < s.max {
				// The bound was lowered: the CPU or the memory cannot keep
				// up. The client's connection is closed after the answer
				// rather than kept idle in its pool, holding a goroutine
				// and its buffers here.
				w.Header().Set("Connection", "close")
			}
			e := &apierror.Error{Status: http.StatusServiceUnavailable, Type: "overloaded_error", Code: "overloaded",
				Message:    "the gateway is overloaded: too many requests in flight; retry after the time in Retry-After",
				RetryAfter: shedRetryAfter, Cause: errOverloaded}
			if strings.HasPrefix(r.URL.Path, "/v1/messages") || strings.HasPrefix(r.URL.Path, "/anthropic/") {
				apierror.WriteAnthropic(w, e)
			} else {
				apierror.Write(w, e)
			}
			return
		}
		h.ServeHTTP(w, r)
	})
}

// reason names why a request was shed under the bound in force: in_flight
// (the configured bound), lowered (lowered by the CPU signal) or memory
// (lowered while the memory signal was on).
func (s *shedder) reason(limit int64) string {
	switch {
	case limit >= s.max:
		return "in_flight"
	case s.byMemory.Load():
		return "memory"
	default:
		return "lowered"
	}
}

// adjust reads the signals once a window: when the CPU is saturated
// (cpuSignal.window), or the memory the collector cannot free is past
// three quarters of the soft memory limit (nearLimit), the bound drops to
// three quarters of the requests in flight (not below the floor); when a
// slow window is the gateway's own collection, the bound stays as it is;
// otherwise it grows back by a sixteenth of the configured bound.
func (s *shedder) adjust(now, inflight int64) {
	if !s.mu.TryLock() {
		return // another request is reading it
	}
	defer s.mu.Unlock()
	if now < s.next.Load() {
		return
	}
	s.next.Store(now + int64(shedWindow))
	metrics.Read(s.sample)
	if s.sample[sampleSched].Value.Kind() != metrics.KindFloat64Histogram ||
		s.sample[sampleCycles].Value.Kind() != metrics.KindUint64 ||
		s.sample[sampleGCCPU].Value.Kind() != metrics.KindFloat64 ||
		s.sample[sampleGCPauses].Value.Kind() != metrics.KindFloat64Histogram {
		return
	}
	var pauses uint64
	for _, n := range s.sample[sampleGCPauses].Value.Float64Histogram().Counts {
		pauses += n
	}
	cpu := s.window(s.sample[sampleSched].Value.Float64Histogram(),
		s.sample[sampleCycles].Value.Uint64(), s.sample[sampleGCCPU].Value.Float64(), pauses)
	memory := s.memNear(s.sample) // what the collector cannot free nears the soft memory limit
	s.apply(cpu, memory, inflight)
}

// apply moves the bound in force after a window (adjust).
func (s *shedder) apply(cpu cpuVerdict, memory bool, inflight int64) {
	limit := s.limit.Load()
	switch {
	case cpu == cpuSaturated || memory:
		s.byMemory.Store(memory)
		limit = max(s.floor, min(limit, inflight)*3/4)
	case cpu == cpuCollecting:
		return
	default:
		limit = min(s.max, limit+max(1, s.max/16))
	}
	s.limit.Store(limit)
}

// cpuVerdict is what a window says of the CPU.
type cpuVerdict int

const (
	cpuFine       cpuVerdict = iota // goroutines got a CPU in time
	cpuCollecting                   // slow, but the gateway's own collection explains it
	cpuSaturated                    // slow: the CPU cannot keep up
)

// cpuSignal tells a CPU shortage from the gateway's own collections. A
// window is slow when more than 1% of its goroutines' waits for a CPU took
// longer than shedSchedTarget (slowWindow). A collection makes slow
// windows on a gateway that keeps up: with 100,000 keys a mark is ≈ 35 ms
// of CPU, run beside the requests on a quarter of the Ps plus the
// allocating goroutines' assists, so requests queue behind it, and the
// queue drains once the mark ends (the waits it made are counted when they
// end: in the window after, too). A shortage makes slow windows with or
// without a collection. So a slow window counts as saturated when no
// collection ran in it or in the window before, or when it is the
// shedSlowRun-th slow window in a row or later (a shortage with a
// collection in every window); a slow window a collection explains leaves
// the bound as it is (cpuCollecting).
//
// Whether a collection ran in a window comes from two counters read with
// the histogram: /gc/cycles/total moves when a cycle ends (its mark
// termination), /cpu/classes/gc/total when a cycle's stop-the-world pauses
// end — at its start (sweep termination) and at its end — since
// runtime/metrics takes the collector's CPU time from those pauses'
// snapshots only. Whether a mark is running now, in a window where neither
// counter moved, comes from the count of the collector's stop-the-world
// pauses (/sched/pauses/total/gc): a cycle makes two, one as its mark
// starts and one as it ends, so the pauses since the last window beyond
// two per cycle ended in it tell a mark started after the last end (also
// when a cycle ended and the next started in one window, which the GC CPU
// time cannot tell). A mark termination the runtime restarts (issue 27993)
// makes a third pause: the mark is then taken as running until the next
// cycle starts (the clamp to 0..1 absorbs it), at worst shedSlowRun-1
// windows of a shortage taken for a collection.
type cpuSignal struct {
	prev      []uint64 // the histogram's counts at the last window
	cycles    uint64   // /gc/cycles/total at the last window
	gcCPU     float64  // /cpu/classes/gc/total at the last window
	pauses    uint64   // /sched/pauses/total/gc's count at the last window
	marking   bool     // a mark was running at the last window
	collected bool     // a collection ran in the last window
	slowRun   int      // slow windows in a row, up to the last
}

// window judges the window since the last call from the cumulative
// scheduler latency histogram, completed GC cycles, GC CPU seconds and
// the count of the collector's stop-the-world pauses.
func (c *cpuSignal) window(hist *metrics.Float64Histogram, cycles uint64, gcCPU float64, pauses uint64) cpuVerdict {
	first := c.prev == nil
	slow := !first && slowWindow(hist, c.prev, shedSchedTarget.Seconds())
	c.prev = append(c.prev[:0], hist.Counts...)
	marking := false
	if !first {
		// Marks running now: the one running at the last window, plus
		// the pauses since beyond two per cycle ended (0..1).
		m := int64(pauses-c.pauses) - 2*int64(cycles-c.cycles)
		if c.marking {
			m++
		}
		marking = m > 0
	}
	collected := !first && (cycles != c.cycles || gcCPU != c.gcCPU || pauses != c.pauses) || marking
	before := c.collected
	c.cycles, c.gcCPU, c.pauses, c.marking, c.collected = cycles, gcCPU, pauses, marking, collected
	if !slow {
		c.slowRun = 0
		return cpuFine
	}
	c.slowRun++
	if collected || before {
		if c.slowRun < shedSlowRun {
			return cpuCollecting
		}
	}
	return cpuSaturated
}

// slowWindow reports whether more than 1% of the waits counted since prev
// lasted longer than target seconds.
func slowWindow(h *metrics.Float64Histogram, prev []uint64, target float64) bool {
	var total, slow uint64
	for i, c := range h.Counts {
		if i < len(prev) {
			c -= prev[i]
		}
		total += c
		if h.Buckets[i] >= target { // the bucket's lower bound
			slow += c
		}
	}
	return total >= 100 && slow*100 > total
}

// inferenceMux registers routes on the server behind the shedder: the
// inference routes (POST); the GET routes a gateway mounts (model lists)
// are not shed.
type inferenceMux struct{ s *Server }

func (m inferenceMux) Handle(pattern string, h http.Handler) {
	if !strings.HasPrefix(pattern, http.MethodGet+" ") {
		h = m.s.shed.wrap(h)
		m.s.shedPatterns[pattern] = true
	}
	m.s.Handle(pattern, h)
}
