package main

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestBenchSmoke runs the load harness for a few seconds: it proves the
// harness works end to end (processes, load, /proc readings, table), not
// how fast anything is. Parallel: it fails only on a harness error or a
// gateway that answered nothing, never on a figure, and its processes take
// ports (freePort) and a temp dir of their own.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	t.Parallel()
	out, err := exec.Command(buildBinary(t), "bench", "--smoke", "--both").CombinedOutput()
	if err != nil {
		t.Fatalf("bench --smoke: %v\n%s", err, out)
	}
	// The floor runs whatever the scenarios, every row has its ratio to it,
	// and the table is dated.
	for _, want := range []string{"Run of ", "| × floor |", "| floor | closed:4 | false |", "| floor | rate:100 | true |",
		"| plain | closed:4 | false |", "| governed | rate:100 | true |"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q row:\n%s", want, out)
		}
	}
	t.Logf("\n%s", out)
}

// TestSoakSmoke runs the soak for a few seconds: the mix is served as
// expected (no unexpected outcomes) and the samples and slopes are printed.
func TestSoakSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	out, err := exec.Command(buildBinary(t), "bench", "--soak", "--smoke", "--rate", "50").CombinedOutput()
	if err != nil {
		t.Fatalf("bench --soak --smoke: %v\n%s", err, out)
	}
	for _, want := range []string{"| t | RSS | goroutines | open fds |", "| under load |", "abandoned stream", "upstream error", "slow upstream", "unexpected outcomes: none"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	t.Logf("\n%s", out)
}

// TestBenchRefusesCPUsItMayNotUse: --gateway-cpus naming CPUs this
// process may not run on is refused before anything starts. That a pinned
// gateway really runs where it is told is internal/bench's TestLaunchPins
// (a whole pinned smoke run cost CI over a minute for nothing more).
func TestBenchRefusesCPUsItMayNotUse(t *testing.T) {
	if runtime.NumCPU() >= 1024 {
		t.Skip("this machine has CPU 1023")
	}
	out, err := exec.Command(buildBinary(t), "bench", "--smoke", "--gateway-cpus", "0-1023").CombinedOutput()
	if err == nil {
		t.Errorf("--gateway-cpus naming CPUs this process may not use was taken:\n%s", out)
	}
}

// TestBenchRefusesAQuotaItCannotGive: a --gateway-cpu-quota above the
// machine's CPUs is refused, naming the flag, before anything starts.
// That a process really runs under a quota is internal/bench's
// TestLaunchUnderQuota.
func TestBenchRefusesAQuotaItCannotGive(t *testing.T) {
	out, err := exec.Command(buildBinary(t), "bench", "--smoke", "--gateway-cpu-quota", "100000").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--gateway-cpu-quota") || strings.Contains(string(out), "Run of ") {
		t.Errorf("--gateway-cpu-quota 100000: %v\n%s", err, out)
	}
}
