// Package sdktest runs the official OpenAI and Anthropic clients (Go, and the
// npm openai package on Node) against a real Tollgate process in front of a
// real mock-upstream process. It is its own module so that the SDKs never
// enter the gateway's go.mod. The main module's tests run it
// (cmd/tollgate TestOfficialSDKs); `cd sdktest && go test ./...` runs it alone.
package sdktest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// gw is the gateway the tests share.
var gw struct {
	url    string // http://127.0.0.1:port
	master string
	keys   map[string]string // scenario -> raw virtual key
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tollgate-sdktest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	stop, err := start(dir)
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdktest setup:", err)
	} else {
		code = m.Run()
	}
	stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitFor(url string) error {
	deadline := time.Now().Add(30 * time.Second)
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

// start builds tollgate (or uses TOLLGATE_BIN), runs the mock upstream and
// the gateway, and creates the keys the scenarios use.
func start(dir string) (func(), error) {
	var procs []*exec.Cmd
	stop := func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_, _ = p.Process.Wait()
		}
	}
	bin := os.Getenv("TOLLGATE_BIN")
	if bin == "" {
		bin = filepath.Join(dir, "tollgate")
		build := exec.Command("go", "build", "-o", bin, "./cmd/tollgate")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			return stop, fmt.Errorf("build: %v\n%s", err, out)
		}
	}
	upPort, err := freePort()
	if err != nil {
		return stop, err
	}
	up := exec.Command(bin, "mock-upstream", "--addr", fmt.Sprintf("127.0.0.1:%d", upPort))
	up.Stderr = os.Stderr
	if err := up.Start(); err != nil {
		return stop, err
	}
	procs = append(procs, up)
	upURL := fmt.Sprintf("http://127.0.0.1:%d", upPort)
	if err := waitFor(upURL + "/v1/models"); err != nil {
		return stop, err
	}
	cfg := fmt.Sprintf(`model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: %[1]q, input_cost_per_token: 0.000001, output_cost_per_token: 0.00001}
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-sonnet, api_base: %[1]q, input_cost_per_token: 0.000003, output_cost_per_token: 0.000015}
  - model_name: text-embedding-3-small
    litellm_params: {model: openai/text-embedding-3-small, api_base: %[1]q, input_cost_per_token: 0.00000002}
general_settings:
  master_key: sk-sdk-master
`, upURL)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o600); err != nil {
		return stop, err
	}
	port, err := freePort()
	if err != nil {
		return stop, err
	}
	serve := exec.Command(bin, "serve", "--config", "config.yaml", "--port", fmt.Sprint(port))
	serve.Dir = dir
	var logs bytes.Buffer
	serve.Stderr = &logs
	if err := serve.Start(); err != nil {
		return stop, err
	}
	procs = append(procs, serve)
	gw.url, gw.master = fmt.Sprintf("http://127.0.0.1:%d", port), "sk-sdk-master"
	if err := waitFor(gw.url + "/health/liveliness"); err != nil {
		return stop, fmt.Errorf("%w\n%s", err, logs.String())
	}
	gw.keys = map[string]string{}
	for name, body := range map[string]string{
		"all":     `{}`,
		"gpt4":    `{"models": ["gpt-4"]}`,
		"rpm1":    `{"rpm_limit": 1}`,
		"nobudge": `{"max_budget": 0.0000001}`,
	} {
		key, err := generate(body)
		if err != nil {
			return stop, err
		}
		gw.keys[name] = key
	}
	return stop, nil
}

func generate(body string) (string, error) {
	req, _ := http.NewRequest("POST", gw.url+"/key/generate", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+gw.master)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct{ Key string }
	if err := json.Unmarshal(b, &out); err != nil || out.Key == "" {
		return "", fmt.Errorf("/key/generate: %d %s", resp.StatusCode, b)
	}
	return out.Key, nil
}
