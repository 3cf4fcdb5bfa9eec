package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

func mustParse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("config.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return cfg
}

// TestBannerTellsTheTruth: the start banner, for each kind of config,
// shows a curl for a model the config serves and says whether a key is
// needed; it never calls a gateway open that is not, and never prints the
// master key.
func TestBannerTellsTheTruth(t *testing.T) {
	t.Parallel()
	const litellm = "model_list:\n  - model_name: gpt-4o\n    litellm_params: {model: openai/gpt-4o}\n  - model_name: claude\n    litellm_params: {model: anthropic/claude-3-5-sonnet}\n"
	const agw = "llm:\n  policies:\n    apiKey:\n      mode: %s\n      keys:\n      - key: sk-alice\n  models:\n  - name: llama3.2\n    provider: openAI\n    params: {hostOverride: \"localhost:11434\"}\n"
	const agwOpen = "llm:\n  models:\n  - name: llama3.2\n    provider: openAI\n"
	const binds = "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - ai:\n          provider:\n            openAI: {model: gpt-3.5-turbo}\n"
	tests := []struct {
		name   string
		cfg    *config.Config
		master string
		want   []string
		absent []string
	}{
		{"embedded default", config.Default(), "",
			[]string{"built-in `demo` model", "prices are fictional", `"model":"demo"`, "No key is needed", "TOLLGATE_MASTER_KEY=sk-1234", "/key/generate"},
			[]string{"Bearer $KEY", "needs a key"}},
		{"embedded default with a master key", config.Default(), "sk-master-secret",
			[]string{`"model":"demo"`, "Every request needs a key: the master key", "Bearer $KEY", "tollgate key generate"},
			[]string{"No key is needed", "sk-master-secret"}},
		{"LiteLLM with master_key", mustParse(t, litellm+"general_settings:\n  master_key: sk-master-secret\n"), "sk-master-secret",
			[]string{"Config: config.yaml (2 deployments)", `"model":"gpt-4o"`, "Every request needs a key", "Bearer $KEY", "--models gpt-4o"},
			[]string{"open", "demo", "sk-master-secret"}},
		{"LiteLLM without master_key", mustParse(t, litellm), "",
			[]string{`"model":"gpt-4o"`, "No key is needed", "restart with a master key", "TOLLGATE_MASTER_KEY=sk-1234 tollgate serve -f config.yaml"},
			[]string{"Bearer $KEY", "demo"}},
		{"agentgateway apiKey strict", mustParse(t, fmt.Sprintf(agw, "strict")), "",
			[]string{`"model":"llama3.2"`, "Every request needs a key: one of the config's apiKey policy keys (mode: strict)", "Bearer $KEY"},
			[]string{"open", "No key is needed", "optional", "sk-alice"}},
		{"agentgateway apiKey optional", mustParse(t, fmt.Sprintf(agw, "optional")), "",
			[]string{`"model":"llama3.2"`, "A key is optional"},
			[]string{"Bearer $KEY", "No key is needed", "needs a key"}},
		{"agentgateway without apiKey", mustParse(t, agwOpen), "",
			[]string{`"model":"llama3.2"`, "No key is needed"},
			[]string{"Bearer $KEY", "needs a key"}},
		{"agentgateway binds, a fixed model behind a wildcard route", mustParse(t, binds), "",
			[]string{`"model":"gpt-3.5-turbo"`},
			[]string{`"model":"*"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := banner(tt.cfg, tt.master, "127.0.0.1:4000", "v-test")
			if !strings.Contains(got, "curl http://127.0.0.1:4000/v1/chat/completions") {
				t.Errorf("no curl for the address:\n%s", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("banner lacks %q:\n%s", w, got)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(got, a) {
					t.Errorf("banner says %q:\n%s", a, got)
				}
			}
		})
	}
}

// TestBannerCurlReachesAnUnspecifiedHost: a gateway on 0.0.0.0 or [::]
// is shown as localhost, which a curl on this machine reaches.
func TestBannerCurlReachesAnUnspecifiedHost(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:4000", "[::]:4000"} {
		if got := banner(config.Default(), "", addr, "v"); !strings.Contains(got, "curl http://localhost:4000/v1/chat/completions") {
			t.Errorf("%s: %s", addr, got)
		}
	}
}

// TestListenPort: --port wins; else the config's port; else 4000.
func TestListenPort(t *testing.T) {
	t.Parallel()
	agw := mustParse(t, "llm:\n  port: 3000\n  models:\n  - name: m\n    provider: openAI\n")
	tests := []struct {
		name    string
		cfg     *config.Config
		flag    int
		flagSet bool
		want    int
	}{
		{"llm.port", agw, defaultPort, false, 3000},
		{"--port wins", agw, 5000, true, 5000},
		{"--port 4000 given wins too", agw, 4000, true, 4000},
		{"no port in the config", config.Default(), defaultPort, false, 4000},
	}
	for _, tt := range tests {
		if got := listenPort(tt.cfg, tt.flag, tt.flagSet); got != tt.want {
			t.Errorf("%s: port %d, want %d", tt.name, got, tt.want)
		}
	}
}

// curlOf reads the banner's curl: its URL and its model.
var curlOf = regexp.MustCompile(`curl (http://\S+/v1/chat/completions)(.*)\n\s+-d '(\{.*\})'`)

// TestAgentgatewayConfigRunsAsWritten runs the binary as agentgateway's
// docs run agentgateway (`-f config.yaml`, no --port) on a config with
// llm.port, a strict apiKey policy and a hostOverride of host:port (plain
// HTTP); the curl the banner prints, with the policy's key, is answered.
func TestAgentgatewayConfigRunsAsWritten(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	t.Cleanup(up.Close)
	port := freePort(t)
	cfg := filepath.Join(dir, "config.yaml")
	yaml := fmt.Sprintf(`llm:
  port: %d
  policies:
    apiKey:
      mode: strict
      keys:
      - key: sk-alice-abc123def456
  models:
  - name: llama3.2
    provider: openAI
    params:
      hostOverride: %q
`, port, strings.TrimPrefix(up.URL, "http://"))
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-f", cfg}, {"serve", "-f", cfg}} {
		t.Run(strings.Join(args[:len(args)-1], " "), func(t *testing.T) {
			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			cmd, stderr := start(t, dir, base+"/health/liveliness", bin, args...)
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			var m []string
			for deadline := time.Now().Add(30 * time.Second); m == nil; {
				m = curlOf.FindStringSubmatch(stderr.String())
				if m == nil && time.Now().After(deadline) {
					t.Fatalf("no curl in the banner:\n%s", stderr)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !strings.Contains(m[1], fmt.Sprint(port)) || !strings.Contains(m[2], "Bearer $KEY") {
				t.Fatalf("banner curl %q %q: want llm.port %d and a key", m[1], m[2], port)
			}
			if strings.Contains(stderr.String(), "No key is needed") {
				t.Errorf("banner calls a strict gateway open:\n%s", stderr)
			}
			for _, key := range []string{"", "sk-alice-abc123def456"} {
				req, _ := http.NewRequest("POST", m[1], strings.NewReader(m[3]))
				req.Header.Set("Content-Type", "application/json")
				if key != "" {
					req.Header.Set("Authorization", "Bearer "+key)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := 200
				if key == "" {
					want = 401
				}
				if resp.StatusCode != want {
					t.Errorf("key %q: %d %s, want %d", key, resp.StatusCode, body, want)
				}
			}
		})
	}
}
