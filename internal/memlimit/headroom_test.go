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
	const floor, fraction = 16 << 20, 0.5
	tests := []struct {
		name                  string
		live, stacks, globals uint64
		want                  int
	}{
		{"nothing collected yet", 0, 0, 0, 100},
		{"a small heap keeps GOGC=100", 8 << 20, 1 << 20, 1 << 20, 100},
		{"at the floor", 16 << 20, 0, 0, 100},
		{"between floor and floor/fraction: the floor", 24 << 20, 0, 0, 67},
		{"100,000 keys under load", 35 << 20, 1 << 20, 1 << 20, 48},
		{"a large heap: the fraction", 4 << 30, 8 << 20, 2 << 20, 50},
		{"stacks count in the runtime's base", 64 << 20, 64 << 20, 0, 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percent(tt.live, tt.stacks, tt.globals, floor, fraction); got != tt.want {
				t.Errorf("Percent = %d, want %d", got, tt.want)
			}
		})
	}
	// The gateway's own floor and fraction with 100,000 keys (≈ 24 MiB
	// live): a goal of live + 12 MiB, not the 16 MiB before branch mem79.
	if got := Percent(24<<20, 0, 0, HeadroomFloor, HeadroomFraction); got != 50 {
		t.Errorf("Percent at 24 MiB live with HeadroomFloor %d = %d, want 50 (a 12 MiB headroom)", HeadroomFloor, got)
	}
	// Whatever the heap: the headroom is never under the rule's (nor the
	// goal under the live heap), and never over GOGC=100's.
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		live, stacks, globals := r.Uint64N(64<<30), r.Uint64N(1<<30), r.Uint64N(64<<20)
		p := Percent(live, stacks, globals, floor, fraction)
		if p < 1 || p > 100 {
			t.Fatalf("Percent(%d, %d, %d) = %d, out of [1, 100]", live, stacks, globals, p)
		}
		got := goalOf(live, stacks, globals, p) - float64(live)
		rule := max(float64(floor), fraction*float64(live))
		if gogc100 := goalOf(live, stacks, globals, 100) - float64(live); got < min(rule, gogc100)*0.999999 {
			t.Fatalf("Percent(%d, %d, %d) = %d: headroom %.0f under the rule's %.0f", live, stacks, globals, p, got, min(rule, gogc100))
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

// TestHeadroomFollowsTheLiveHeap runs the rule in this process: with a
// live heap past floor/fraction, the heap goal after a collection is
// live + fraction × live, not GOGC=100's twice the live heap; when the
// live heap falls back under the floor, GOGC is 100 again.
func TestHeadroomFollowsTheLiveHeap(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	const floor, fraction = 4 << 20, 0.5
	h, stop := startHeadroom(floor, fraction)
	defer stop()

	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/heap/goal:bytes"}, {Name: "/gc/gogc:percent"}}
	// settle collects until the rule has followed a collection that ran
	// after this call and read the heap the collection left.
	settle := func() (live, goal uint64, gogc int) {
		t.Helper()
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

	// 64 MiB kept live, in pieces without pointers.
	keep := make([][]byte, 64)
	for i := range keep {
		keep[i] = make([]byte, 1<<20)
	}
	live, goal, gogc := settle()
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
	_, _, gogc = settle()
	if gogc != 100 {
		t.Errorf("with the live heap back under the floor GOGC is %d, want 100", gogc)
	}

	stop()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("after stop GOGC is %d, want 100", p)
	}
}
