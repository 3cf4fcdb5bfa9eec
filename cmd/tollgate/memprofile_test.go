package main

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

// TestMemProfileRateOffWithoutPprof: the heap profile's sampling is off in
// this process (no TOLLGATE_PPROF_ADDR, no memprofilerate in GODEBUG in the
// test's environment), and on as the runtime set it when either is there.
func TestMemProfileRateOffWithoutPprof(t *testing.T) {
	if os.Getenv("TOLLGATE_PPROF_ADDR") == "" && !strings.Contains(os.Getenv("GODEBUG"), "memprofilerate=") &&
		runtime.MemProfileRate != 0 {
		t.Fatalf("runtime.MemProfileRate = %d at start, want 0: no profile listener asked for", runtime.MemProfileRate)
	}
	tests := []struct {
		name string
		env  map[string]string
		want int
	}{
		{"nothing set", map[string]string{}, 0},
		{"pprof listener", map[string]string{"TOLLGATE_PPROF_ADDR": "127.0.0.1:6060"}, 512 * 1024},
		{"GODEBUG rate", map[string]string{"GODEBUG": "gctrace=1,memprofilerate=4096"}, 512 * 1024},
		{"GODEBUG without a rate", map[string]string{"GODEBUG": "gctrace=1"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := memProfileRate(512*1024, func(k string) string { return tt.env[k] }); got != tt.want {
				t.Errorf("memProfileRate = %d, want %d", got, tt.want)
			}
		})
	}
}
