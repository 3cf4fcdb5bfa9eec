package main

import (
	"os"
	"runtime"
	"strings"
)

// The runtime samples one allocation every 512 KiB for heap profiles by
// default, and keeps a hash table of the sampled call stacks (1.4 MB of
// address space, made resident as stacks hash into it) and their records
// outside the Go heap: up to 1.5 MB of anonymous memory (BuckHashSys) that only
// /debug/pprof/heap and /debug/pprof/allocs read. Those are served only
// with TOLLGATE_PPROF_ADDR, so without it the sampling is off. A
// memprofilerate in GODEBUG (the runtime applied it before this runs) is
// left as it is.
func init() { runtime.MemProfileRate = memProfileRate(runtime.MemProfileRate, os.Getenv) }

// memProfileRate is the heap profile's sampling rate given the runtime's
// (cur) and the environment.
func memProfileRate(cur int, getenv func(string) string) int {
	if getenv("TOLLGATE_PPROF_ADDR") != "" || strings.Contains(getenv("GODEBUG"), "memprofilerate=") {
		return cur
	}
	return 0
}
