package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// What queues a request before the gateway's code sees it, read around
// each of a gateway's runs: the CFS throttling of its cgroup
// (--gateway-cpu-quota; a throttled process waits for the next period
// whatever it was doing) and the handshakes the kernel dropped because a
// listen queue was full (each one a SYN the client retries after 1 s,
// then 3 s, ...). Both are columns of the results table.

// parseThrottled is the time the cgroup was throttled, from its cpu.stat
// text: cgroup2's throttled_usec, or v1's throttled_time (ns). ok is false
// when neither is there.
func parseThrottled(text string) (d time.Duration, ok bool) {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "throttled_usec":
			return time.Duration(n) * time.Microsecond, true
		case "throttled_time":
			return time.Duration(n), true
		}
	}
	return 0, false
}

// cgroupThrottled is the throttled time so far of the cgroup at dir, ok
// false when it cannot be read (no cgroup: no quota).
func cgroupThrottled(dir string) (time.Duration, bool) {
	if dir == "" {
		return 0, false
	}
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, false
	}
	return parseThrottled(string(b))
}

// parseNetstat is the counter named field of the TcpExt lines of
// /proc/net/netstat text (a line of names, then a line of values).
func parseNetstat(text, field string) (int64, bool) {
	lines := strings.Split(text, "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) || values[0] != "TcpExt:" {
			continue
		}
		for j, name := range names {
			if name == field {
				n, err := strconv.ParseInt(values[j], 10, 64)
				return n, err == nil
			}
		}
	}
	return 0, false
}

// listenOverflows is the kernel's TcpExt ListenOverflows so far (this
// network namespace, every listener): -1 when it cannot be read.
func listenOverflows() int64 {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return -1
	}
	n, ok := parseNetstat(string(b), "ListenOverflows")
	if !ok {
		return -1
	}
	return n
}
