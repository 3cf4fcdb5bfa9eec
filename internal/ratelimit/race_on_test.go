//go:build race

package ratelimit

// raceOn: the race detector is on. The single-goroutine differential walks
// (TestWindowMatchesSum, TestWindowMatchesLocalSeeds) then take a share of
// their seeds: the detector has no concurrency to watch in them and runs
// them about ten times slower. Without it they take every seed.
const raceOn = true
