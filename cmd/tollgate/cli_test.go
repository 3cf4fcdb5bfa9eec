package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cliGateway is a running gateway (the built binary) with a master key and
// the priced demo model.
type cliGateway struct {
	base string
}

func startCLIGateway(t *testing.T) *cliGateway {
	t.Helper()
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("model_list:\n  - model_name: demo\n    litellm_params: {model: demo/demo, input_cost_per_token: 0.00001, output_cost_per_token: 0.00003}\ngeneral_settings:\n  master_key: sk-cli-master\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	g := &cliGateway{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	start(t, dir, g.base+"/health/liveliness", bin, "serve", "--config", cfg, "--port", fmt.Sprint(port), "--host", "127.0.0.1")
	return g
}

// run runs one CLI command in process, with env as its environment.
func (g *cliGateway) run(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runCLI(args, &out, &errb, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

// ok runs a command as the admin, with --output json, and decodes it.
func (g *cliGateway) ok(t *testing.T, args ...string) any {
	t.Helper()
	code, out, errs := g.run(t, nil, append(args, "--url", g.base, "--master-key", "sk-cli-master", "--output", "json")...)
	if code != exitOK {
		t.Fatalf("%v: exit %d: %s", args, code, errs)
	}
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v: output is not JSON: %v\n%s", args, err, out)
	}
	return v
}

// table runs a command as the admin with table output.
func (g *cliGateway) table(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := g.run(t, nil, append(args, "--url", g.base, "--master-key", "sk-cli-master")...)
	if code != exitOK {
		t.Fatalf("%v: exit %d: %s", args, code, errs)
	}
	return out
}

func obj(t *testing.T, v any) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("not an object: %v", v)
	}
	return m
}

