package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// buildBinary compiles tollgate once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tollgate-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "tollgate")
		// The Dockerfile's flags (TestDockerfile builds with them too), so
		// the two builds share the build cache's compiled packages.
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// waitBound is the -parallel this package's tests run with when the flag
// is not given. The tests marked t.Parallel spend their time waiting on a
// child process (the binary's start, a stream, a signal's exit, the SDK
// module's run), each with its own port (freePort), temp dir, SQLite file
// or PostgreSQL migration of its own, and no t.Setenv; Go's default of
// GOMAXPROCS (2 on the CI machine) would run these waits two at a time.
// The bench's smoke run is parallel too (its figures have no meaning and
// fail nothing). Tests that measure memory or CPU (soak, memlimit), crash a replica
// against a time window (crash window, replicas, Redis) or set the
// environment stay serial: Go runs every serial top-level test before any
// parallel one starts.
const waitBound = 8

func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set && runtime.GOMAXPROCS(0) < waitBound {
		_ = flag.Set("test.parallel", strconv.Itoa(waitBound))
	}
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	if imageBin != "" { // dockerfile_test.go's build context
		os.RemoveAll(filepath.Dir(filepath.Dir(imageBin)))
	}
	os.Exit(code)
}

func freePort(t *testing.T) int {
	t.Helper()
	// A port below Linux's ephemeral range (32768-60999 by default), picked
	// at random and checked free: a port the kernel hands out for ":0" (every
	// httptest server and client connection of the other test packages
	// running meanwhile) could be taken between this check and the child
	// process's bind; one from outside that range is only taken by another
	// caller of this function picking the same number.
	for range 200 {
		port := 20000 + mathrand.IntN(12000)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		ln.Close()
		return port
	}
	t.Fatal("no free port between 20000 and 32000")
	return 0
}

// syncBuilder is a strings.Builder safe to read while the process writes.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the binary and waits until url answers.
func start(t *testing.T, dir, url string, name string, args ...string) (*exec.Cmd, *syncBuilder) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	stderr := &syncBuilder{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	// A bound for a start that never comes, not a figure to meet: the
	// parallel tests start their binaries side by side.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return cmd, stderr
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up: %v\n%s", name, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestServeZeroConfigDemoAndGracefulExit(t *testing.T) {
	t.Parallel() // its own binary process, port, temp dir and store (see TestMain)
	bin := buildBinary(t)
	dir := t.TempDir()
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd, stderr := start(t, dir, base+"/health/liveliness", bin, "serve", "--port", fmt.Sprint(port))

	resp, err := http.Post(base+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"demo","messages":[{"role":"user","content":"Hello!"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Hello! You said: Hello!") {
		t.Fatalf("demo answered %d %s", resp.StatusCode, body)
	}

	// A stream in flight when SIGTERM arrives runs to its end.
	req, _ := http.NewRequestWithContext(context.Background(), "POST", base+"/v1/chat/completions",
		strings.NewReader(`{"model":"demo","stream":true,"messages":[{"role":"user","content":"one two three"}]}`))
	req.Header.Set("x-mock-chunk-delay-ms", "50") // not forwarded: client headers stay here
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(bufio.NewReader(stream.Body))
	stream.Body.Close()
	if !strings.Contains(string(rest), "data: [DONE]") {
		t.Errorf("stream cut by SIGTERM: %s", rest)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr)
		}
	case <-time.After(time.Minute):
		t.Fatal("serve did not exit after SIGTERM")
	}
	if _, err := os.Stat(filepath.Join(dir, "tollgate.db")); err != nil {
		t.Errorf("zero-config serve did not keep its state in ./tollgate.db: %v", err)
	}
	for _, want := range []string{"built-in `demo` model", "/v1/chat/completions", "TOLLGATE_MASTER_KEY", "/key/generate"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("first-run hint lacks %q:\n%s", want, stderr)
		}
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	t.Parallel() // its own binary process, port, temp dir and store (see TestMain)
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte("model_list:\n  - model_name: a\n    litellm_params:\n      modle: openai/a\n"), 0o600)
	out, err := exec.Command(bin, "serve", "--config", cfg, "--port", fmt.Sprint(freePort(t))).CombinedOutput()
	if err == nil {
		t.Fatal("serve accepted a bad config")
	}
	if !strings.Contains(string(out), "config.yaml:4:7: unknown field \"modle\"") {
		t.Errorf("error does not name file, line and column:\n%s", out)
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel() // its own binary process, port, temp dir and store (see TestMain)
	bin := buildBinary(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "migrate")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "migrated sqlite3 store") {
		t.Fatalf("migrate: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "tollgate.db")); err != nil {
		t.Fatal(err)
	}
	if pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL"); pg != "" {
		cmd := exec.Command(bin, "migrate")
		cmd.Env = append(os.Environ(), "DATABASE_URL="+pg)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "migrated postgres store") {
			t.Fatalf("migrate on postgres: %v %s", err, out)
		}
	}
}

func TestVersionAndMockUpstream(t *testing.T) {
	t.Parallel() // its own binary process, port, temp dir and store (see TestMain)
	bin := buildBinary(t)
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "tollgate ") {
		t.Fatalf("version: %q %v", out, err)
	}
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd, _ := start(t, t.TempDir(), base+"/v1/models", bin, "mock-upstream", "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--fail-status", "503")
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("--fail-status ignored: %d", resp.StatusCode)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("mock-upstream exit: %v", err)
	}
}
