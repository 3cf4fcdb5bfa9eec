package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

func getJSON(t *testing.T, url, key string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}

// TestModelAPI: a model added with /model/new serves at once, on this
// replica and (through the store) on another; /model/info never shows its
// key; update and delete apply at once; config models cannot be edited.
func TestModelAPI(t *testing.T) {
	urls, mocks := upstreams(t, "cfg", "added", "moved")
	yaml := strings.ReplaceAll(`
model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: "{{cfg}}", api_key: sk-upstream-config-secret}
    model_info: {id: from-config}
general_settings:
  master_key: sk-1234
`, "{{cfg}}", urls["cfg"])
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	a := serveCfg(t, cfg, Options{Store: st, ResyncInterval: 50 * time.Millisecond})
	b := serveCfg(t, cfg, Options{Store: st, ResyncInterval: 50 * time.Millisecond})

	code, body := send(t, a+"/model/new", "sk-1234", `{"model_name": "claude-2", "litellm_params": {"model": "openai/claude-2", "api_base": "`+urls["added"]+`", "api_key": "sk-upstream-added-secret", "rpm": 60}, "model_info": {"id": "added-1", "access_groups": ["beta"]}}`)
	if code != 200 || strings.Contains(body, "secret") {
		t.Fatalf("/model/new: %d %s", code, body)
	}
	chat := `{"model":"claude-2","messages":[{"role":"user","content":"hi"}]}`
	if code, body := send(t, a+"/v1/chat/completions", "sk-1234", chat); code != 200 {
		t.Fatalf("the new model does not serve on A: %d %s", code, body)
	}
	if mocks["added"].Stats().Requests != 1 || mocks["added"].LastRequest().Header.Get("Authorization") != "Bearer sk-upstream-added-secret" {
		t.Fatal("the new model's upstream did not get the request with its key")
	}
	if _, ok := within(30*time.Second, func() bool { c, _ := send(t, b+"/v1/chat/completions", "sk-1234", chat); return c == 200 }); !ok {
		t.Fatal("replica B never learned of the new model")
	}

	var info struct {
		Data []struct {
			ModelName     string         `json:"model_name"`
			LiteLLMParams map[string]any `json:"litellm_params"`
			ModelInfo     map[string]any `json:"model_info"`
		}
	}
	if code := getJSON(t, a+"/model/info", "sk-1234", &info); code != 200 || len(info.Data) != 2 {
		t.Fatalf("/model/info: %d %+v", code, info)
	}
	raw, _ := json.Marshal(info)
	if strings.Contains(string(raw), "secret") || strings.Contains(string(raw), "api_key") {
		t.Fatalf("/model/info shows credentials: %s", raw)
	}
	// A key limited to gpt-4 sees only gpt-4.
	_, kb := send(t, a+"/key/generate", "sk-1234", `{"models": ["gpt-4"]}`)
	var gen struct{ Key string }
	json.Unmarshal([]byte(kb), &gen)
	getJSON(t, a+"/model/info", gen.Key, &info)
	if len(info.Data) != 1 || info.Data[0].ModelName != "gpt-4" {
		t.Fatalf("a gpt-4 key sees %+v", info.Data)
	}

	if code, body := send(t, a+"/model/update", "sk-1234", `{"id": "added-1", "litellm_params": {"api_base": "`+urls["moved"]+`"}}`); code != 200 {
		t.Fatalf("/model/update: %d %s", code, body)
	}
	send(t, a+"/v1/chat/completions", "sk-1234", chat)
	if mocks["moved"].Stats().Requests != 1 {
		t.Fatal("the update did not apply to the next request")
	}
	if code, _ := send(t, a+"/model/update", "sk-1234", `{"id": "from-config", "litellm_params": {"rpm": 1}}`); code != 400 {
		t.Errorf("a config model was editable: %d", code)
	}
	for _, bad := range []string{
		`{"model_name": "x", "litellm_params": {"model": "openai/x", "rpm": -1}}`,
		`{"model_name": "x", "litellm_params": {"model": "openai/x", "api_base": "ftp://h"}}`,
	} {
		if code, _ := send(t, a+"/model/new", "sk-1234", bad); code != 400 {
			t.Errorf("an invalid model was accepted (%d): %s", code, bad)
		}
	}
	if code, _ := send(t, a+"/model/new", "sk-1234", `{"model_name": "x", "litellm_params": {"model": "openai/x"}, "model_info": {"id": "from-config"}}`); code != 400 {
		t.Errorf("a duplicate id was accepted: %d", code)
	}
	if code, _ := send(t, a+"/model/new", gen.Key, `{"model_name": "x", "litellm_params": {"model": "openai/x"}}`); code != 403 {
		t.Errorf("a plain key added a model: %d", code)
	}
	if code, body := send(t, a+"/model/delete", "sk-1234", `{"id": "added-1"}`); code != 200 {
		t.Fatalf("/model/delete: %d %s", code, body)
	}
	if code, _ := send(t, a+"/v1/chat/completions", "sk-1234", chat); code != 404 {
		t.Fatalf("a deleted model still serves: %d", code)
	}
}

