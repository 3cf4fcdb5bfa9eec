// Package memlimit chooses the Go runtime's soft memory limit at start:
// the GOMEMLIMIT environment variable when set (the runtime has applied
// it), else general_settings.memory_limit, else nine tenths of the
// memory limit of the cgroup the process runs in (docs/performance.md,
// "Issue 31: memory at load"). Without any of them the runtime keeps no
// limit, as before.
package memlimit

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"math"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
)

// Share is the part of a cgroup's memory limit the default soft limit
// takes: the rest is for what the Go runtime does not count (the
// binary's pages, the kernel's socket buffers, a Python hook's workers)
// and for the time the collector needs to catch up.
const Share = 0.9

// Source says where the limit in force came from.
type Source string

const (
	FromEnv    Source = "GOMEMLIMIT"
	FromConfig Source = "general_settings.memory_limit"
	FromCgroup Source = "cgroup"
	None       Source = "none"
)

// Parse reads a limit as GOMEMLIMIT writes it: a number of bytes with an
// optional unit B, KiB, MiB, GiB or TiB ("512MiB"), or "off" for none
// (returned as math.MaxInt64).
func Parse(s string) (int64, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "off" {
		return math.MaxInt64, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("memory limit %q: want a positive number of bytes with an optional unit (B, KiB, MiB, GiB, TiB), e.g. 512MiB, or off", in)
	}
	return n * mult, nil
}

// Cgroup returns the memory limit of the cgroup the process is in, read
// from root (the file system's root: /proc/self/cgroup and
// /sys/fs/cgroup under it): cgroup v2's memory.max, else cgroup v1's
// memory.limit_in_bytes. ok is false when there is none ("max", v1's
// page-rounded MaxInt64) or it cannot be read. A limit set on a parent
// cgroup only is not seen.
func Cgroup(root fs.FS) (limit int64, ok bool) {
	b, err := fs.ReadFile(root, "proc/self/cgroup")
	if err != nil {
		return 0, false
	}
	var v1, v2 string
	found1, found2 := false, false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2, found2 = parts[2], true
		case hasController(parts[1], "memory"):
			v1, found1 = parts[2], true
		}
	}
	// Inside a cgroup namespace the process's own cgroup is mounted at
	// the root; outside, at its path below the mount. Try both.
	if found2 {
		for _, dir := range []string{path.Join("sys/fs/cgroup", v2), "sys/fs/cgroup"} {
			if l, present := readLimit(root, path.Join(dir, "memory.max")); present {
				return l, l > 0 // "max": this cgroup has no limit
			}
		}
	}
	if found1 {
		for _, dir := range []string{path.Join("sys/fs/cgroup/memory", v1), "sys/fs/cgroup/memory"} {
			if l, present := readLimit(root, path.Join(dir, "memory.limit_in_bytes")); present {
				return l, l > 0
			}
		}
	}
	return 0, false
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// noLimitV1 is what cgroup v1 reports for no limit: MaxInt64 rounded
// down to a page; anything at or above a petabyte is taken as none.
const noLimitV1 = 1 << 50

// readLimit reads one limit file: present is false when it is absent or
// unreadable; the limit is 0 for none ("max", a number past noLimitV1,
// or what does not parse).
func readLimit(root fs.FS, name string) (limit int64, present bool) {
	b, err := fs.ReadFile(root, name)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 || n >= noLimitV1 {
		return 0, true
	}
	return n, true
}

// Choose returns the soft memory limit for the process and where it
// comes from: GOMEMLIMIT when env has it (the runtime applied it; limit
// is then what the runtime holds), else configured (general_settings.
// memory_limit, "" when absent; "off" for none), else Share of the
// cgroup's limit under root, else none (math.MaxInt64).
func Choose(getenv func(string) string, configured string, root fs.FS) (int64, Source, error) {
	if getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1), FromEnv, nil
	}
	if configured != "" {
		l, err := Parse(configured)
		if err != nil {
			return 0, FromConfig, fmt.Errorf("general_settings.memory_limit: %w", err)
		}
		return l, FromConfig, nil
	}
	if c, ok := Cgroup(root); ok {
		return int64(float64(c) * Share), FromCgroup, nil
	}
	return math.MaxInt64, None, nil
}

// Apply sets the limit Choose picks and returns it with its source.
func Apply(getenv func(string) string, configured string, root fs.FS) (int64, Source, error) {
	l, src, err := Choose(getenv, configured, root)
	if err != nil {
		return 0, src, err
	}
	if src != FromEnv {
		debug.SetMemoryLimit(l)
	}
	return l, src, nil
}
