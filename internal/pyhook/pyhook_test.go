package pyhook

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func needPython(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed (.ci/run installs it)")
	}
}

func start(t *testing.T, dir string, timeout time.Duration, funcs ...string) *Pool {
	t.Helper()
	needPython(t)
	abs, _ := filepath.Abs(dir)
	p, err := Start(Options{Dir: abs, Funcs: funcs, Workers: 2, Timeout: timeout, Setting: "general_settings.custom_auth"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkGone(t, p) })
	return p
}

// checkGone closes p and checks no worker process is left.
func checkGone(t *testing.T, p *Pool) {
	t.Helper()
	pids := p.Workers()
	p.Close()
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("python worker %d still runs after Close", pid)
		}
	}
}

func authCall(p *Pool, fn, key string) (Result, error) {
	return p.Call(context.Background(), fn, "auth", map[string]any{"api_key": key,
		"request": map[string]any{"method": "POST", "url": "http://gw/v1/chat/completions", "path": "/v1/chat/completions",
			"headers": map[string]string{"X-Who": "ann"}, "body": `{"model":"openai-model"}`}})
}

// TestSeedAuth runs seed 000's custom_auth.py as written.
func TestSeedAuth(t *testing.T) {
	p := start(t, "testdata/seed", 10*time.Second, "custom_auth.user_api_key_auth", "custom_auth.custom_generate_key_fn")
	r, err := authCall(p, "custom_auth.user_api_key_auth", "sk-my-master-key")
	if err != nil {
		t.Fatal(err)
	}
	var u map[string]any
	if err := json.Unmarshal(r.Value, &u); err != nil || u["api_key"] != "sk-my-master-key" || r.Type != "UserAPIKeyAuth" {
		t.Fatalf("%s %s %v", r.Type, r.Value, err)
	}
	_, err = authCall(p, "custom_auth.user_api_key_auth", "sk-other")
	var raised *Raised
	if !errors.As(err, &raised) || raised.Type != "Exception" {
		t.Fatalf("another key: %v", err)
	}
	for team, want := range map[string]bool{"litellm-core-infra@gmail.com": true, "other": false} {
		r, err := p.Call(context.Background(), "custom_auth.custom_generate_key_fn", "key_generate", map[string]any{"data": map[string]any{"team_id": team}})
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Decision bool
			Message  string
		}
		if err := json.Unmarshal(r.Value, &d); err != nil || d.Decision != want || (!want && !strings.Contains(d.Message, "No team id provided")) {
			t.Fatalf("team %s: %s", team, r.Value)
		}
	}
}

// TestMisbehavingHooks: a raise is a Raised, a hang is ErrUnavailable at
// the deadline and the worker is replaced, a crash likewise, and prints to
// stdout do not corrupt the protocol.
func TestMisbehavingHooks(t *testing.T) {
	p := start(t, "testdata/bad", time.Second, "hooks.raises", "hooks.hangs", "hooks.crashes", "hooks.chatty")
	var raised *Raised
	if _, err := authCall(p, "hooks.raises", "k"); !errors.As(err, &raised) || raised.Message != "no entry for /v1/chat/completions" {
		t.Fatalf("raises: %v", err)
	}
	r, err := authCall(p, "hooks.chatty", "sk-chatty")
	if err != nil || !strings.Contains(string(r.Value), `"user_id": "u-ann"`) && !strings.Contains(string(r.Value), `"user_id":"u-ann"`) {
		t.Fatalf("chatty: %s %v", r.Value, err)
	}
	for _, fn := range []string{"hooks.hangs", "hooks.crashes"} {
		before := p.Workers()
		if _, err := authCall(p, fn, "k"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%s: %v", fn, err)
		}
		// The worker is replaced: a new pid appears, and calls succeed.
		deadline := time.Now().Add(30 * time.Second)
		for {
			now := p.Workers()
			fresh := slices.ContainsFunc(now, func(pid int) bool { return !slices.Contains(before, pid) })
			if fresh && len(now) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: worker not replaced: before %v now %v", fn, before, now)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for range 4 {
			if _, err := authCall(p, fn, "sk-fast"); err != nil {
				t.Fatalf("%s after the replacement: %v", fn, err)
			}
		}
	}
}

func TestStartErrors(t *testing.T) {
	needPython(t)
	_, err := Start(Options{Dir: "testdata/bad", Funcs: []string{"missing.user_api_key_auth"}, Setting: "general_settings.custom_auth"})
	if err == nil || !strings.Contains(err.Error(), "Traceback") || !strings.Contains(err.Error(), "ModuleNotFoundError: No module named 'tollgate_no_such_module'") {
		t.Fatalf("missing module: %v", err)
	}
	_, err = Start(Options{Python: "/nonexistent/python3", Dir: "testdata/seed", Funcs: []string{"custom_auth.user_api_key_auth"}, Setting: "general_settings.custom_auth"})
	if err == nil || !strings.Contains(err.Error(), "general_settings.custom_auth") || !strings.Contains(err.Error(), "cel expression or a webhook") {
		t.Fatalf("no python: %v", err)
	}
	_, err = Start(Options{Dir: "testdata/seed", Funcs: []string{"custom_auth.no_such_fn"}, Setting: "general_settings.custom_auth"})
	if err == nil || !strings.Contains(err.Error(), "no function no_such_fn") {
		t.Fatalf("missing function: %v", err)
	}
}

// TestCallerGoneKeepsWorker: a caller that gives up before the hook's
// deadline (a client that hung up) does not cost a worker: it answers
// later and serves the next call.
func TestCallerGoneKeepsWorker(t *testing.T) {
	needPython(t)
	p, err := Start(Options{Dir: "testdata/bad", Funcs: []string{"hooks.slow"}, Workers: 1, Timeout: 20 * time.Second, Setting: "general_settings.custom_auth"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkGone(t, p) })
	pids := p.Workers()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.Call(ctx, "hooks.slow", "auth", map[string]any{"api_key": "k"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("gave up: %v", err)
	}
	if _, err := p.Call(context.Background(), "hooks.slow", "auth", map[string]any{"api_key": "k"}); err != nil {
		t.Fatal(err)
	}
	if now := p.Workers(); !slices.Equal(now, pids) {
		t.Fatalf("worker replaced: %v then %v", pids, now)
	}
}
