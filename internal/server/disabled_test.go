package server

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

// lockedBuf is a log destination safe for the server's goroutines.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestUnservedProviderDeploymentIsDisabled: a LiteLLM model list naming
// providers Tollgate does not serve (Bedrock, Vertex AI) starts; those
// deployments are disabled with an error in the log and their reason in
// /model/info and /health, the rest of the list serves, and a model group
// with no deployment left answers with the reason.
func TestUnservedProviderDeploymentIsDisabled(t *testing.T) {
	urls, mocks := upstreams(t, "ok")
	yaml := strings.ReplaceAll(`
model_list:
  - model_name: beluga
    litellm_params: {model: petals/petals-team/StableBeluga2}
    model_info: {id: petals-1}
  - model_name: gemini
    litellm_params: {model: sagemaker/my-endpoint, aws_region_name: us-east-1}
    model_info: {id: sagemaker-1}
  - model_name: gemini
    litellm_params: {model: openai/gpt-4o, api_base: "{{ok}}"}
    model_info: {id: openai-1}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_base: "{{ok}}"}
    model_info: {id: openai-2}
general_settings:
  master_key: sk-1234
`, "{{ok}}", urls["ok"])
	cfg, err := config.Parse("disabled.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuf{}
	url := serveCfg(t, cfg, Options{Store: sqliteStore(t), Logger: slog.New(slog.NewJSONHandler(logs, nil))})

	// The log names each disabled deployment, at error level.
	var disabled []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "deployment disabled" {
			if rec["level"] != "ERROR" || !strings.Contains(rec["reason"].(string), "is not served by Tollgate") {
				t.Errorf("log line %s", line)
			}
			disabled = append(disabled, rec["deployment"].(string))
		}
	}
	if strings.Join(disabled, ",") != "petals-1,sagemaker-1" {
		t.Fatalf("disabled in the log: %v\n%s", disabled, logs.String())
	}

	// /model/info lists all four, the two disabled with their reason.
	var info struct {
		Data []struct {
			ModelName string         `json:"model_name"`
			ModelInfo map[string]any `json:"model_info"`
		}
	}
	if code := getJSON(t, url+"/model/info", "sk-1234", &info); code != 200 || len(info.Data) != 4 {
		t.Fatalf("/model/info: %d %+v", code, info)
	}
	tests := []struct {
		id, reason string
	}{
		{"petals-1", `provider "petals" is not served by Tollgate`},
		{"sagemaker-1", `provider "sagemaker" is not served by Tollgate`},
		{"openai-1", ""},
		{"openai-2", ""},
	}
	for _, tt := range tests {
		var mi map[string]any
		for _, d := range info.Data {
			if d.ModelInfo["id"] == tt.id {
				mi = d.ModelInfo
			}
		}
		reason, _ := mi["disabled_reason"].(string)
		switch {
		case mi == nil:
			t.Errorf("%s missing from /model/info", tt.id)
		case tt.reason == "" && (mi["disabled"] != nil || reason != ""):
			t.Errorf("%s shown disabled: %v", tt.id, mi)
		case tt.reason != "" && (mi["disabled"] != true || !strings.Contains(reason, tt.reason) || mi["healthy"] != false):
			t.Errorf("%s: %v, want disabled with %q", tt.id, mi, tt.reason)
		}
	}

	// The rest serves: gpt-4o, and gemini on its one served deployment.
	chat := func(model, key string) (int, string) {
		return send(t, url+"/v1/chat/completions", key, `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
	}
	for _, model := range []string{"gpt-4o", "gemini", "gemini"} {
		if code, body := chat(model, "sk-1234"); code != 200 {
			t.Fatalf("%s: %d %s", model, code, body)
		}
	}
	if n := mocks["ok"].Stats().Requests; n != 3 {
		t.Fatalf("upstream got %d requests, want 3", n)
	}

	// A group with no deployment left: a clear error, nothing sent upstream.
	code, body := chat("beluga", "sk-1234")
	e := decodeError(t, []byte(body))
	if code != 404 || e.Error.Code != "model_not_served" || !strings.Contains(e.Error.Message, `provider "petals" is not served by Tollgate`) {
		t.Fatalf("beluga: %d %s", code, body)
	}
	// A key that may not use the model learns nothing about it.
	_, kb := send(t, url+"/key/generate", "sk-1234", `{"models": ["gpt-4o"]}`)
	var gen struct{ Key string }
	json.Unmarshal([]byte(kb), &gen)
	code, body = chat("beluga", gen.Key)
	if e := decodeError(t, []byte(body)); code == 200 || strings.Contains(e.Error.Message, "petals\" is not served") {
		t.Fatalf("a key without access: %d %s", code, body)
	}
	if n := mocks["ok"].Stats().Requests; n != 3 {
		t.Fatalf("upstream got %d requests, want 3", n)
	}

	// /health lists the disabled deployments as unhealthy, with the reason.
	var health struct {
		Healthy []struct {
			ModelID string `json:"model_id"`
		} `json:"healthy_endpoints"`
		Unhealthy []struct {
			ModelID string `json:"model_id"`
			Error   string `json:"error"`
		} `json:"unhealthy_endpoints"`
	}
	if code := getJSON(t, url+"/health", "sk-1234", &health); code != 200 || len(health.Healthy) != 2 || len(health.Unhealthy) != 2 {
		t.Fatalf("/health: %d %+v", code, health)
	}
	for _, u := range health.Unhealthy {
		if (u.ModelID != "petals-1" && u.ModelID != "sagemaker-1") || !strings.Contains(u.Error, "is not served by Tollgate") {
			t.Errorf("unhealthy endpoint %+v", u)
		}
	}
}