// TestCLIAgainstARunningGateway runs every management command against a
// running gateway: JSON output parses and says what the command did, table
// output names the entity.
func TestCLIAgainstARunningGateway(t *testing.T) {
	t.Parallel() // its own binary process, port, temp dir and store (see TestMain)
	g := startCLIGateway(t)

	// keys
	gen := obj(t, g.ok(t, "key", "generate", "--key-alias", "cli-alias", "--models", "demo", "--max-budget", "5",
		"--duration", "30d", "--metadata", `{"owner":"ops"}`, "--data", `{"tpm_limit": 1000, "max_budget": 1}`))
	key, _ := gen["key"].(string)
	if !strings.HasPrefix(key, "sk-") || gen["key_alias"] != "cli-alias" || gen["max_budget"] != 5.0 || gen["tpm_limit"] != 1000.0 {
		t.Fatalf("key generate: %v", gen)
	}
	if md := obj(t, gen["metadata"]); md["owner"] != "ops" {
		t.Errorf("metadata: %v", gen["metadata"])
	}
	if out := g.table(t, "key", "list"); !strings.Contains(out, "cli-alias") || !strings.Contains(out, "KEY_ALIAS") {
		t.Errorf("key list table lacks the alias:\n%s", out)
	}
	list := obj(t, g.ok(t, "key", "list", "--key-alias", "cli-alias"))
	if keys, _ := list["keys"].([]any); len(keys) != 1 || obj(t, keys[0])["token"] != gen["token"] {
		t.Errorf("key list --key-alias: %v", list)
	}
	info := obj(t, g.ok(t, "key", "info", key))
	if obj(t, info["info"])["key_alias"] != "cli-alias" {
		t.Errorf("key info: %v", info)
	}
	if out := g.table(t, "key", "info", key); !strings.Contains(out, "cli-alias") {
		t.Errorf("key info table:\n%s", out)
	}
	g.ok(t, "key", "update", key, "--max-budget", "7", "--models", "demo,other")
	if upd := obj(t, obj(t, g.ok(t, "key", "info", key))["info"]); upd["max_budget"] != 7.0 || len(upd["models"].([]any)) != 2 {
		t.Errorf("key update not applied: %v", upd)
	}
	regen := obj(t, g.ok(t, "key", "regenerate", key))
	newKey, _ := regen["key"].(string)
	if newKey == "" || newKey == key {
		t.Fatalf("key regenerate: %v", regen)
	}
	if code, _, errs := g.run(t, nil, "key", "info", key, "--url", g.base, "--master-key", "sk-cli-master"); code != exitAPI || !strings.Contains(errs, "404") {
		t.Errorf("the old key after regenerate: exit %d %s", code, errs)
	}
	// The new key is served, and spends.
	req, _ := http.NewRequest("POST", g.base+"/v1/chat/completions", strings.NewReader(`{"model":"demo","messages":[{"role":"user","content":"Hello!"}]}`))
	req.Header.Set("Authorization", "Bearer "+newKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the regenerated key: %d", resp.StatusCode)
	}
	g.ok(t, "key", "delete", newKey)
	if code, _, errs := g.run(t, nil, "key", "info", newKey, "--url", g.base, "--master-key", "sk-cli-master"); code != exitAPI || !strings.Contains(errs, "not found") {
		t.Errorf("a deleted key: exit %d %s", code, errs)
	}

	// users
	u := obj(t, g.ok(t, "user", "new", "--user-id", "u-cli", "--user-email", "cli@example.com", "--user-role", "internal_user", "--max-budget", "3"))
	if u["user_id"] != "u-cli" || u["user_email"] != "cli@example.com" {
		t.Errorf("user new: %v", u)
	}
	if out := g.table(t, "user", "list"); !strings.Contains(out, "cli@example.com") {
		t.Errorf("user list table:\n%s", out)
	}
	// As the internal user, with the key /user/new gave her: her own keys
	// are listed; a team is not hers to create (the API's 403, exit 1).
	userKey, _ := u["key"].(string)
	asUser := map[string]string{"TOLLGATE_URL": g.base, "TOLLGATE_MASTER_KEY": userKey}
	code, out, errs := g.run(t, asUser, "key", "list", "--output", "json")
	var own struct{ Keys []map[string]any }
	if code != exitOK || json.Unmarshal([]byte(out), &own) != nil || len(own.Keys) != 1 || own.Keys[0]["user_id"] != "u-cli" {
		t.Errorf("key list as internal_user: exit %d %s %s", code, out, errs)
	}
	if code, _, errs := g.run(t, asUser, "team", "new", "--team-alias", "not-hers"); code != exitAPI || !strings.Contains(errs, "HTTP 403") {
		t.Errorf("team new as internal_user: exit %d %s", code, errs)
	}
	g.ok(t, "user", "update", "u-cli", "--max-budget", "4")
	ui := obj(t, g.ok(t, "user", "info", "u-cli"))
	if ui["user_id"] != "u-cli" || obj(t, ui["user_info"])["max_budget"] != 4.0 {
		t.Errorf("user info after update: %v", ui)
	}
	g.ok(t, "user", "delete", "u-cli")
	if code, _, _ := g.run(t, nil, "user", "info", "u-cli", "--url", g.base, "--master-key", "sk-cli-master"); code != exitAPI {
		t.Errorf("a deleted user: exit %d", code)
	}

	// teams
	tm := obj(t, g.ok(t, "team", "new", "--team-alias", "cli-team", "--models", "demo"))
	teamID, _ := tm["team_id"].(string)
	if teamID == "" || tm["team_alias"] != "cli-team" {
		t.Fatalf("team new: %v", tm)
	}
	if out := g.table(t, "team", "list"); !strings.Contains(out, "cli-team") {
		t.Errorf("team list table:\n%s", out)
	}
	g.ok(t, "team", "update", teamID, "--max-budget", "9")
	ti := obj(t, g.ok(t, "team", "info", teamID))
	if obj(t, ti["team_info"])["max_budget"] != 9.0 {
		t.Errorf("team info after update: %v", ti)
	}
	g.ok(t, "team", "delete", teamID)
	if code, _, _ := g.run(t, nil, "team", "info", teamID, "--url", g.base, "--master-key", "sk-cli-master"); code != exitAPI {
		t.Errorf("a deleted team: exit %d", code)
	}

	// models
	g.ok(t, "model", "add", "cli-model", "openai/gpt-4o", "--api-base", "http://127.0.0.1:9/v1", "--input-cost-per-token", "0.000001")
	models := obj(t, g.ok(t, "model", "list"))
	names := []string{}
	for _, m := range models["data"].([]any) {
		names = append(names, fmt.Sprint(obj(t, m)["model_name"]))
	}
	if !strings.Contains(strings.Join(names, ","), "demo") || !strings.Contains(strings.Join(names, ","), "cli-model") {
		t.Errorf("model list: %v", names)
	}
	if out := g.table(t, "model", "list"); !strings.Contains(out, "cli-model") || !strings.Contains(out, "openai/gpt-4o") {
		t.Errorf("model list table:\n%s", out)
	}

	// spend: the regenerated key's call is in the report (the rollup is
	// written by the spend writer, so wait for it).
	if !eventually(30*time.Second, func() bool {
		report, _ := g.ok(t, "spend", "report", "--group-by", "api_key").([]any)
		return len(report) > 0
	}) {
		t.Fatal("spend report stayed empty")
	}
	if out := g.table(t, "spend", "report", "--group-by", "api_key"); !strings.Contains(out, "demo") {
		t.Errorf("spend report table:\n%s", out)
	}
}

