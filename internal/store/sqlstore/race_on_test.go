//go:build race

package sqlstore_test

// raceOn: the race detector is on. The differential listing tests, which
// run in one goroutine (nothing for the detector to find), take a share
// of their random filters under it; .ci/run runs them whole without it.
const raceOn = true
