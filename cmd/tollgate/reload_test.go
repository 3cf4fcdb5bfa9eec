package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestSIGHUPReloadsModels: SIGHUP applies a new model_list to new requests
// while a stream in flight finishes on the old deployment; a config that no
// longer loads is refused and the running one kept.
func TestSIGHUPReloadsModels(t *testing.T) {
	t.Parallel() // its own binary process, port, temp dir and store (see TestMain)
	bin := buildBinary(t)
	oldUp := mockupstream.New(mockupstream.Options{Chunks: 10, ChunkDelay: 100 * time.Millisecond})
	newUp := mockupstream.New(mockupstream.Options{})
	o, n := httptest.NewServer(oldUp), httptest.NewServer(newUp)
	defer o.Close()
	defer n.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	write := func(body string) {
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(fmt.Sprintf("model_list:\n  - model_name: gpt-4\n    litellm_params: {model: openai/gpt-4o, api_base: %q}\n", o.URL))
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd, stderr := start(t, dir, base+"/health/liveliness", bin, "serve", "--config", cfg, "--port", fmt.Sprint(port))

	chat := func(model string, stream bool) (*http.Response, error) {
		return http.Post(base+"/v1/chat/completions", "application/json",
			strings.NewReader(fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":"a b c d e f g h i j"}]}`, model, stream)))
	}
	inflight, err := chat("gpt-4", true)
	if err != nil {
		t.Fatal(err)
	}
	write(fmt.Sprintf("model_list:\n  - model_name: gpt-4\n    litellm_params: {model: openai/gpt-4o, api_base: %q}\n  - model_name: gpt-5\n    litellm_params: {model: openai/gpt-5, api_base: %q}\n", n.URL, n.URL))
	cmd.Process.Signal(syscall.SIGHUP)

	served := func() bool {
		resp, err := chat("gpt-5", false)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	deadline := time.Now().Add(time.Minute) // a bound, not a figure to meet
	for !served() {
		if time.Now().After(deadline) {
			t.Fatalf("gpt-5 not served after SIGHUP\n%s", stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := newUp.Stats().Requests
	resp, err := chat("gpt-4", false)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if newUp.Stats().Requests != before+1 {
		t.Error("gpt-4 did not move to the new deployment")
	}
	rest, _ := io.ReadAll(inflight.Body)
	inflight.Body.Close()
	if !strings.Contains(string(rest), "data: [DONE]") || oldUp.Stats().StreamsCompleted != 1 {
		t.Fatalf("the stream in flight was cut by the reload: %q", rest)
	}

	write("model_list:\n  - model_name: broken\n    litellm_params: {modle: x}\n")
	cmd.Process.Signal(syscall.SIGHUP)
	// Wait for the reload's verdict (its log line) rather than a fixed
	// 300 ms, then check the running config was kept.
	for deadline := time.Now().Add(time.Minute); !strings.Contains(stderr.String(), "config reload failed"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("the bad reload was not logged:\n%s", stderr)
			break
		}
	}
	if !served() {
		t.Fatal("a bad config replaced the running one")
	}
}
