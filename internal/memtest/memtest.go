// Package memtest measures memory for tests that bound what a structure
// keeps (bytes per key, per account, per rate-limit state).
package memtest

import "runtime"

// LiveHeap is the live heap after two full collections (the second
// finishes what the first's finalizers and sweeps left), in bytes.
func LiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
