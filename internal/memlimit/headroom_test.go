package memlimit

import (
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

// goalOf is the runtime's heap goal for a GOGC of p.
func goalOf(live, stacks, globals uint64, p int) float64 {
	return float64(live) + float64(live+stacks+globals)*float64(p)/100
}

func TestPercent(t *testing.T) {
	const floor, minGoal, fraction = 16 << 20, 32 << 20, 0.5
	tests := []struct {
		name                  string
		live, stacks, globals uint64
		want                  int
	}{
		{"nothing collected yet", 0, 0, 0, 100},
		{"a small heap: a goal of minGoal", 8 << 20, 1 << 20, 1 << 20, 240},
		{"a heap of a few MiB: stops where the runtime's least goal is minGoal", 1 << 20, 1 << 20, 0, 800},
		{"minGoal − live above the floor", 14 << 20, 0, 0, 129},
		{"at the floor: minGoal − live is the floor", 16 << 20, 0, 0, 100},
		{"between floor and floor/fraction: the floor", 24 << 20, 0, 0, 67},
		{"100,000 keys under load", 35 << 20, 1 << 20, 1 << 20, 48},
		{"a large heap: the fraction", 4 << 30, 8 << 20, 2 << 20, 50},
		{"stacks count in the runtime's base", 64 << 20, 64 << 20, 0, 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percent(tt.live, tt.stacks, tt.globals, floor, minGoal, fraction); got != tt.want {
				t.Errorf("Percent = %d, want %d", got, tt.want)
			}
		})
	}
	// The gateway's own floor and fraction with 100,000 keys (≈ 24 MiB
	// live): a goal of live + 12 MiB, not the 16 MiB before branch mem79,
	// and the minimum goal does not raise it.
	if got := Percent(24<<20, 0, 0, HeadroomFloor, HeadroomMinGoal, HeadroomFraction); got != 50 {
		t.Errorf("Percent at 24 MiB live with HeadroomFloor %d = %d, want 50 (a 12 MiB headroom)", HeadroomFloor, got)
	}
	// The gateway's own rule with few keys (≈ 7 MB live, branch gcgoal): a
	// goal of HeadroomMinGoal, at least live + HeadroomFloor; GOGC=100 gave
	// ≈ twice the live heap.
	if live, stacks, globals := uint64(7<<20), uint64(1<<20), uint64(512<<10); true {
		p := Percent(live, stacks, globals, HeadroomFloor, HeadroomMinGoal, HeadroomFraction)
		goal := goalOf(live, stacks, globals, p)
		if goal < float64(live+HeadroomFloor) || goal < HeadroomMinGoal {
			t.Errorf("Percent at 7 MiB live = %d: goal %.0f, want at least live + HeadroomFloor (%d) and HeadroomMinGoal (%d)", p, goal, live+HeadroomFloor, HeadroomMinGoal)
		}
	}
	// Whatever the heap: the headroom is never under the rule's (nor the
	// goal under the live heap) but where the runtime's least goal (4 MiB
	// × GOGC/100) makes up for it; the runtime's least goal is never over
	// minGoal; and where the floor and the fraction set the headroom (a
	// live heap of at least minGoal − floor) the goal is never over
	// GOGC=100's, as before branch gcgoal.
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200000 {
		top := uint64(64 << 30)
		if i%2 == 0 {
			top = 64 << 20 // small heaps, where minGoal and the cap matter
		}
		live, stacks, globals := r.Uint64N(top), r.Uint64N(top/64+1), r.Uint64N(64<<20)
		p := Percent(live, stacks, globals, floor, minGoal, fraction)
		if p < 1 || p > 100*minGoal/(4<<20) {
			t.Fatalf("Percent(%d, %d, %d) = %d, out of [1, %d]", live, stacks, globals, p, 100*minGoal/(4<<20))
		}
		got := max(goalOf(live, stacks, globals, p), float64(4<<20)*float64(p)/100) - float64(live)
		rule := max(float64(floor), fraction*float64(live), float64(minGoal)-float64(live))
		if got < rule*0.999999 {
			t.Fatalf("Percent(%d, %d, %d) = %d: headroom %.0f under the rule's %.0f", live, stacks, globals, p, got, rule)
		}
		if live >= minGoal-floor && p > 100 {
			t.Fatalf("Percent(%d, %d, %d) = %d: over GOGC=100 with the live heap past minGoal − floor", live, stacks, globals, p)
		}
	}
}

