// Package harness runs the real tollgate binary for this module's tests: a
// mock upstream process and a gateway process configured in front of it.
// The tests here cannot import the gateway's packages (they are internal to
// another module), so they drive the binary, as an operator would.
package harness

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Binary returns $TOLLGATE_BIN (the main module's tests set it to the binary
// they built), or else builds the main module's cmd/tollgate into dir.
func Binary(dir string) (string, error) {
	if bin := os.Getenv("TOLLGATE_BIN"); bin != "" {
		return bin, nil
	}
	root, err := mainModule()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "tollgate")
	build := exec.Command("go", "build", "-o", bin, "./cmd/tollgate")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build: %v\n%s", err, out)
	}
	return bin, nil
}

// mainModule finds the main module's root: the first directory above the
// working directory that holds cmd/tollgate.
func mainModule() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "cmd", "tollgate", "main.go")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no cmd/tollgate above the working directory; set TOLLGATE_BIN")
		}
		dir = parent
	}
}

// Gateway is a running `tollgate serve` in front of a running
// `tollgate mock-upstream`.
type Gateway struct {
	URL      string // the gateway, http://127.0.0.1:port
	Upstream string // the mock upstream's base URL

	logs  logBuffer
	procs []*exec.Cmd
}

// Start runs the mock upstream, writes config(upstream URL) to
// dir/config.yaml, and runs the gateway on it in dir, waiting until both
// answer. On error it has stopped whatever it started.
func Start(bin, dir string, config func(upstream string) string) (*Gateway, error) {
	g := &Gateway{}
	err := g.start(bin, dir, config)
	if err != nil {
		g.Stop()
		if logs := g.Logs(); logs != "" {
			err = fmt.Errorf("%w\ngateway log:\n%s", err, logs)
		}
		return nil, err
	}
	return g, nil
}

func (g *Gateway) start(bin, dir string, config func(string) string) error {
	// Both processes listen on a port the kernel picks (port 0) and are
	// asked where by the address they log: a port picked here and freed
	// before the process binds it could be taken meanwhile by another test
	// package's server, and the tests would talk to that one.
	up := exec.Command(bin, "mock-upstream", "--addr", "127.0.0.1:0")
	var upLogs logBuffer
	up.Stderr = io.MultiWriter(os.Stderr, &upLogs)
	if err := g.run(up); err != nil {
		return err
	}
	upAddr, err := loggedAddr(&upLogs, "mock upstream listening")
	if err != nil {
		return err
	}
	g.Upstream = "http://" + upAddr
	if err := waitFor(g.Upstream + "/v1/models"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(config(g.Upstream)), 0o600); err != nil {
		return err
	}
	serve := exec.Command(bin, "serve", "--config", "config.yaml", "--port", "0", "--host", "127.0.0.1", "--log-format", "json")
	serve.Dir = dir
	serve.Stderr = &g.logs
	if err := g.run(serve); err != nil {
		return err
	}
	addr, err := loggedAddr(&g.logs, "tollgate listening")
	if err != nil {
		return err
	}
	g.URL = "http://" + addr
	return waitFor(g.URL + "/health/liveliness")
}

// loggedAddr waits (up to a minute: a busy machine) for the JSON log line
// whose msg is msg and returns its addr.
func loggedAddr(logs *logBuffer, msg string) (string, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		for _, line := range strings.Split(logs.String(), "\n") {
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == msg && l.Addr != "" {
				return l.Addr, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no %q log line with an address within a minute; log:\n%s", msg, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (g *Gateway) run(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	g.procs = append(g.procs, cmd)
	return nil
}

// Logs returns what the gateway has logged so far.
func (g *Gateway) Logs() string { return g.logs.String() }

// Stop kills the processes and waits for them to exit.
func (g *Gateway) Stop() {
	for _, p := range g.procs {
		_ = p.Process.Kill()
		_, _ = p.Process.Wait()
	}
	g.procs = nil
}

// waitFor polls url until it answers, for up to a minute (a busy machine).
func waitFor(url string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not come up: %w", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logBuffer is a buffer a process writes while a test reads it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
