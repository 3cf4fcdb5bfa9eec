package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/tollgate/tollgate/internal/config"
)

// composeFile is the part of deploy/compose.yaml the test reads.
type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		Build       struct {
			Context string `yaml:"context"`
		} `yaml:"build"`
	} `yaml:"services"`
}

// TestComposeStack reads deploy/compose.yaml: the services DEPLOY.md
// promises are there, every file it mounts exists, the gateway's config
// loads, the Grafana provisioning names the dashboard that exists, and
// (with the test PostgreSQL and Redis) two replicas started the way
// compose starts them, from that config and environment, become ready.
// deploy/deploytest parses prometheus.yml with Prometheus's own library.
func TestComposeStack(t *testing.T) {
	const dir = "../../deploy"
	data, err := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for _, name := range []string{"postgres", "redis", "tollgate-1", "tollgate-2", "prometheus", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("compose.yaml has no service %q", name)
		}
	}
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") {
				continue // a named volume
			}
			if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
				t.Errorf("service %s mounts %s, which does not exist: %v", name, src, err)
			}
		}
		if s.Build.Context != "" {
			if _, err := os.Stat(filepath.Join(dir, s.Build.Context, "Dockerfile")); err != nil {
				t.Errorf("service %s builds %s, which has no Dockerfile", name, s.Build.Context)
			}
		}
	}
	gw := c.Services["tollgate-1"]
	if gw.Environment["DATABASE_URL"] == "" || gw.Environment["REDIS_URL"] == "" || !strings.Contains(strings.Join(gw.Volumes, " "), "./config.yaml:/etc/tollgate/config.yaml") {
		t.Fatalf("tollgate-1 lacks DATABASE_URL, REDIS_URL or the config mount: %+v", gw)
	}
	if got, want := strings.Join(c.Services["tollgate-2"].Command, " "), strings.Join(gw.Command, " "); got != want {
		t.Errorf("the replicas differ: %q and %q", got, want)
	}

	// Grafana: the dashboard provider's path is where compose mounts the
	// dashboard, and the datasource is Prometheus on the compose network.
	prov, err := os.ReadFile(filepath.Join(dir, "grafana/provisioning/dashboards/tollgate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Providers []struct {
			Options struct{ Path string } `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(prov, &p); err != nil || len(p.Providers) != 1 {
		t.Fatalf("dashboard provisioning: %v %+v", err, p)
	}
	mounted := false
	for _, v := range c.Services["grafana"].Volumes {
		if strings.HasPrefix(v, "./grafana/tollgate-dashboard.json:"+p.Providers[0].Options.Path+"/") {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("grafana does not mount the dashboard under the provider's path %q: %v", p.Providers[0].Options.Path, c.Services["grafana"].Volumes)
	}
	var dash struct{ UID string }
	if b, err := os.ReadFile(filepath.Join(dir, "grafana/tollgate-dashboard.json")); err != nil || json.Unmarshal(b, &dash) != nil || dash.UID == "" {
		t.Errorf("the dashboard does not parse or has no uid: %v", err)
	}
	ds, err := os.ReadFile(filepath.Join(dir, "grafana/provisioning/datasources/prometheus.yaml"))
	if err != nil || !strings.Contains(string(ds), "url: http://prometheus:9090") {
		t.Errorf("datasource provisioning does not point at the prometheus service: %v\n%s", err, ds)
	}

	// The gateway's config, with the environment compose gives it.
	t.Setenv("TOLLGATE_MASTER_KEY", "sk-compose-test")
	t.Setenv("OPENAI_API_KEY", "sk-openai-test")
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-test")
	cfgPath, _ := filepath.Abs(filepath.Join(dir, "config.yaml"))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("deploy/config.yaml: %v", err)
	}
	if cfg.MasterKey() != "sk-compose-test" || len(cfg.ModelList) != 2 {
		t.Fatalf("deploy/config.yaml: master key %q, %d models, want 2", cfg.MasterKey(), len(cfg.ModelList))
	}

	pg, rd := os.Getenv("TOLLGATE_TEST_POSTGRES_URL"), os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if pg == "" || rd == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL and TOLLGATE_TEST_REDIS_URL unset: the replicas were not started")
	}
	bin := buildBinary(t)
	work := t.TempDir()
	for i := range 2 {
		port := freePort(t)
		url := fmt.Sprintf("http://127.0.0.1:%d", port)
		cmd := exec.Command(bin, "serve", "--config", cfgPath, "--port", fmt.Sprint(port))
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "DATABASE_URL="+pg, "REDIS_URL="+rd)
		stderr := &syncBuilder{}
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		if !pollReady(url + "/health/readiness") {
			t.Fatalf("replica %d did not become ready:\n%s", i+1, stderr.String())
		}
		// The master key from the environment is in force.
		req, _ := http.NewRequest("GET", url+"/key/list", nil)
		req.Header.Set("Authorization", "Bearer sk-compose-test")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("replica %d: /key/list with the master key: %d %s", i+1, resp.StatusCode, body)
		}
	}
}

// pollReady waits up to 30 s for url to answer 200.
func pollReady(url string) bool {
	for range 600 {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return true
			}
		}
		sleepBriefly()
	}
	return false
}

func sleepBriefly() { time.Sleep(50 * time.Millisecond) }
