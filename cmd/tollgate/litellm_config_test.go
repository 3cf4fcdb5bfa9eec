package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeStartsOnLiteLLMExampleConfig: `serve` starts on a config built
// like LiteLLM's own example proxy configs (Vertex AI deployments, tags,
// alerting, pass-through endpoints, callbacks), logs a warning per key it
// does not act on with its file:line:col, disables the Vertex AI deployments
// with an error, and shows them disabled in /model/info.
func TestServeStartsOnLiteLLMExampleConfig(t *testing.T) {
	t.Parallel() // its own binary process, port, temp dir and store (see TestMain)
	bin := buildBinary(t)
	dir := t.TempDir()
	src, err := os.ReadFile("../../internal/config/testdata/litellm_proxy_example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "proxy_config.yaml")
	if err := os.WriteFile(cfg, src, 0o600); err != nil {
		t.Fatal(err)
	}
	// The example names custom_auth: custom_auth_basic.user_api_key_auth,
	// a Python file LiteLLM keeps beside it: Tollgate runs it, so it must
	// be there (a missing module stops the start). This one lets every
	// key in under its own name.
	hook := "from fastapi import Request\nfrom litellm.proxy._types import UserAPIKeyAuth\n\n" +
		"async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:\n" +
		"    return UserAPIKeyAuth(api_key=api_key)\n"
	if err := os.WriteFile(filepath.Join(dir, "custom_auth_basic.py"), []byte(hook), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	_, stderr := start(t, dir, base+"/health/liveliness", bin, "serve", "--config", cfg, "--host", "127.0.0.1", "--port", fmt.Sprint(port))

	// The log is flushed every 100 ms: wait for the line written after
	// the config's warnings and the router's errors.
	deadline := time.Now().Add(time.Minute) // a bound, not a figure to meet
	for !strings.Contains(stderr.String(), "tollgate listening") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	log := stderr.String()
	for _, want := range []string{
		"proxy_config.yaml:49:3: general_settings.alerting is accepted", // deployment tags are served now: no warning
		"proxy_config.yaml:60:11: pass_through_endpoints[0] (/azure-passthrough) has no target",
		"router_settings.enable_tag_filtering is accepted",
		"deployment disabled",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}

	req, _ := http.NewRequest("GET", base+"/model/info", nil)
	req.Header.Set("Authorization", "Bearer sk-example-1234")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct {
		Data []struct {
			LiteLLMParams map[string]any `json:"litellm_params"`
			ModelInfo     map[string]any `json:"model_info"`
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil || resp.StatusCode != 200 || len(info.Data) != 6 {
		t.Fatalf("/model/info: %d %v %+v", resp.StatusCode, err, info)
	}
	disabled := 0
	for _, d := range info.Data {
		isVertex := strings.HasPrefix(d.LiteLLMParams["model"].(string), "vertex_ai/")
		if isVertex != (d.ModelInfo["disabled"] == true) {
			t.Errorf("%v: disabled = %v", d.LiteLLMParams["model"], d.ModelInfo["disabled"])
		}
		if d.ModelInfo["disabled"] == true {
			disabled++
		}
	}
	if disabled != 2 {
		t.Errorf("%d deployments disabled, want the 2 Vertex AI ones", disabled)
	}
}
