//go:build race

package guardrail

// raceOn: the race detector is on. TestInjectionScanMatchesByteScan, a
// single-goroutine comparison of two scans (mostly regexp matching, which
// the detector slows about thirty times and has no concurrency to watch
// in), then builds a twelfth of its random texts; without it all of them.
const raceOn = true
