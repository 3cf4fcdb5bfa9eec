package server

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// CPU budget under a CFS quota (docs/performance.md, branch shed2x). A
// process under a cgroup CPU quota that spends its quota in a period is
// stopped until the next one (up to 70 ms of a 100 ms period at 0.3 CPU):
// every request in the process waits that long, whatever the in-flight
// bound. So when the process's cgroup has a quota, its CPU is also
// counted in short windows and, once a window has spent its share of the
// quota (budgetShare of it), new inference requests are refused 503 for
// the rest of the window rather than admitted into the stall.
const (
	// budgetWindow is the window the CPU is counted in. Any period of the
	// quota overlaps at most period/budgetWindow+1 windows, so with
	// budgetShare the process stays under its quota in every period.
	budgetWindow = 10 * time.Millisecond
	// budgetShare is the share of the quota a window may spend on
	// admitting: the rest is left for refusing, reading and the runtime.
	budgetShare = 0.7
)

// cgroupQuota is the CPU quota, in CPUs, of the cgroup2 the process is in
// (cpu.max), 0 when none (or no cgroup2).
func cgroupQuota() float64 {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(own), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", path, "cpu.max"))
			if err != nil {
				return 0
			}
			return parseCPUMax(string(b))
		}
	}
	return 0
}

// parseCPUMax is a cgroup2 cpu.max ("QUOTA PERIOD", QUOTA "max" for none)
// in CPUs, 0 when none.
func parseCPUMax(s string) float64 {
	f := strings.Fields(s)
	if len(f) != 2 || f[0] == "max" {
		return 0
	}
	q, err1 := strconv.ParseFloat(f[0], 64)
	p, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0
	}
	return q / p
}

// processCPU is the CPU time of every thread of the process so far.
func processCPU() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return ts.Nano()
}

// overBudget reports whether the current window has spent its CPU budget
// (s.budget ns; 0: no quota, never), starting a new window when the last
// has ended.
func (s *shedder) overBudget() bool {
	b := s.budget.Load()
	if b <= 0 {
		return false
	}
	now := time.Now().UnixNano()
	start := s.budgetStart.Load()
	cpu := processCPU()
	if now-start >= int64(budgetWindow) {
		if s.budgetStart.CompareAndSwap(start, now) {
			s.budgetCPU.Store(cpu)
		}
		return false
	}
	return cpu-s.budgetCPU.Load() > b
}

// readBudget sets the window's budget from the cgroup's quota (read each
// shedder window: a process may be moved into a cgroup after it starts).
func (s *shedder) readBudget() {
	q := s.quota()
	s.budget.Store(int64(q * budgetShare * float64(budgetWindow)))
}
