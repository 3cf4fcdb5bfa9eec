package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

func hookGateway(t *testing.T, settings string) string {
	t.Helper()
	urls, _ := upstreams(t, "up")
	cfg, err := config.Parse("hooks.yaml", []byte(strings.ReplaceAll(mockConfig, "{{UP}}", urls["up"])+"general_settings:\n  master_key: sk-1234\n"+settings))
	if err != nil {
		t.Fatal(err)
	}
	return serveCfg(t, cfg, Options{Store: sqliteStore(t)})
}

const hi = `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`

// TestCustomAuthCEL: after virtual-key auth, a CEL expression over the
// headers and the key's owner decides.
func TestCustomAuthCEL(t *testing.T) {
	url := hookGateway(t, `  custom_auth:
    cel: 'headers["x-team"] == "core" && principal.user_id == "ishaan"'
`)
	send(t, url+"/key/generate", "sk-1234", `{"key": "sk-cel-user-key", "user_id": "ishaan"}`)
	resp, body := postAs(t, url, "/v1/chat/completions", hi, "Authorization", "Bearer sk-cel-user-key", "x-team", "core")
	if resp.StatusCode != 200 {
		t.Fatalf("allowed by the expression: %d %s", resp.StatusCode, body)
	}
	resp, body = postAs(t, url, "/v1/chat/completions", hi, "Authorization", "Bearer sk-cel-user-key", "x-team", "web")
	if resp.StatusCode != 401 || !strings.Contains(body, "custom_auth") {
		t.Fatalf("denied by the expression: %d %s", resp.StatusCode, body)
	}
	if resp, _ := postAs(t, url, "/v1/chat/completions", hi, "Authorization", "Bearer sk-unknown", "x-team", "core"); resp.StatusCode != 401 {
		t.Fatalf("an unknown key passed in after mode: %d", resp.StatusCode)
	}
	resp, body = postAs(t, url, "/v1/chat/completions", hi, "Authorization", "Bearer sk-cel-user-key") // no x-team: the map lookup fails
	if resp.StatusCode != 401 || !strings.Contains(body, "expression failed") {
		t.Fatalf("an expression error must deny: %d %s", resp.StatusCode, body)
	}
}

// TestCustomAuthWebhookReplace: the webhook alone decides and names the
// identity; its answers are cached; when it is down requests get 503.
func TestCustomAuthWebhookReplace(t *testing.T) {
	var calls atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var in struct {
			Key     string
			Headers map[string]string
		}
		json.NewDecoder(r.Body).Decode(&in)
		if r.Header.Get("X-Hook-Secret") != "s3cret" {
			w.WriteHeader(401)
			return
		}
		if in.Key == "sk-external-ok" {
			json.NewEncoder(w).Encode(map[string]any{"allow": true, "user_id": "ext-user", "models": []string{"gpt-4"}, "rpm_limit": 100})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"allow": false, "message": "unknown to the directory"})
	}))
	url := hookGateway(t, `  custom_auth:
    mode: replace
    webhook:
      url: `+hook.URL+`
      timeout: 1s
      cache_ttl: 60s
      headers: {X-Hook-Secret: s3cret}
`)
	for range 3 {
		if resp, body := postAs(t, url, "/v1/chat/completions", hi, "Authorization", "Bearer sk-external-ok"); resp.StatusCode != 200 {
			t.Fatalf("allowed by the webhook: %d %s", resp.StatusCode, body)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("the webhook was called %d times for one key within its cache TTL", calls.Load())
	}
	resp, body := postAs(t, url, "/v1/chat/completions", hi, "Authorization", "Bearer sk-external-bad")
	if resp.StatusCode != 401 || !strings.Contains(body, "unknown to the directory") {
		t.Fatalf("denied by the webhook: %d %s", resp.StatusCode, body)
	}
	if resp, _ := postAs(t, url, "/v1/chat/completions", hi, "Authorization", "Bearer sk-1234"); resp.StatusCode != 200 {
		t.Fatalf("the master key in replace mode: %d", resp.StatusCode)
	}
	hook.Close()
	resp, body = postAs(t, url, "/v1/chat/completions", hi, "Authorization", "Bearer sk-another-key")
	if resp.StatusCode != 503 || !strings.Contains(body, "custom_auth") {
		t.Fatalf("webhook down: %d %s (never open)", resp.StatusCode, body)
	}
}

// TestCustomKeyGenerate is seed 000's custom_key_generate example written
// as a CEL expression: only team litellm-core-infra@gmail.com may create keys.
func TestCustomKeyGenerate(t *testing.T) {
	url := hookGateway(t, `  custom_key_generate:
    cel: |
      has(request.team_id) && request.team_id == "litellm-core-infra@gmail.com"
        ? {"allow": true}
        : {"allow": false, "message": "This violates LiteLLM Proxy Rules. No team id provided."}
`)
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

	down := hookGateway(t, `  custom_key_generate:
    webhook: {url: "http://127.0.0.1:1/decide", timeout: 1s}
`)
	code, out := send(t, down+"/key/generate", "sk-1234", `{}`)
	if code != 503 || !strings.Contains(out, "custom_key_generate") {
		t.Fatalf("webhook down: %d %s", code, out)
	}
}

func TestHookConfigErrors(t *testing.T) {
	for _, bad := range []string{
		"  custom_auth:\n    cel: 'headers['\n",
		"  custom_auth:\n    mode: sideways\n    cel: 'true'\n",
		"  custom_key_generate:\n    cel: 'true'\n    webhook: {url: http://x}\n",
		"  custom_auth:\n    cell: 'true'\n",
	} {
		cfg, err := config.Parse("h.yaml", []byte(strings.ReplaceAll(mockConfig, "{{UP}}", "http://127.0.0.1:1")+"general_settings:\n  master_key: sk-1234\n"+bad))
		if err == nil {
			_, err = New(cfg, Options{Store: sqliteStore(t)})
		}
		if err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}

// TestCustomAuthClosesAnOpenGateway: with custom_auth and no master key,
// nothing gets in without the hook's consent — not anonymous requests, not
// the management API.
func TestCustomAuthClosesAnOpenGateway(t *testing.T) {
	urls, _ := upstreams(t, "up")
	cfg, err := config.Parse("h.yaml", []byte(strings.ReplaceAll(mockConfig, "{{UP}}", urls["up"])+`general_settings:
  custom_auth:
    mode: replace
    cel: 'key == "sk-let-me-in"'
`))
	if err != nil {
		t.Fatal(err)
	}
	url := serveCfg(t, cfg, Options{Store: sqliteStore(t)})
	for _, key := range []string{"", "sk-some-other-key"} {
		hdr := []string{}
		if key != "" {
			hdr = []string{"Authorization", "Bearer " + key}
		}
		if resp, body := postAs(t, url, "/v1/chat/completions", hi, hdr...); resp.StatusCode != 401 {
			t.Errorf("chat with key %q: %d %s", key, resp.StatusCode, body)
		}
		if resp, body := postAs(t, url, "/key/generate", `{}`, hdr...); resp.StatusCode != 401 {
			t.Errorf("/key/generate with key %q: %d %s", key, resp.StatusCode, body)
		}
	}
	if resp, body := postAs(t, url, "/v1/chat/completions", hi, "Authorization", "Bearer sk-let-me-in"); resp.StatusCode != 200 {
		t.Errorf("the hook's key: %d %s", resp.StatusCode, body)
	}
}