func TestHeadroomApplies(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	if !HeadroomApplies(env(), "") {
		t.Error("with nothing set the rule should run")
	}
	if HeadroomApplies(env("GOGC", "100"), "") {
		t.Error("GOGC set: the operator's pace should win")
	}
	if HeadroomApplies(env("GOGC", "off", "GOMEMLIMIT", "1GiB"), "") {
		t.Error("GOGC=off with GOMEMLIMIT: the operator's settings should win")
	}
	if HeadroomApplies(env("GOMEMLIMIT", "512MiB"), "") {
		t.Error("GOMEMLIMIT set: the operator's limit should be left as the only rule")
	}
	if HeadroomApplies(env(), "256MiB") {
		t.Error("memory_limit configured: the operator's limit should be left as the only rule")
	}
}

// settleHeadroom collects until the rule h has followed a collection that
// ran after this call and read the heap the collection left, and returns
// the live heap, the heap goal and GOGC then.
func settleHeadroom(t *testing.T, h *headroom) (live, goal uint64, gogc int) {
	t.Helper()
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/heap/goal:bytes"}, {Name: "/gc/gogc:percent"}}
	for range 3 {
		runtime.GC()
		n := h.cycles.Load()
		runtime.GC()
		deadline := time.Now().Add(time.Minute)
		for h.cycles.Load() == n {
			if time.Now().After(deadline) {
				t.Fatal("the rule did not follow a collection within a minute")
			}
			runtime.GC()
			time.Sleep(time.Millisecond)
		}
	}
	metrics.Read(samples)
	return samples[0].Value.Uint64(), samples[1].Value.Uint64(), int(samples[2].Value.Uint64())
}

// TestHeadroomFollowsTheLiveHeap runs the rule in this process: with a
// live heap past floor/fraction, the heap goal after a collection is
// live + fraction × live, not GOGC=100's twice the live heap; when the
// live heap falls back under the floor, the goal is minGoal.
func TestHeadroomFollowsTheLiveHeap(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	const floor, minGoal, fraction = 4 << 20, 16 << 20, 0.5
	h, stop := startHeadroom(floor, minGoal, fraction)
	defer stop()

	// 64 MiB kept live, in pieces without pointers.
	keep := make([][]byte, 64)
	for i := range keep {
		keep[i] = make([]byte, 1<<20)
	}
	live, goal, gogc := settleHeadroom(t, h)
	if live < 64<<20 {
		t.Fatalf("live heap %d, want at least 64 MiB", live)
	}
	headroom := float64(goal) - float64(live)
	if headroom < fraction*float64(live)*0.98 {
		t.Errorf("heap goal %d with %d live: headroom %.0f under the rule's %.0f (GOGC %d): the collector would run more often than the rule asks", goal, live, headroom, fraction*float64(live), gogc)
	}
	if headroom > fraction*float64(live)*1.15 {
		t.Errorf("heap goal %d with %d live: headroom %.0f, want ≈ %.0f (GOGC %d; GOGC=100 would give ≈ %d)", goal, live, headroom, fraction*float64(live), gogc, live)
	}
	runtime.KeepAlive(keep)

	keep = nil
	live, goal, gogc = settleHeadroom(t, h)
	if live > 4<<20 {
		t.Fatalf("live heap %d after dropping the 64 MiB, want under 4 MiB", live)
	}
	if goal < minGoal*98/100 || goal > minGoal*115/100 {
		t.Errorf("with %d live the heap goal is %d (GOGC %d), want ≈ minGoal %d", live, goal, gogc, minGoal)
	}

	stop()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("after stop GOGC is %d, want 100", p)
	}
}

// TestHeadroomSmallHeap runs the gateway's own rule in this process with
// a live heap like a gateway with few keys (≈ 7 MiB): the heap goal after
// a collection is at least live + HeadroomFloor and HeadroomMinGoal, not
// GOGC=100's twice the live heap (branch gcgoal: the slowest requests at
// 2,000 req/s overlapped the 4–5 collections a second that gave).
func TestHeadroomSmallHeap(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	h, stop := startHeadroom(HeadroomFloor, HeadroomMinGoal, HeadroomFraction)
	defer stop()

	keep := make([][]byte, 7)
	for i := range keep {
		keep[i] = make([]byte, 1<<20)
	}
	live, goal, gogc := settleHeadroom(t, h)
	if live < 7<<20 || live > 12<<20 {
		t.Fatalf("live heap %d, want 7–12 MiB", live)
	}
	if goal < live+HeadroomFloor*98/100 || goal < HeadroomMinGoal*98/100 {
		t.Errorf("heap goal %d with %d live (GOGC %d): want at least live + %d and %d", goal, live, gogc, HeadroomFloor, HeadroomMinGoal)
	}
	if goal > HeadroomMinGoal*115/100 {
		t.Errorf("heap goal %d with %d live (GOGC %d): want ≈ %d", goal, live, gogc, HeadroomMinGoal)
	}
	runtime.KeepAlive(keep)
}
