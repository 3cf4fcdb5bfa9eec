package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// burnCPU spends d of the process's CPU time.
func burnCPU(d time.Duration) {
	start := processCPU()
	x := 0
	for processCPU()-start < int64(d) {
		for i := range 1000 {
			x += i
		}
	}
	_ = x
}

// budgetServer serves a handler that spends 2 ms of CPU behind a shedder
// (bound 100, CPU signal on) whose cgroup quota reads as quota CPUs, and
// the reasons it shed for.
func budgetServer(t *testing.T, quota float64) (url string, reasons func() []string) {
	t.Helper()
	var mu sync.Mutex
	var got []string
	s := newShedder(100, true, func(r string) { mu.Lock(); got = append(got, r); mu.Unlock() })
	s.quota = func() float64 { return quota }
	s.readBudget()
	hs := httptest.NewServer(s.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		burnCPU(2 * time.Millisecond)
		_, _ = io.WriteString(w, "ok")
	})))
	t.Cleanup(hs.Close)
	return hs.URL, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), got...) }
}

// TestCPUBudgetShedsUnderQuota: under a cgroup CPU quota (here 0.01 CPU: a
// budget of 70 µs of CPU a 10 ms window), once a window has spent its
// budget the next inference request is refused 503 overloaded_error with
// Retry-After 1, counted as reason cpu_budget, and the connection is kept
// (no Connection: close): the gateway refuses rather than spend the quota
// and be stopped by the kernel with every request inside. Requests go on
// being admitted in later windows.
func TestCPUBudgetShedsUnderQuota(t *testing.T) {
	url, reasons := budgetServer(t, 0.01)
	c := &http.Client{}
	var shed *http.Response
	var admitted int
	deadline := time.Now().Add(30 * time.Second)
	for shed == nil || admitted == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("within 30 s: %d admitted, shed %v (reasons %v): want a 503 once a window spent its budget", admitted, shed != nil, reasons())
		}
		resp, err := c.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(chat3))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			admitted++
		case http.StatusServiceUnavailable:
			if !strings.Contains(string(b), "overloaded_error") {
				t.Fatalf("503 body %s, want overloaded_error", b)
			}
			shed = resp
		default:
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
	}
	if ra := shed.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
	if shed.Close || shed.Header.Get("Connection") == "close" {
		t.Error("a refusal by the CPU budget closes the connection: it should be kept")
	}
	for _, r := range reasons() {
		if r != "cpu_budget" {
			t.Errorf("shed for %q, want cpu_budget", r)
		}
	}
}

// TestCPUBudgetOffWithoutQuota: without a quota nothing is refused for
// CPU time, however much a window spends.
func TestCPUBudgetOffWithoutQuota(t *testing.T) {
	url, reasons := budgetServer(t, 0)
	for range 30 {
		resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(chat3))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d without a quota (reasons %v)", resp.StatusCode, reasons())
		}
	}
}

// TestParseCPUMax: cgroup2's cpu.max in CPUs.
func TestParseCPUMax(t *testing.T) {
	for in, want := range map[string]float64{"30000 100000\n": 0.3, "max 100000\n": 0, "200000 100000": 2, "": 0, "x 1": 0} {
		if got := parseCPUMax(in); got < want-1e-9 || got > want+1e-9 {
			t.Errorf("parseCPUMax(%q) = %v, want %v", in, got, want)
		}
	}
}
