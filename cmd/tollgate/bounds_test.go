package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// vmHWM is a process's peak resident set in MiB, from /proc.
func vmHWM(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	t.Skip("no VmHWM in /proc/PID/status")
	return 0
}

// TestHugeAnswersStayOutOfMemory: an upstream answering 300 MB (declared or
// chunked) or one 50 MB stream event, generated on the fly, leaves the
// gateway process's peak RSS under 100 MB with the default limits; the
// whole answers are 502s, the stream ends with an error event. Three rounds
// run in one gateway: the peak is the process's, across nine huge answers.
func TestHugeAnswersStayOutOfMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	upPort, port := freePort(t), freePort(t)
	up := fmt.Sprintf("http://127.0.0.1:%d", upPort)
	start(t, dir, up+"/v1/models", bin, "mock-upstream", "--addr", fmt.Sprintf("127.0.0.1:%d", upPort))
	var cfg strings.Builder
	cfg.WriteString("model_list:\n")
	for _, m := range []struct{ name, shape, bytes string }{
		{"length", "length", "314572800"}, {"chunked", "chunked", "314572800"}, {"event", "event", "52428800"},
	} {
		fmt.Fprintf(&cfg, "  - model_name: %s\n    litellm_params: {model: openai/m, api_base: %q, headers: {x-mock-flood: %s, x-mock-flood-bytes: %q}}\n", m.name, up, m.shape, m.bytes)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	gw, stderr := start(t, dir, base+"/health/liveliness", bin, "serve", "--config", "config.yaml", "--port", fmt.Sprint(port))
	before := vmHWM(t, gw.Process.Pid)

	tests := []struct {
		model  string
		stream bool
		status int
		want   string
	}{
		{"length", false, 502, "max_response_size_mb"},
		{"chunked", false, 502, "max_response_size_mb"},
		{"event", true, 200, `"code":"upstream_event_too_large"`},
	}
	// Three rounds in one process: a refused answer's garbage must not let
	// the next one push the peak higher (readLimited collects it).
	for round := range 3 {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/%d", tt.model, round+1), func(t *testing.T) {
				resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(
					fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, tt.model, tt.stream)))
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.want) {
					t.Fatalf("%d %.300s\n%s", resp.StatusCode, body, stderr)
				}
				if peak := vmHWM(t, gw.Process.Pid); peak > 100 {
					t.Errorf("peak RSS %.0f MB after a %s answer (%.0f MB at start), want under 100 MB", peak, tt.model, before)
				} else {
					t.Logf("peak RSS %.0f MB (%.0f MB at start)", peak, before)
				}
			})
		}
	}
}
