package ledger_test

import (
	"flag"
	"os"
	"runtime"
	"strconv"
	"testing"
)

// waitBound is the -parallel this package's tests run with when the flag
// is not given. The tests marked t.Parallel spend their time waiting on a
// socket's read timeout, a lease's expiry or a hung fake Redis, each
// against a Redis prefix, proxy and listener of its own; Go's default of
// GOMAXPROCS (2 on the CI machine) would run these waits two at a time.
// Tests that stress money races, count goroutines or memory, or need a
// deadline of a second or less to be met stay serial: Go runs every
// serial top-level test before any parallel one starts.
const waitBound = 8

func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set && runtime.GOMAXPROCS(0) < waitBound {
		_ = flag.Set("test.parallel", strconv.Itoa(waitBound))
	}
	os.Exit(m.Run())
}
