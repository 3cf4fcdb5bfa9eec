//go:build race

package ratelimit

// raceOn: the race detector is on. The single-goroutine differential tests
// (TestWindowMatchesSum, TestWindowMatchesLocalSeeds, TestLocalMatchesOld)
// then take a share of their seeds: the detector has no concurrency to
// watch in them and runs them about ten times slower. Without it they take
// every seed (.ci/run runs them so). TestLocalStateBytes then measures its
// bound alone, not the log-only figures beside it.
const raceOn = true
