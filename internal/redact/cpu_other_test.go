//go:build !linux

package redact

import (
	"testing"
	"time"
)

var cpuEpoch = time.Now()

// threadCPU falls back to wall time where there is no per-thread CPU clock.
func threadCPU(*testing.T) time.Duration { return time.Since(cpuEpoch) }