// TestHealthEndpoint: GET /health checks every deployment, and a failing
// one found by the background checks gets no traffic.
func TestHealthEndpoint(t *testing.T) {
	urls, mocks := upstreams(t, "ok", "broken:500")
	yaml := `
model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: "{{ok}}"}
    model_info: {id: ok}
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: "{{broken}}"}
    model_info: {id: broken}
general_settings:
  master_key: sk-1234
  background_health_checks: true
  health_check_interval: 60
`
	url := routingGateway(t, yaml, urls)
	type report struct {
		Healthy []struct {
			ModelID string `json:"model_id"`
		} `json:"healthy_endpoints"`
		Unhealthy []struct {
			ModelID string `json:"model_id"`
			Error   string
		} `json:"unhealthy_endpoints"`
		CheckedAt time.Time `json:"checked_at"`
	}
	var rep report
	// Wait for the background check's report: /health answers it, the
	// same each time, once the check has run (before, each /health checks
	// on its own). Its probes have then all reached the upstreams.
	if _, ok := within(30*time.Second, func() bool {
		var again report
		getJSON(t, url+"/health", "sk-1234", &rep)
		getJSON(t, url+"/health", "sk-1234", &again)
		return len(rep.Healthy)+len(rep.Unhealthy) == 2 && rep.CheckedAt.Equal(again.CheckedAt)
	}); !ok {
		t.Fatalf("no background health report: %+v", rep)
	}
	if len(rep.Healthy) != 1 || rep.Healthy[0].ModelID != "ok" || len(rep.Unhealthy) != 1 || rep.Unhealthy[0].ModelID != "broken" ||
		!strings.Contains(rep.Unhealthy[0].Error, "500") {
		t.Fatalf("/health: %+v", rep)
	}
	before := mocks["broken"].Stats().Requests
	for range 20 {
		if resp, body := chatTo(t, url, "gpt-4"); resp.StatusCode != 200 {
			t.Fatal(resp.StatusCode, body)
		}
	}
	if got := mocks["broken"].Stats().Requests - before; got != 0 {
		t.Fatalf("the unhealthy deployment got %d requests", got)
	}
	var denied map[string]any
	if code := getJSON(t, url+"/health", "sk-nope", &denied); code != 401 {
		t.Errorf("/health without the master key: %d", code)
	}
}

// TestDeletingAnAliasedModel: a config alias may point at a model added
// through the API. Deleting that model answers 200, stops serving it at
// once (the alias then answers 404 saying why), and a restart on the same
// store still starts. Before, the rebuilt router refused the dangling
// alias: /model/delete answered 500 after the row was gone, the old router
// kept serving the deleted model, and the next start failed.
func TestDeletingAnAliasedModel(t *testing.T) {
	urls, _ := upstreams(t, "cfg", "added")
	yaml := strings.ReplaceAll(`
model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: "{{cfg}}"}
router_settings:
  model_group_alias: {fast: claude-2}
general_settings:
  master_key: sk-1234
`, "{{cfg}}", urls["cfg"])
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	a := serveCfg(t, cfg, Options{Store: st})
	if code, body := send(t, a+"/model/new", "sk-1234", `{"model_name": "claude-2", "litellm_params": {"model": "openai/claude-2", "api_base": "`+urls["added"]+`"}, "model_info": {"id": "added-1"}}`); code != 200 {
		t.Fatalf("/model/new: %d %s", code, body)
	}
	if code, body := send(t, a+"/v1/chat/completions", "sk-1234", `{"model":"fast","messages":[{"role":"user","content":"hi"}]}`); code != 200 {
		t.Fatalf("alias to the added model: %d %s", code, body)
	}
	if code, body := send(t, a+"/model/delete", "sk-1234", `{"id": "added-1"}`); code != 200 {
		t.Fatalf("/model/delete: %d %s", code, body)
	}
	for _, model := range []string{"fast", "claude-2"} {
		code, body := send(t, a+"/v1/chat/completions", "sk-1234", `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
		if code != 404 {
			t.Fatalf("%s after its model was deleted: %d %s", model, code, body)
		}
		if model == "fast" && !strings.Contains(body, "no deployment serves") {
			t.Errorf("the alias's 404 does not say why: %s", body)
		}
	}
	srv, err := New(cfg, Options{Store: st, Logger: testLogger})
	if err != nil {
		t.Fatalf("a restart on the same store: %v", err)
	}
	srv.Close()
}
