package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

// TestModelInfoShowsProvider: /model/info names each deployment's
// provider, as LiteLLM's model_info.litellm_provider and the provider
// prefix of litellm_params.model.
func TestModelInfoShowsProvider(t *testing.T) {
	tokens, _ := googleTokenServer(t)
	creds, _ := json.Marshal(serviceAccount(t, "info@proj.iam.gserviceaccount.com", tokens.URL))
	cfg, err := config.Parse("m.yaml", []byte(fmt.Sprintf(`
model_list:
  - model_name: g
    litellm_params: {model: gemini/gemini-2.0-flash, api_key: k}
  - model_name: v
    litellm_params: {model: vertex_ai/claude-3-5-sonnet-v2@20241022, vertex_project: p, vertex_credentials: %s}
  - model_name: c
    litellm_params: {model: cohere/command-r, api_key: k}
  - model_name: o
    litellm_params: {model: openai/gpt-4o, api_key: k}
general_settings:
  master_key: sk-1234
`, creds)))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	var info struct {
		Data []struct {
			ModelName     string         `json:"model_name"`
			LiteLLMParams map[string]any `json:"litellm_params"`
			ModelInfo     map[string]any `json:"model_info"`
		}
	}
	if code := getJSON(t, e.url+"/model/info", "sk-1234", &info); code != 200 || len(info.Data) != 4 {
		t.Fatalf("/model/info: %d %+v", code, info)
	}
	want := map[string]string{"g": "gemini", "v": "vertex_ai", "c": "cohere", "o": "openai"}
	for _, d := range info.Data {
		p := want[d.ModelName]
		if p == "" || d.ModelInfo["litellm_provider"] != p || !strings.HasPrefix(fmt.Sprint(d.LiteLLMParams["model"]), p+"/") {
			t.Errorf("%s: %v %v, want provider %q", d.ModelName, d.LiteLLMParams, d.ModelInfo, p)
		}
		delete(want, d.ModelName)
	}
	if len(want) > 0 {
		t.Errorf("missing %v", want)
	}
}
