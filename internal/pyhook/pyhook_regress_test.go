package pyhook

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// regressPool starts a pool of two workers over a module hooks.py holding src.
func regressPool(t *testing.T, src string, timeout time.Duration) *Pool {
	t.Helper()
	return regressPoolWith(t, t.TempDir(), src, Options{Workers: 2, Timeout: timeout})
}

// regressPoolWith starts a pool with opts over a module dir/hooks.py
// holding src, calling hooks.auth as general_settings.custom_auth.
func regressPoolWith(t *testing.T, dir, src string, opts Options) *Pool {
	t.Helper()
	needPython(t)
	if err := os.WriteFile(filepath.Join(dir, "hooks.py"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	opts.Dir, opts.Funcs, opts.Setting = dir, []string{"hooks.auth"}, "general_settings.custom_auth"
	p, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// callAuth makes one auth call on p.
func callAuth(p *Pool) error {
	_, err := p.Call(context.Background(), "hooks.auth", "auth", map[string]any{"api_key": "sk-x", "request": map[string]any{}})
	return err
}

// TestPoolCloseAfterIdleWorkerDiedAndWasReplaced: a worker that dies while idle (the
// OOM killer, an operator's kill) is still in the idle channel, which is
// full (capacity Workers). Its replacement is spawned and then blocks on
// `p.idle <- nw` (pyhook.go, exited's goroutine), a send that does not
// watch p.stop. With no traffic to drain the dead entry, Close — and so the
// server's graceful shutdown — waits on p.wg forever.
//
// Regression test for #32: the comment above describes the defect as it was
// before the fix.
func TestPoolCloseAfterIdleWorkerDiedAndWasReplaced(t *testing.T) {
	p := regressPool(t, "async def auth(request, api_key):\n    return {}\n", 2*time.Second)
	before := p.Workers()
	if len(before) != 2 {
		t.Fatalf("workers: %v", before)
	}
	if err := syscall.Kill(before[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Wait for the replacement to be up (ready, in the live set).
	deadline := time.Now().Add(30 * time.Second)
	for {
		now := p.Workers()
		if len(now) == 2 && !slices.Contains(now, before[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replacement worker: %v (was %v)", now, before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatalf("Close did not return within 30s after an idle worker died and was replaced")
	}
}

// TestPoolQueueWaitDoesNotKillHealthyWorkers: a call's deadline starts when it
// is made, not when it gets a worker (Call: deadline := time.Now().Add
// before waiting on p.idle). Under a burst a call that got its worker late
// in its window runs into that deadline although the hook answers in
// 400 ms of a 1.5 s timeout, and Call then kills the healthy worker as
// "did not answer within" — a hang's treatment — which also counts towards
// the young-death restart backoff. Queued calls should get "no free python
// worker" and a worker should only be killed for a call that ran too long.
//
// Regression test for #32: the comment above describes the defect as it was
// before the fix.
func TestPoolQueueWaitDoesNotKillHealthyWorkers(t *testing.T) {
	p := regressPool(t, "import time\nasync def auth(request, api_key):\n    time.sleep(0.4)\n    return {}\n", 1500*time.Millisecond)
	defer p.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var killed []string
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := callAuth(p)
			if err != nil && strings.Contains(err.Error(), "did not answer within") {
				mu.Lock()
				killed = append(killed, err.Error())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(killed) > 0 {
		t.Fatalf("%d healthy workers (a 0.4 s hook, a 1.5 s timeout) were killed as hung: %s", len(killed), killed[0])
	}
}

// TestPoolReplacesWorkerWhoseHookChildHangs: a hook that shells out
// (subprocess.run of a command that hangs) runs into the deadline; Call
// kills the worker's own pid only (p.kill: cmd.Process.Kill), so the
// command lives on as an orphan holding the worker's stderr pipe. The
// stdout goroutine then waits in logs.Wait() for that pipe's EOF before
// cmd.Wait/close(w.done)/p.exited, so the dead worker is never noticed nor
// replaced: each such timeout shrinks the pool for good (two of them and
// every call is a 503), and Close waits on p.wg until the orphan exits.
//
// Regression test for #32: the comment above describes the defect as it was
// before the fix.
func TestPoolReplacesWorkerWhoseHookChildHangs(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	p := regressPool(t, `import subprocess
async def auth(request, api_key):
    proc = subprocess.Popen(["sleep", "120"])
    with open(`+"\""+pidFile+"\""+`, "w") as f:
        f.write(str(proc.pid))
    proc.wait()
    return {}
`, time.Second)
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		p.Close()
	})
	before := p.Workers()
	err := callAuth(p)
	if err == nil || !strings.Contains(err.Error(), "did not answer within") {
		t.Fatalf("want a timeout, got %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		now := p.Workers()
		fresh := 0
		for _, pid := range now {
			if !slices.Contains(before, pid) {
				fresh++
			}
		}
		if fresh > 0 {
			return // replaced
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker killed at the deadline was not replaced within 20s (workers %v, before %v): its orphaned child holds its stderr", now, before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPoolBoundsWaitingCallers: past MaxWaiting callers waiting for a free
// worker a call fails at once with ErrUnavailable, and the calls already
// running and waiting are unaffected (#32).
func TestPoolBoundsWaitingCallers(t *testing.T) {
	needPython(t)
	dir := t.TempDir()
	flag := filepath.Join(dir, "go")
	src := `import os, time, uuid
async def auth(request, api_key):
    open(os.path.join(` + "\"" + dir + "\"" + `, "running-" + uuid.uuid4().hex), "w").close()
    while not os.path.exists(` + "\"" + flag + "\"" + `):
        time.sleep(0.01)
    return {}
`
	p := regressPoolWith(t, dir, src, Options{Workers: 2, Timeout: 60 * time.Second, QueueTimeout: 60 * time.Second, MaxWaiting: 1})
	defer p.Close()
	call := func() error { return callAuth(p) }
	errs := make(chan error, 3)
	for range 2 {
		go func() { errs <- call() }()
	}
	running := func() int {
		m, _ := filepath.Glob(filepath.Join(dir, "running-*"))
		return len(m)
	}
	deadline := time.Now().Add(30 * time.Second)
	for running() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the two workers did not start their calls: %d running", running())
		}
		time.Sleep(10 * time.Millisecond)
	}
	go func() { errs <- call() }()
	for p.wait.Load() < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the third call is not waiting")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := call(); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "already wait") {
		t.Fatalf("a fourth call past MaxWaiting=1: %v", err)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Errorf("a call within the bounds: %v", err)
		}
	}
}

// TestPoolNonFiniteAnswers: an answer holding inf comes back with null in
// its place (LiteLLM's "no limit"); one holding NaN is an error the hook
// "raised", answered at once, and the worker stays (#32).
func TestPoolNonFiniteAnswers(t *testing.T) {
	p := regressPool(t, `async def auth(request, api_key):
    return {"max_budget": float(api_key)}
`, 30*time.Second)
	defer p.Close()
	before := p.Workers()
	res, err := p.Call(context.Background(), "hooks.auth", "auth", map[string]any{"api_key": "inf", "request": map[string]any{}})
	if err != nil || string(res.Value) != `{"max_budget": null}` {
		t.Fatalf("inf: %s %v", res.Value, err)
	}
	_, err = p.Call(context.Background(), "hooks.auth", "auth", map[string]any{"api_key": "nan", "request": map[string]any{}})
	var raised *Raised
	if !errors.As(err, &raised) || !strings.Contains(raised.Message, "not a number") {
		t.Fatalf("nan: %v", err)
	}
	if now := p.Workers(); !slices.Equal(slices.Sorted(slices.Values(now)), slices.Sorted(slices.Values(before))) {
		t.Fatalf("workers changed: %v, were %v", now, before)
	}
}

// TestPoolDrainsLongStderrLines: a stderr line over maxLogLine is logged
// truncated and the copier reads on (#32: it used to stop at 1 MiB and
// leave the worker blocked in print()).
func TestPoolDrainsLongStderrLines(t *testing.T) {
	var buf strings.Builder
	p := &Pool{opts: Options{Setting: "s", Log: slog.New(slog.NewJSONHandler(&buf, nil))}}
	in := strings.Repeat("x", 3<<20) + "\nafter\n"
	p.drain(strings.NewReader(in), 1)
	var lines []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 || len(lines[0]["line"].(string)) != maxLogLine || lines[0]["truncated"] != true ||
		lines[1]["line"] != "after" || lines[1]["truncated"] != false {
		t.Fatalf("records: %d, first %d bytes truncated=%v, second %v", len(lines), len(lines[0]["line"].(string)), lines[0]["truncated"], lines[1])
	}
}

// TestPoolIdleWorkerNotCountedAsWaiting: a caller that finds a worker idle
// takes it without counting against MaxWaiting. Before, every caller
// counted as waiting until it had a worker, so callers arriving together
// at idle workers were refused as too many waiting (seen as CI's flaky
// TestPoolBoundsWaitingCallers: "1 running" of two).
func TestPoolIdleWorkerNotCountedAsWaiting(t *testing.T) {
	p := regressPoolWith(t, t.TempDir(), "async def auth(request, api_key):\n    return {}\n",
		Options{Workers: 1, Timeout: 60 * time.Second, QueueTimeout: 60 * time.Second, MaxWaiting: 1})
	defer p.Close()
	call := func() error { return callAuth(p) }
	if err := call(); err != nil { // the worker is up and idle again after it
		t.Fatal(err)
	}
	// One caller is counted as waiting (as if it had just arrived at a busy
	// pool): a caller finding the worker idle is not a second one.
	p.wait.Add(1)
	defer p.wait.Add(-1)
	for deadline := time.Now().Add(30 * time.Second); len(p.idle) != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the worker never came back idle")
		}
	}
	if err := call(); err != nil {
		t.Fatalf("a call finding the worker idle was refused: %v", err)
	}
}
