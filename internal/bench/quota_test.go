package bench

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestLaunchUnderQuota: a process launched with a CPU quota runs, every
// one of its threads (eight started after the launch), in a cgroup of its
// own whose quota is the one asked, with GOMAXPROCS ceil(quota); the
// cgroup is gone once the process is stopped.
func TestLaunchUnderQuota(t *testing.T) {
	cg, err := findCPUCgroup("/sys/fs/cgroup")
	if err == nil {
		err = cg.probe(0.5)
	}
	if err != nil {
		t.Skipf("no writable cpu cgroup controller here (run as root on cgroup v1 or a delegated cgroup2): %v", err)
	}
	var pin []int
	if runtime.NumCPU() >= 2 {
		pin = []int{0, 1} // with --gateway-cpus too: GOMAXPROCS is still the quota's
	}
	p, addr := launchPinChild(t, placement{cpus: pin, quota: 0.5, cg: cg}, "quotachild")
	defer p.stop()
	pid := p.cmd.Process.Pid
	rel, err := filepath.Rel(strings.TrimSuffix(cg.dir, "/"), p.cgroup)
	if err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("the child's cgroup %s is not under the bench's %s", p.cgroup, cg.dir)
	}
	controller := "cpu"
	if cg.v2 {
		controller = ""
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/cgroup", pid))
	if len(tasks) < 8 {
		t.Errorf("the child has %d threads; the test means to move more than 8", len(tasks))
	}
	for _, f := range append([]string{fmt.Sprintf("/proc/%d/cgroup", pid)}, tasks...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := ownCgroup(string(b), controller); !ok || !strings.HasSuffix(got, "/"+filepath.Base(p.cgroup)) {
			t.Errorf("%s: cpu cgroup %q, want one ending in %s:\n%s", f, got, filepath.Base(p.cgroup), b)
		}
	}
	if cg.v2 {
		if b, _ := os.ReadFile(filepath.Join(p.cgroup, "cpu.max")); strings.TrimSpace(string(b)) != "50000 100000" {
			t.Errorf("cpu.max: %q, want 50000 100000", b)
		}
	} else {
		for file, want := range map[string]string{"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"} {
			if b, _ := os.ReadFile(filepath.Join(p.cgroup, file)); strings.TrimSpace(string(b)) != want {
				t.Errorf("%s: %q, want %s", file, b, want)
			}
		}
	}
	if err := threadsIn(p.cgroup, pid); err != nil {
		t.Error(err)
	}
	if got := childGOMAXPROCS(t, addr); got != "1" {
		t.Errorf("the child's GOMAXPROCS: %q, want 1 (ceil 0.5)", got)
	}
	p.stop()
	if p.cgErr != nil {
		t.Error(p.cgErr)
	}
	if _, err := os.Stat(p.cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after the child ended: %v; want it removed", p.cgroup, err)
	}
}

// TestQuotaRefusals: a quota the kernel would not take, or a place with
// no cpu controller, is refused, naming the path and the errno.
func TestQuotaRefusals(t *testing.T) {
	for _, f := range []float64{0, -1, 0.001, float64(runtime.NumCPU()) + 1} {
		if err := checkQuota(f); err == nil {
			t.Errorf("checkQuota(%v): no error", f)
		}
	}
	if err := checkQuota(0.3); err != nil {
		t.Errorf("checkQuota(0.3): %v", err)
	}
	dir := t.TempDir() // not a cgroup file system: taken for v1 without a cpu hierarchy
	_, err := findCPUCgroup(dir)
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "ENOENT") {
		t.Errorf("findCPUCgroup(%s): %v; want an error naming the path and ENOENT", dir, err)
	}
	if _, err := findCPUCgroup(filepath.Join(dir, "absent")); err == nil || !strings.Contains(err.Error(), "ENOENT") {
		t.Errorf("findCPUCgroup of an absent path: %v; want ENOENT named", err)
	}
	// A control file that is not there is not made: writing one is an error.
	if err := writeCgroupFile(dir, "cpu.max", "1 2"); err == nil || !strings.Contains(err.Error(), "ENOENT") {
		t.Errorf("writeCgroupFile to a missing control file: %v", err)
	}
	if quotaMicros(0.3, 0) != 30000 || quotaMicros(0.3, 10*time.Millisecond) != 3000 || quotaProcs(0.3, 0) != 1 || quotaProcs(1.5, 0) != 2 || quotaProcs(1.5, 1) != 1 {
		t.Errorf("quotaMicros(0.3) %d, quotaProcs(0.3) %d, (1.5) %d, (1.5, pinned to 1) %d",
			quotaMicros(0.3, 0), quotaProcs(0.3, 0), quotaProcs(1.5, 0), quotaProcs(1.5, 1))
	}
	pre := Preamble(time.Now(), Options{GatewayCPUQuota: 0.3, UpstreamLatency: time.Second, MaxInFlight: 200})
	for _, want := range []string{"CFS CPU quota of 0.3 CPU (30000 µs every 100000 µs", "answers after 1s", "max_requests_in_flight 200"} {
		if !strings.Contains(pre, want) {
			t.Errorf("preamble without %q: %s", want, pre)
		}
	}
}

// TestUpstreamLatency: the mock the bench starts with an upstream latency
// answers a request no sooner than that, and a stream's first chunk no
// sooner either.
func TestUpstreamLatency(t *testing.T) {
	t.Setenv("TOLLGATE_BENCH_MOCK_CHILD", "1") // the test binary plays tollgate mock-upstream (TestMain)
	const d = 300 * time.Millisecond
	up, url, err := startUpstream(Options{Bin: os.Args[0], UpstreamLatency: d}, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer up.stop()
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"model":"gpt-4","max_tokens":8,"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, stream)
		start := time.Now()
		resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		first, err := bufio.NewReader(resp.Body).ReadString('\n')
		took := time.Since(start)
		resp.Body.Close()
		if resp.StatusCode != 200 || first == "" {
			t.Fatalf("stream %v: HTTP %d, first line %q, %v", stream, resp.StatusCode, first, err)
		}
		if stream && !strings.HasPrefix(first, "data: ") {
			t.Errorf("stream: first line %q, want a chunk", first)
		}
		if took < d {
			t.Errorf("stream %v: the first bytes came after %v, before the upstream latency %v", stream, took, d)
		}
	}
}
