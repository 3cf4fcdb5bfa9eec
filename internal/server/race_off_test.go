//go:build !race

package server

// raceOn: the race detector is on (sync.Pool then drops a share of what is put back).
const raceOn = false
