package server

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestAgentgatewayGoogleProviders: an agentgateway config's gemini and
// vertex models are served: gemini with its apiKey in x-goog-api-key,
// vertex under its vertexProject and vertexRegion with a token from
// LiteLLM's VERTEXAI_CREDENTIALS.
func TestAgentgatewayGoogleProviders(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	tokens, _ := googleTokenServer(t)
	t.Setenv("VERTEXAI_CREDENTIALS", serviceAccount(t, "agw@proj.iam.gserviceaccount.com", tokens.URL))
	yaml := fmt.Sprintf(`
llm:
  policies:
    apiKey:
      keys: [{key: sk-agw-client}]
  models:
    - name: flash
      provider: gemini
      params: {model: gemini-2.0-flash, apiKey: g-key, hostOverride: "%s"}
    - name: vflash
      provider: vertex
      params: {model: gemini-2.0-flash, vertexProject: proj-7, vertexRegion: asia-east1, hostOverride: "%s"}
`, up.URL, up.URL)
	cfg, err := config.Parse("agw.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, nil)
	for model, want := range map[string]string{
		"flash":  "/v1beta/models/gemini-2.0-flash:generateContent",
		"vflash": "/v1/projects/proj-7/locations/asia-east1/publishers/google/models/gemini-2.0-flash:generateContent",
	} {
		resp, out := e.post(t, "/v1/chat/completions", "sk-agw-client", `{"model":"`+model+`","messages":[{"role":"user","content":"hello google"}]}`)
		if resp.StatusCode != 200 || !strings.Contains(fmt.Sprint(out["choices"]), "hello google") {
			t.Fatalf("%s: %d %v", model, resp.StatusCode, out)
		}
		got := mock.LastRequest()
		auth, wantAuth := got.Header.Get("x-goog-api-key"), "g-key"
		if model == "vflash" {
			auth, wantAuth = got.Header.Get("Authorization"), "Bearer ya29.agw"
		}
		if got.Path != want || auth != wantAuth {
			t.Fatalf("%s reached %s with %v", model, got.Path, got.Header)
		}
	}
}
