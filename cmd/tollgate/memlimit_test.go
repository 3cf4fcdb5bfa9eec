package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeSoftMemoryLimit: tollgate serve sets the soft memory limit from
// general_settings.memory_limit, leaves GOMEMLIMIT's in force over it, and
// says which it took; a memory_limit that does not parse stops the start.
func TestServeSoftMemoryLimit(t *testing.T) {
	bin := buildBinary(t)
	tests := []struct {
		name       string
		gomemlimit string
		limit      string
		want       string
	}{
		{"from the config", "", "100MiB", `"bytes":104857600,"from":"general_settings.memory_limit"`},
		{"GOMEMLIMIT wins", "200MiB", "100MiB", `"bytes":209715200,"from":"GOMEMLIMIT"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "config.yaml")
			body := "model_list:\n  - model_name: demo\n    litellm_params: {model: demo/demo}\ngeneral_settings:\n  memory_limit: " + tt.limit + "\n"
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "serve", "--config", cfg, "--host", "127.0.0.1", "--port", fmt.Sprint(freePort(t)))
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GOMEMLIMIT="+tt.gomemlimit)
			stderr := &syncBuilder{}
			cmd.Stderr = stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(stderr.String(), `"keys loaded"`) && time.Now().Before(deadline) {
				sleepBriefly()
			}
			var line string
			for l := range strings.Lines(stderr.String()) {
				if strings.Contains(l, `"soft memory limit"`) {
					line = l
				}
			}
			if !strings.Contains(line, tt.want) {
				t.Errorf("log line %q; want it to hold %s\n%s", line, tt.want, stderr.String())
			}
		})
	}

	t.Run("a bad value stops the start", func(t *testing.T) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(cfg, []byte("general_settings:\n  memory_limit: 100MB\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "serve", "--config", cfg, "--host", "127.0.0.1", "--port", fmt.Sprint(freePort(t)))
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), `general_settings.memory_limit: memory limit "100MB"`) {
			t.Errorf("serve with memory_limit 100MB: %v\n%s", err, out)
		}
	})
}

// TestServeCollectorHeadroom: tollgate serve runs the collector's headroom
// rule (and says so) only when the operator set none of GOGC, GOMEMLIMIT
// and general_settings.memory_limit.
func TestServeCollectorHeadroom(t *testing.T) {
	bin := buildBinary(t)
	tests := []struct {
		name     string
		env      []string
		settings string
		want     bool
	}{
		{"nothing set", nil, "", true},
		{"GOGC set", []string{"GOGC=100"}, "", false},
		{"GOMEMLIMIT set", []string{"GOMEMLIMIT=1GiB"}, "", false},
		{"memory_limit configured", nil, "general_settings:\n  memory_limit: 1GiB\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "config.yaml")
			body := "model_list:\n  - model_name: demo\n    litellm_params: {model: demo/demo}\n" + tt.settings
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "serve", "--config", cfg, "--host", "127.0.0.1", "--port", fmt.Sprint(freePort(t)))
			cmd.Dir = dir
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMEMLIMIT=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			cmd.Env = append(cmd.Env, tt.env...)
			stderr := &syncBuilder{}
			cmd.Stderr = stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			deadline := time.Now().Add(time.Minute)
			for !strings.Contains(stderr.String(), `"keys loaded"`) && time.Now().Before(deadline) {
				sleepBriefly()
			}
			if !strings.Contains(stderr.String(), `"keys loaded"`) {
				t.Fatalf("no keys loaded within a minute\n%s", stderr.String())
			}
			got := strings.Contains(stderr.String(), `"collector headroom"`)
			if got != tt.want {
				t.Errorf("collector headroom logged: %v, want %v\n%s", got, tt.want, stderr.String())
			}
		})
	}
}
