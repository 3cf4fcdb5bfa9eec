package server

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestBedrockProfileCredentials: a bedrock deployment with
// aws_profile_name signs its calls (and /bedrock/* pass-through calls) with
// that profile's keys from the shared credentials file, in the region of
// its section of the config file, ahead of the environment's keys; each
// call is booked. A deployment whose profile needs SSO is disabled with the
// reason in /model/info, and the rest of the list serves.
func TestBedrockProfileCredentials(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, k := range []string{"AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_SESSION_TOKEN", "AWS_REGION",
		"AWS_DEFAULT_REGION", "AWS_BEDROCK_RUNTIME_ENDPOINT"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAENVKEY") // set aside by aws_profile_name
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	files := map[string]string{
		"credentials": "[team]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = profile-secret\naws_session_token = profile-token\n",
		"config":      "[profile team]\nregion = ap-southeast-2\n\n[profile corp]\nsso_session = corp\nregion = us-east-1\n",
	}
	if err := os.Mkdir(filepath.Join(home, ".aws"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(home, ".aws", name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The checker knows only the profile's key: a call signed with the
	// environment's would not verify.
	chk := &sigv4Checker{next: mockupstream.New(mockupstream.Options{}), keys: map[string]config.AWSCredentials{
		"AKIAPROFILE": {AccessKeyID: "AKIAPROFILE", SecretAccessKey: "profile-secret", SessionToken: "profile-token", Region: "ap-southeast-2"},
	}}
	up := httptest.NewServer(chk)
	defer up.Close()
	const sonnet = "anthropic.claude-3-5-sonnet-20240620-v1:0"
	cfg, err := config.Parse("b.yaml", []byte(fmt.Sprintf(`
model_list:
  - model_name: claude
    litellm_params: {model: bedrock/%[2]s, aws_profile_name: team, api_base: "%[1]s"}
    model_info: {id: bedrock-team}
  - model_name: claude-sso
    litellm_params: {model: bedrock/%[2]s, aws_profile_name: corp, api_base: "%[1]s"}
    model_info: {id: bedrock-sso}
general_settings:
  master_key: sk-1234
`, up.URL, sonnet)))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{"max_budget": 5}`)

	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"claude","messages":[{"role":"user","content":"one two three"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %v", resp.StatusCode, out)
	}
	resp2, body := passSend(t, "POST", e.url+"/bedrock/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
		`{"messages":[{"role":"user","content":[{"text":"hi"}]}]}`, "Authorization", "Bearer "+key, "Content-Type", "application/json")
	if resp2.StatusCode != 200 {
		t.Fatalf("pass-through: %d %s", resp2.StatusCode, body)
	}
	chk.mu.Lock()
	reached, bad := len(chk.paths), chk.bad
	chk.mu.Unlock()
	if reached != 2 || len(bad) != 0 {
		t.Fatalf("%d requests reached Bedrock, want 2; signatures that did not verify: %v", reached, bad)
	}
	// The SSO profile's deployment is disabled, saying why.
	var info struct {
		Data []struct {
			ModelInfo map[string]any `json:"model_info"`
		}
	}
	if code := getJSON(t, e.url+"/model/info", "sk-1234", &info); code != 200 {
		t.Fatalf("/model/info: %d", code)
	}
	found := false
	for _, d := range info.Data {
		if d.ModelInfo["id"] != "bedrock-sso" {
			continue
		}
		found = true
		reason, _ := d.ModelInfo["disabled_reason"].(string)
		if d.ModelInfo["disabled"] != true || !strings.Contains(reason, `"corp"`) || !strings.Contains(reason, "sso_session") {
			t.Fatalf("SSO deployment: %v", d.ModelInfo)
		}
	}
	if !found {
		t.Fatalf("bedrock-sso missing from /model/info: %+v", info)
	}
	// Both calls are booked (spendRows stops the server first).
	if rows := spendRows(t, e, key); len(rows) != 2 || rows[0].Cost <= 0 || rows[1].Cost <= 0 {
		t.Fatalf("booked %+v", rows)
	}
}