// TestCLIExitCodes: 0 ok, 1 an API error (its message on stderr), 2 a usage
// error (nothing sent), 3 an unreachable gateway; the environment names the
// gateway and the key as Tollgate's and LiteLLM's CLIs do.
func TestCLIExitCodes(t *testing.T) {
	t.Parallel() // its own binary process, port, temp dir and store (see TestMain)
	g := startCLIGateway(t)
	down := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // nothing listens
	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stderr string
	}{
		{"ok from TOLLGATE_URL and TOLLGATE_MASTER_KEY", map[string]string{"TOLLGATE_URL": g.base, "TOLLGATE_MASTER_KEY": "sk-cli-master"}, []string{"key", "list"}, exitOK, ""},
		{"ok from LiteLLM's LITELLM_PROXY_URL and LITELLM_PROXY_API_KEY", map[string]string{"LITELLM_PROXY_URL": g.base, "LITELLM_PROXY_API_KEY": "sk-cli-master"}, []string{"team", "list"}, exitOK, ""},
		{"401: a wrong key", nil, []string{"key", "list", "--url", g.base, "--master-key", "sk-wrong"}, exitAPI, "HTTP 401: invalid API key"},
		{"401: no key", nil, []string{"user", "list", "--url", g.base}, exitAPI, "HTTP 401"},
		{"404: an unknown key", nil, []string{"key", "info", "sk-nope", "--url", g.base, "--master-key", "sk-cli-master"}, exitAPI, "HTTP 404"},
		{"400: a bad value the gateway refuses", nil, []string{"spend", "report", "--group-by", "planet", "--url", g.base, "--master-key", "sk-cli-master"}, exitAPI, "group_by must be one of"},
		{"unknown flag", nil, []string{"key", "generate", "--no-such-flag", "--url", g.base}, exitUsage, "flag provided but not defined"},
		{"not a number", nil, []string{"key", "generate", "--max-budget", "ten", "--url", g.base}, exitUsage, "not a number"},
		{"bad --metadata", nil, []string{"key", "generate", "--metadata", "{", "--url", g.base}, exitUsage, "not a JSON object"},
		{"bad --data", nil, []string{"team", "new", "--data", "[1]", "--url", g.base}, exitUsage, "--data is not a JSON object"},
		{"missing argument", nil, []string{"key", "info", "--url", g.base}, exitUsage, "wrong number of arguments"},
		{"unknown verb", nil, []string{"key", "rotate"}, exitUsage, "unknown verb"},
		{"bad --output", nil, []string{"key", "list", "--output", "xml", "--url", g.base}, exitUsage, "--output must be table or json"},
		{"bad --url", nil, []string{"key", "list", "--url", "localhost:4000"}, exitUsage, "not an http(s) URL"},
		{"unreachable", nil, []string{"key", "list", "--url", down, "--master-key", "sk-cli-master"}, exitConn, "cannot reach the gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := g.run(t, tt.env, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.stderr) {
				t.Errorf("exit %d (want %d), stderr %q (want %q)", code, tt.code, errs, tt.stderr)
			}
		})
	}
	// -h never prints the key from the environment.
	code, _, errs := g.run(t, map[string]string{"TOLLGATE_MASTER_KEY": "sk-cli-master"}, "key", "generate", "-h")
	if code != exitOK || strings.Contains(errs, "sk-cli-master") || !strings.Contains(errs, "--max-budget") && !strings.Contains(errs, "-max-budget") {
		t.Errorf("-h: exit %d\n%s", code, errs)
	}
	// The binary routes the commands and exits with the code.
	bin := buildBinary(t)
	for _, tt := range []struct {
		args []string
		code int
	}{{[]string{"key", "list", "--url", down}, exitConn}, {[]string{"team"}, exitUsage}, {[]string{"model", "list", "--url", g.base, "--master-key", "sk-cli-master"}, exitOK}} {
		err := exec.Command(bin, tt.args...).Run()
		got := 0
		if ee, ok := err.(*exec.ExitError); ok {
			got = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if got != tt.code {
			t.Errorf("tollgate %v: exit %d, want %d", tt.args, got, tt.code)
		}
	}
}
