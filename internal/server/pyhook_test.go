package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

// pyhookDir copies the Python files of internal/pyhook/testdata/<set> into
// a fresh directory and writes config.yaml there: seed is the config file's
// text with each `model: "gpt-3.5-turbo"` given the fake upstream's
// api_base (the only change a test must make to the seed's config).
func pyhookDir(t *testing.T, set, seed, up string) string {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed (.ci/run installs it)")
	}
	dir := t.TempDir()
	src := filepath.Join("..", "pyhook", "testdata", set)
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".py") {
			b, err := os.ReadFile(filepath.Join(src, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	seed = strings.ReplaceAll(seed, `model: "gpt-3.5-turbo"`, `model: "gpt-3.5-turbo"
      api_base: `+up+`/v1
      api_key: sk-upstream-secret`)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(seed), 0o644); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "config.yaml")
}

func seedFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "pyhook", "testdata", "seed", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// servePy serves the config at path; stop shuts the server down and
// reports python workers left running.
func servePy(t *testing.T, path string, withStore bool) (url string, stop func()) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Logger: testLogger}
	if withStore {
		opts.Store = sqliteStore(t)
	}
	srv, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	pids := srv.pyhooks.Workers()
	if len(pids) != 2 {
		t.Fatalf("python workers: %v", pids)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		for _, pid := range append(pids, srv.pyhooks.Workers()...) {
			if syscall.Kill(pid, 0) == nil {
				t.Errorf("python worker %d outlived the server", pid)
			}
		}
	}
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

// TestPythonCustomAuthSeed runs seed 000's custom_auth example as written:
// custom_auth.py beside config.yaml, custom_auth: custom_auth.user_api_key_auth.
// Its key is served; any other key, and none, get 401 (the gateway has no
// master key, and is not open); the workers stop with the server.
func TestPythonCustomAuthSeed(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	path := pyhookDir(t, "seed", seedFile(t, "config.yaml"), urls["up"])
	url, stop := servePy(t, path, true)
	chat := `{"model": "openai-model", "messages": [{"role": "user", "content": "hi"}]}`
	if resp, body := postAs(t, url, "/v1/chat/completions", chat, "Authorization", "Bearer sk-my-master-key"); resp.StatusCode != 200 {
		t.Fatalf("the hook's key: %d %s", resp.StatusCode, body)
	}
	for _, hdr := range [][]string{{"Authorization", "Bearer sk-some-other-key"}, {}} {
		resp, body := postAs(t, url, "/v1/chat/completions", chat, hdr...)
		if resp.StatusCode != 401 {
			t.Errorf("chat with %v: %d %s", hdr, resp.StatusCode, body)
		}
		if resp, body := postAs(t, url, "/key/generate", `{}`, hdr...); resp.StatusCode != 401 {
			t.Errorf("/key/generate with %v: %d %s", hdr, resp.StatusCode, body)
		}
	}
	stop()
}

// TestPythonKeyGenerateSeed runs seed 000's custom_generate_key_fn: only
// team litellm-core-infra@gmail.com gets keys; others get 403 with the
// function's message. (master_key is added: /key/generate needs an admin.)
func TestPythonKeyGenerateSeed(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	cfgText := seedFile(t, "config_key_generate.yaml") + "  master_key: sk-1234\n"
	path := pyhookDir(t, "seed", cfgText, urls["up"])
	url, _ := servePy(t, path, true)
	send(t, url+"/team/new", "sk-1234", `{"team_id": "litellm-core-infra@gmail.com"}`)
	send(t, url+"/team/new", "sk-1234", `{"team_id": "other-team"}`)
	if code, body := send(t, url+"/key/generate", "sk-1234", `{"team_id": "litellm-core-infra@gmail.com"}`); code != 200 {
		t.Fatalf("the core team: %d %s", code, body)
	}
	for _, body := range []string{`{"team_id": "other-team"}`, `{}`} {
		code, out := send(t, url+"/key/generate", "sk-1234", body)
		if code != 403 || !strings.Contains(out, "This violates LiteLLM Proxy Rules. No team id provided.") {
			t.Fatalf("%s: %d %s", body, code, out)
		}
	}
}

const pyFailConfig = `model_list:
  - model_name: "openai-model"
    litellm_params:
      model: "gpt-3.5-turbo"
general_settings:
  master_key: sk-1234
  custom_auth: hooks.%s
  custom_key_generate: hooks.keygen_raises
  tollgate_python_hooks:
    workers: 2
    timeout: 1
`

// TestPythonHookFailuresAreClosed: a hook that raises is a 401 (auth) or a
// 400 with its message (key generation); one that hangs is a 503 at the
// deadline; one that crashes its worker is a 503 too, and the next calls
// are served by a replacement. Prints to stdout do not confuse the pool.
// Nothing gets through.
func TestPythonHookFailuresAreClosed(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	chat := `{"model": "openai-model", "messages": [{"role": "user", "content": "hi"}]}`
	tests := []struct {
		fn, key string
		code    int
		msg     string
	}{
		{"raises", "sk-anything", 401, "no entry for /v1/chat/completions"},
		{"hangs", "sk-slow", 503, "did not answer within 1s"},
		{"crashes", "sk-boom", 503, "exited during the call"},
		{"chatty", "sk-someone", 401, "not chatty"},
		{"chatty", "sk-chatty", 200, ""},
		{"hangs", "sk-fast", 200, ""},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%s-%d", tt.fn, i), func(t *testing.T) { // (no key in the name: it names the temp dir, which is logged)
			path := pyhookDir(t, "bad", strings.Replace(pyFailConfig, "%s", tt.fn, 1), urls["up"])
			url, _ := servePy(t, path, true)
			resp, body := postAs(t, url, "/v1/chat/completions", chat, "Authorization", "Bearer "+tt.key, "x-who", "ann")
			if resp.StatusCode != tt.code || !strings.Contains(body, tt.msg) {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			code, out := send(t, url+"/key/generate", "sk-1234", `{}`)
			if code != 400 || !strings.Contains(out, "key generation is closed today") {
				t.Fatalf("/key/generate: %d %s", code, out)
			}
		})
	}
}

// TestPythonHookStartErrors: a module that fails to import stops the start
// with the traceback; a missing interpreter stops it naming the hook and
// the cel and webhook forms.
func TestPythonHookStartErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		custom, extra, want string
	}{
		{"missing.user_api_key_auth", "", "ModuleNotFoundError: No module named 'tollgate_no_such_module'"},
		{"hooks.no_such_function", "", "has no function no_such_function"},
		{"hooks.raises", "  tollgate_python_hooks:\n    python: /nonexistent/python3\n", "general_settings.custom_auth: hooks.raises is a Python function and needs a Python interpreter, but \"/nonexistent/python3\" was not found"},
	}
	for _, tt := range tests {
		path := pyhookDir(t, "bad", "model_list:\n  - model_name: m\n    litellm_params:\n      model: \"gpt-3.5-turbo\"\ngeneral_settings:\n  custom_auth: "+tt.custom+"\n"+tt.extra, "http://127.0.0.1:1")
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(cfg, Options{Logger: testLogger, Store: sqliteStore(t)})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v", tt.custom, err)
		}
		if strings.Contains(tt.want, "interpreter") && (err == nil || !strings.Contains(err.Error(), "cel expression or a webhook")) {
			t.Errorf("no pointer at the cel and webhook forms: %v", err)
		}
	}
}
