package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CPU pinning (--gateway-cpus): on a machine of few cores the load
// generator, the mock upstream and the process measured otherwise take
// CPU from one another, and a rate above what the gateway sustains then
// measures the generator's starvation rather than the gateway's. With
// pinning, every gateway and floor process runs on the CPUs given, with
// GOMAXPROCS their count, and the bench process and the mock run on the
// others.

// ParseCPUList reads a Linux CPU list ("0", "0-3", "0,2-3"), as taskset -c
// and /proc/PID/status's Cpus_allowed_list write it, into sorted, distinct
// CPU numbers.
func ParseCPUList(s string) ([]int, error) {
	var cpus []int
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty CPU list")
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil || first < 0 {
			return nil, fmt.Errorf("CPU list %q: %q is not a CPU number", s, lo)
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(hi); err != nil || last < first {
				return nil, fmt.Errorf("CPU list %q: %q is not a range", s, part)
			}
		}
		if last >= 1024 { // CPU_SETSIZE
			return nil, fmt.Errorf("CPU list %q: CPU %d is past 1023", s, last)
		}
		for c := first; c <= last; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	return slices.Compact(cpus), nil
}

// formatCPUList writes cpus as a CPU list, ranges joined ("0,2-3").
func formatCPUList(cpus []int) string {
	var parts []string
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", cpus[i], cpus[j]))
		} else {
			parts = append(parts, strconv.Itoa(cpus[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// ownCPUs is the CPUs the calling thread may run on.
func ownCPUs() ([]int, error) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return nil, fmt.Errorf("reading this process's CPUs: %w", err)
	}
	var cpus []int
	for c := range 1024 {
		if allowed.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// splitCPUs checks that gateway CPUs are among allowed and returns the
// other allowed ones: the bench's and the mock's.
func splitCPUs(allowed, gateway []int) (rest []int, err error) {
	for _, c := range gateway {
		if !slices.Contains(allowed, c) {
			return nil, fmt.Errorf("--gateway-cpus: CPU %d is not one this process may run on (%s)", c, formatCPUList(allowed))
		}
	}
	for _, c := range allowed {
		if !slices.Contains(gateway, c) {
			rest = append(rest, c)
		}
	}
	if len(rest) == 0 {
		return nil, errors.New("--gateway-cpus leaves no CPU for the load generator and the mock")
	}
	return rest, nil
}

// pinProcess binds every thread of process pid to cpus. sched_setaffinity
// binds one thread, and a Go process starts threads of its own, so the
// threads are listed from /proc and pinned until a pass finds none it had
// not pinned: a thread started later is started by a pinned one and
// inherits its mask.
func pinProcess(pid int, cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	pinned := map[int]bool{}
	for pass := 0; pass < 100; pass++ {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
		if err != nil || len(tasks) == 0 {
			return fmt.Errorf("pinning process %d: no threads listed", pid)
		}
		fresh := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(filepath.Base(t))
			if err != nil || pinned[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue // the thread ended
				}
				return fmt.Errorf("pinning thread %d of process %d: %w", tid, pid, err)
			}
			pinned[tid], fresh = true, true
		}
		if !fresh {
			return nil
		}
	}
	return fmt.Errorf("pinning process %d: its threads kept multiplying", pid)
}

// allowedCPUs reads a process's Cpus_allowed_list from /proc (its main
// thread's).
func allowedCPUs(pid int) (string, error) {
	return taskAllowedCPUs(fmt.Sprintf("/proc/%d/status", pid))
}

func taskAllowedCPUs(statusPath string) (string, error) {
	b, err := os.ReadFile(statusPath)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s: no Cpus_allowed_list", statusPath)
}
