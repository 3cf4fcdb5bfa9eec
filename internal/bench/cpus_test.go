package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestMain lets the test binary be the child TestLaunchPins launches: a
// server that reports its GOMAXPROCS and starts threads as it comes up.
func TestMain(m *testing.M) {
	if os.Getenv("TOLLGATE_BENCH_MOCK_CHILD") != "" && len(os.Args) > 1 && os.Args[1] == "mock-upstream" {
		// The mock upstream as `tollgate mock-upstream` runs it (its
		// --addr and --delay), for TestUpstreamLatency.
		fs := flag.NewFlagSet("mock-upstream", flag.ExitOnError)
		addr := fs.String("addr", "", "")
		delay := fs.Duration("delay", 0, "")
		_ = fs.Parse(os.Args[2:])
		_ = mockupstream.ListenAndServe(context.Background(), *addr, mockupstream.Options{Delay: *delay, NoRecord: true}, slog.Default())
		os.Exit(1)
	}
	if addr := os.Getenv("TOLLGATE_BENCH_PIN_CHILD"); addr != "" {
		for range 8 { // threads of its own, started after the launch
			go func() { runtime.LockOSThread(); select {} }()
		}
		http.HandleFunc("/health/liveliness", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, runtime.GOMAXPROCS(0))
		})
		_ = http.ListenAndServe(addr, nil)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func TestParseCPUList(t *testing.T) {
	tests := []struct {
		in   string
		want []int
		err  bool
	}{
		{in: "0", want: []int{0}},
		{in: "1", want: []int{1}},
		{in: "0-3", want: []int{0, 1, 2, 3}},
		{in: "0,2-3", want: []int{0, 2, 3}},
		{in: "3,1,1-2", want: []int{1, 2, 3}},
		{in: " 0 , 2 ", want: []int{0, 2}},
		{in: "", err: true},
		{in: "a", err: true},
		{in: "-1", err: true},
		{in: "3-1", err: true},
		{in: "0-", err: true},
		{in: "0,,1", err: true},
		{in: "1024", err: true},
	}
	for _, tt := range tests {
		got, err := ParseCPUList(tt.in)
		if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("ParseCPUList(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil {
			if back, _ := ParseCPUList(formatCPUList(got)); !slices.Equal(back, got) {
				t.Errorf("formatCPUList(%v) = %q reads back as %v", got, formatCPUList(got), back)
			}
		}
	}
	if got := formatCPUList([]int{0, 1, 2, 4, 6, 7}); got != "0-2,4,6-7" {
		t.Errorf("formatCPUList: %q", got)
	}
}

// TestLaunchPins: a process launched with CPUs runs, every one of its
// threads, on those CPUs only, with GOMAXPROCS their count.
func TestLaunchPins(t *testing.T) {
	var all []int
	for c := range runtime.NumCPU() {
		all = append(all, c)
	}
	if len(all) < 2 {
		t.Skip("one CPU: pinning to it cannot be told from not pinning")
	}
	if rest, err := splitCPUs(all, []int{0}); err != nil || !slices.Equal(rest, all[1:]) {
		t.Fatalf("splitCPUs(%v, [0]) = %v, %v", all, rest, err)
	}
	if _, err := splitCPUs(all, all); err == nil {
		t.Errorf("splitCPUs of every CPU: no error, though none is left for the generator")
	}
	if _, err := splitCPUs([]int{1}, []int{0}); err == nil {
		t.Errorf("splitCPUs([1], [0]): no error, though CPU 0 is not allowed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p, err := launchEnv(os.Args[0], t.TempDir(), "http://"+addr+"/health/liveliness",
		[]string{"TOLLGATE_BENCH_PIN_CHILD=" + addr}, placement{cpus: []int{0}}, "pinchild")
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	pid := p.cmd.Process.Pid
	if got, err := allowedCPUs(pid); err != nil || got != "0" {
		t.Errorf("the child's Cpus_allowed_list: %q, %v; want \"0\"", got, err)
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if len(tasks) < 8 {
		t.Errorf("the child has %d threads; the test means to pin more than 8", len(tasks))
	}
	for _, f := range tasks {
		if got, err := taskAllowedCPUs(f); err != nil || got != "0" {
			t.Errorf("%s: Cpus_allowed_list %q, %v; want \"0\"", f, got, err)
		}
	}
	resp, err := http.Get("http://" + addr + "/health/liveliness")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "1" {
		t.Errorf("the child's GOMAXPROCS: %q, want 1", b)
	}
}
