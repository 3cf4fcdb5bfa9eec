//go:build !race

package sqlstore_test

const raceOn = false
