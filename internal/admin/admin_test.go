package admin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/server"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// The model list of seed 000 (its tiers, access group and the step-1 names),
// pointed at a mock upstream.
const seedConfig = `
model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4-upstream, api_base: "{{UP}}"}
  - model_name: gpt-3.5-turbo
    litellm_params: {model: openai/gpt-35-upstream, api_base: "{{UP}}"}
  - model_name: my-free-tier
    litellm_params: {model: huggingface/HuggingFaceH4/zephyr-7b-beta, api_base: "{{UP}}"}
  - model_name: text-embedding-ada-002
    litellm_params: {model: openai/ada-upstream, api_base: "{{UP}}"}
    model_info:
      access_groups: ["beta-models"]
general_settings:
  master_key: sk-1234
litellm_settings:
  upperbound_key_generate_params:
    max_budget: 100
    duration: "30d"
`

type env struct {
	t     *testing.T
	url   string
	mock  *mockupstream.Server
	store store.Store
	dbDir string
}

// engines runs fn against a gateway on SQLite and, when
// TOLLGATE_TEST_POSTGRES_URL is set, on PostgreSQL.
func engines(t *testing.T, cfgYAML string, fn func(t *testing.T, e *env)) {
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		st := storetest.OpenSQLite(t, filepath.Join(dir, "tollgate.db")) // a copy of a migrated database
		e := start(t, cfgYAML, st)
		e.dbDir = dir
		fn(t, e)
	})
	t.Run("postgres", func(t *testing.T) {
		pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
		if pg == "" {
			t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run")
		}
		fn(t, start(t, cfgYAML, storetest.OpenPostgres(t, pg)))
	})
}

func start(t *testing.T, cfgYAML string, st store.Store) *env {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	t.Cleanup(up.Close)
	cfg, err := config.Parse("test.yaml", []byte(strings.ReplaceAll(cfgYAML, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, server.Options{Logger: slog.New(slog.DiscardHandler), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	// Served whole (the spend writer and the other actors run), as the
	// binary serves it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	return &env{t: t, url: "http://" + ln.Addr().String(), mock: mock, store: st}
}

// do sends body (verbatim, as curl would) and decodes the JSON answer.
func (e *env) do(method, path, key, body string) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(bytes.TrimSpace(b)) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &out); err != nil {
			e.t.Fatalf("%s %s: invalid JSON %s", method, path, b)
		}
	} else {
		out = map[string]any{"_raw": string(b)}
	}
	return resp.StatusCode, out
}

func (e *env) chat(key, model string) (int, map[string]any) {
	return e.do("POST", "/v1/chat/completions", key, `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
}

func (e *env) generate(body string) string {
	e.t.Helper()
	status, out := e.do("POST", "/key/generate", "sk-1234", body)
	if status != 200 {
		e.t.Fatalf("generate %s: %d %v", body, status, out)
	}
	return out["key"].(string)
}

func errParam(out map[string]any) string {
	m, _ := out["error"].(map[string]any)
	p, _ := m["param"].(string)
	return p
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestSeedKeyLifecycle(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		// Step 3 of the seed, verbatim.
		status, out := e.do("POST", "/key/generate", "sk-1234", `{"models": ["gpt-3.5-turbo", "gpt-4", "claude-2"], "duration": "20m","metadata": {"user": "ishaan@berri.ai"}}`)
		if status != 200 {
			t.Fatalf("generate: %d %v", status, out)
		}
		key := out["key"].(string)
		exp, err := time.Parse(time.RFC3339, out["expires"].(string))
		if !strings.HasPrefix(key, "sk-") || out["key_name"] != "sk-..."+key[len(key)-4:] || out["token"] != sha(key) || err != nil {
			t.Fatalf("generate response %v (%v)", out, err)
		}
		if d := time.Until(exp); d < 19*time.Minute || d > 21*time.Minute {
			t.Errorf("expires in %v, want 20m", d)
		}
		// The /key/generate example with team_id and a trailing comma, verbatim.
		status, out = e.do("POST", "/key/generate", "sk-1234", "{\n\"models\": [\"gpt-3.5-turbo\", \"gpt-4\", \"claude-2\"],\n\"duration\": \"20m\",\n\"metadata\": {\"user\": \"ishaan@berri.ai\"},\n\"team_id\": \"core-infra\",\n\"max_budget\": 10,\n}")
		if status != 200 || out["team_id"] != "core-infra" || out["max_budget"] != 10.0 {
			t.Fatalf("generate with trailing comma: %d %v", status, out)
		}

		if s, _ := e.chat(key, "gpt-4"); s != 200 {
			t.Fatalf("chat with new key: %d", s)
		}
		if s, out := e.chat(key, "my-free-tier"); s != 403 || !strings.Contains(out["error"].(map[string]any)["type"].(string), "permission") {
			t.Fatalf("model outside the key's models: %d %v", s, out)
		}

		status, out = e.do("GET", "/key/info?key="+key, "sk-1234", "")
		info := out["info"].(map[string]any)
		if status != 200 || out["key"] != key || info["token"] != sha(key) || info["spend"] != 0.0 || info["metadata"].(map[string]any)["user"] != "ishaan@berri.ai" {
			t.Fatalf("key/info: %d %v", status, out)
		}
		if strings.Contains(strings.ReplaceAll(toJSON(info), `"key":"`+key, ""), key) {
			t.Fatal("/key/info returned the raw key inside info")
		}

		// /key/update, verbatim but for the key.
		status, out = e.do("POST", "/key/update", "sk-1234", `{
"key": "`+key+`",
"models": ["gpt-3.5-turbo", "gpt-4", "claude-2"],
"metadata": {"user": "ishaan@berri.ai"},
"team_id": "core-infra"
}`)
		if status != 200 || out["key"] != key || out["team_id"] != "core-infra" {
			t.Fatalf("key/update: %d %v", status, out)
		}

		status, out = e.do("POST", "/key/delete", "sk-1234", `{"keys": ["`+key+`"]}`)
		if status != 200 || toJSON(out["deleted_keys"]) != `["`+key+`"]` {
			t.Fatalf("key/delete: %d %v", status, out)
		}
		if s, _ := e.chat(key, "gpt-4"); s != 401 {
			t.Fatalf("deleted key still works: %d", s)
		}
	})
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestAliasesAndAccessGroups(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		// Upgrade/downgrade example, verbatim.
		key := e.generate(`{
"models": ["my-free-tier"],
"aliases": {"gpt-3.5-turbo": "my-free-tier"},
"duration": "30min"
}`)
		if s, out := e.chat(key, "gpt-3.5-turbo"); s != 200 {
			t.Fatalf("aliased model: %d %v", s, out)
		}
		if body := string(e.mock.LastRequest().Body); !strings.Contains(body, `"model":"HuggingFaceH4/zephyr-7b-beta"`) {
			t.Fatalf("alias did not route to my-free-tier: %s", body)
		}
		// Access group example, verbatim, comment and trailing comma included.
		status, out := e.do("POST", "/key/generate", "sk-1234", "{\"models\": [\"beta-models\"], # 👈 Model Access Group\n\"max_budget\": 0,}")
		if status != 200 {
			t.Fatalf("access-group key: %d %v", status, out)
		}
		// Its budget is $0, and a key whose spend has reached its budget is
		// refused (LiteLLM: spend >= max_budget), even for a free model.
		if s, out := e.do("POST", "/v1/embeddings", out["key"].(string), `{"model":"text-embedding-ada-002","input":"x"}`); s != 400 || !strings.Contains(toJSON(out), "budget_exceeded") {
			t.Fatalf("a $0 key: %d %v", s, out)
		}
		group := e.generate(`{"models": ["beta-models"]}`)
		if s, out := e.do("POST", "/v1/embeddings", group, `{"model":"text-embedding-ada-002","input":"x"}`); s != 200 {
			t.Fatalf("model in access group: %d %v", s, out)
		}
		if s, _ := e.chat(group, "gpt-4"); s != 403 {
			t.Fatalf("model outside access group: %d", s)
		}
		_, models := e.do("GET", "/v1/models", group, "")
		if got := toJSON(models["data"]); !strings.Contains(got, "text-embedding-ada-002") || strings.Contains(got, "gpt-4") {
			t.Fatalf("/v1/models for an access-group key: %s", got)
		}
	})
}

func TestUpperboundAndDefaults(t *testing.T) {
	cfg := seedConfig + `  default_key_generate_params:
    max_budget: 1.5000
    models: ["gpt-4"]
    duration:
    metadata: {"setting":"default"}
    team_id: "core-infra"
`
	engines(t, cfg, func(t *testing.T, e *env) {
		_, out := e.do("POST", "/key/generate", "sk-1234", `{"max_budget": 200}`)
		if out["max_budget"] != 100.0 {
			t.Errorf("max_budget 200 with an upper bound of 100 gave %v", out["max_budget"])
		}
		if out["team_id"] != "core-infra" || toJSON(out["models"]) != `["gpt-4"]` || out["metadata"].(map[string]any)["setting"] != "default" {
			t.Errorf("defaults not applied: %v", out)
		}
		exp, _ := time.Parse(time.RFC3339, out["expires"].(string))
		if d := time.Until(exp); d < 29*24*time.Hour || d > 31*24*time.Hour {
			t.Errorf("duration not bounded to 30d: expires in %v", d)
		}
		_, out = e.do("POST", "/key/generate", "sk-1234", `{"duration": "365d", "max_budget": 5}`)
		exp, _ = time.Parse(time.RFC3339, out["expires"].(string))
		if d := time.Until(exp); d > 31*24*time.Hour || out["max_budget"] != 5.0 {
			t.Errorf("365d not clamped to 30d (%v) or 5 changed (%v)", d, out["max_budget"])
		}
	})
}

func TestBadInputWritesNothing(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		e.generate(`{"key_alias": "taken"}`)
		tests := []struct {
			name, path, body, param string
		}{
			{"wrong type", "/key/generate", `{"max_budget": "ten"}`, "max_budget"},
			{"negative budget", "/key/generate", `{"max_budget": -1}`, "max_budget"},
			{"negative rpm", "/key/generate", `{"rpm_limit": -5}`, "rpm_limit"},
			{"unknown field", "/key/generate", `{"max_budgett": 1}`, "max_budgett"},
			{"bad duration", "/key/generate", `{"duration": "20 parsecs"}`, "duration"},
			{"bad budget_duration", "/key/generate", `{"budget_duration": "0d"}`, "budget_duration"},
			{"duplicate alias", "/key/generate", `{"key_alias": "taken"}`, "key_alias"},
			{"models not a list", "/key/generate", `{"models": "gpt-4"}`, "models"},
			{"bad model budget", "/key/generate", `{"model_max_budget": {"gpt-4": "lots"}}`, "model_max_budget"},
			{"malformed JSON", "/key/generate", `{"models": [`, ""},
			{"bad role", "/user/new", `{"user_id": "x", "user_role": "overlord"}`, "user_role"},
			{"negative team budget", "/team/new", `{"team_id": "t", "max_budget": -3}`, "max_budget"},
			{"bad member role", "/team/new", `{"team_id": "t", "members_with_roles": [{"user_id": "u", "role": "king"}]}`, "members_with_roles"},
			{"customer without id", "/customer/new", `{"max_budget": 1}`, "user_id"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				status, out := e.do("POST", tt.path, "sk-1234", tt.body)
				if status != 400 || errParam(out) != tt.param {
					t.Fatalf("got %d %v, want 400 naming %q", status, out, tt.param)
				}
			})
		}
		snap, _ := e.store.LoadAll(context.Background())
		if len(snap.Keys) != 1 || len(snap.Users) != 0 || len(snap.Teams) != 0 || len(snap.EndUsers) != 0 {
			t.Fatalf("bad input wrote rows: %d keys %d users %d teams %d end users", len(snap.Keys), len(snap.Users), len(snap.Teams), len(snap.EndUsers))
		}
		_, total, _ := e.store.ListAudit(context.Background(), store.Page{})
		if total != 1 {
			t.Fatalf("audit has %d entries, want only the one good write", total)
		}
	})
}

func TestKeyOperations(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		key := e.generate(`{"key_alias": "svc-a", "user_id": "u1"}`)
		for i := range 4 {
			e.generate(`{"user_id": "u` + string(rune('1'+i%2)) + `"}`)
		}
		_, out := e.do("GET", "/key/list?user_id=u1&page=1&size=2", "sk-1234", "")
		if out["total_count"] != 3.0 || len(out["keys"].([]any)) != 2 || out["total_pages"] != 2.0 {
			t.Fatalf("key/list: %v", out)
		}
		_, out = e.do("GET", "/key/list?key_alias=svc", "sk-1234", "")
		if toJSON(out["keys"]) != `["`+sha(key)+`"]` {
			t.Fatalf("key/list by alias: %v", out)
		}

		if s, _ := e.do("POST", "/key/block", "sk-1234", `{"key": "`+key+`"}`); s != 200 {
			t.Fatal("block failed")
		}
		if s, out := e.chat(key, "gpt-4"); s != 401 || !strings.Contains(toJSON(out), "blocked") {
			t.Fatalf("blocked key: %d %v", s, out)
		}
		e.do("POST", "/key/unblock", "sk-1234", `{"key": "`+key+`"}`)
		if s, _ := e.chat(key, "gpt-4"); s != 200 {
			t.Fatalf("unblocked key: %d", s)
		}

		status, out := e.do("POST", "/key/regenerate", "sk-1234", `{"key": "`+key+`"}`)
		fresh, _ := out["key"].(string)
		if status != 200 || fresh == "" || fresh == key || out["key_alias"] != "svc-a" {
			t.Fatalf("regenerate: %d %v", status, out)
		}
		if s, _ := e.chat(key, "gpt-4"); s != 401 {
			t.Fatalf("old key after regenerate: %d", s)
		}
		if s, _ := e.chat(fresh, "gpt-4"); s != 200 {
			t.Fatalf("new key after regenerate: %d", s)
		}
		// Delete by alias.
		if s, out := e.do("POST", "/key/delete", "sk-1234", `{"key_aliases": ["svc-a"]}`); s != 200 || toJSON(out["deleted_keys"]) != `["svc-a"]` {
			t.Fatalf("delete by alias: %d %v", s, out)
		}
		if s, _ := e.chat(fresh, "gpt-4"); s != 401 {
			t.Fatal("key deleted by alias still works")
		}
		// Expiry: a key whose duration has passed is refused.
		short := e.generate(`{"duration": "1s"}`)
		deadline := time.Now().Add(10 * time.Second)
		for {
			s, out := e.chat(short, "gpt-4")
			if s == 401 {
				if !strings.Contains(toJSON(out), "expired") {
					t.Fatalf("expired key message: %v", out)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("key with duration 1s never expired")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

func TestUsersTeamsRoles(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		// /user/new from the seed, verbatim.
		status, out := e.do("POST", "/user/new", "sk-1234", `{
"user_id": "ishaan1",
"user_email": "ishaan@litellm.ai",
"user_role": "admin",
"team_id": "cto-team",
"max_budget": 20,
"budget_duration": "1h"

}`)
		if status != 200 || out["user_id"] != "ishaan1" || !strings.HasPrefix(out["key"].(string), "sk-") || out["max_budget"] != 20.0 {
			t.Fatalf("user/new: %d %v", status, out)
		}
		adminKey := out["key"].(string)
		// An admin user's key manages other keys.
		if s, _ := e.do("POST", "/key/generate", adminKey, `{"user_id": "someone-else"}`); s != 200 {
			t.Fatalf("admin user's key could not generate: %d", s)
		}
		_, out = e.do("GET", "/user/info?user_id=ishaan1", "sk-1234", "")
		if out["user_info"].(map[string]any)["user_role"] != "proxy_admin" || len(out["keys"].([]any)) != 1 {
			t.Fatalf("user/info: %v", out)
		}

		// An internal user manages only its own keys.
		_, out = e.do("POST", "/user/new", "sk-1234", `{"user_id": "dev", "user_role": "internal_user"}`)
		devKey := out["key"].(string)
		if s, _ := e.do("POST", "/key/generate", devKey, `{"user_id": "ishaan1"}`); s != 403 {
			t.Fatalf("internal user generated a key for another user: %d", s)
		}
		s, out := e.do("POST", "/key/generate", devKey, `{"models": ["gpt-4"]}`)
		if s != 200 || out["user_id"] != "dev" {
			t.Fatalf("internal user's own key: %d %v", s, out)
		}
		if s, _ := e.do("POST", "/key/delete", devKey, `{"keys": ["`+adminKey+`"]}`); s != 403 {
			t.Fatalf("internal user deleted another user's key: %d", s)
		}
		_, out = e.do("GET", "/key/list", devKey, "")
		if out["total_count"] != 2.0 {
			t.Fatalf("internal user sees %v keys, want its own 2", out["total_count"])
		}
		if s, _ := e.do("GET", "/user/list", devKey, ""); s != 403 {
			t.Fatalf("internal user listed users: %d", s)
		}
		// Viewers only read.
		_, out = e.do("POST", "/user/new", "sk-1234", `{"user_id": "auditor", "user_role": "proxy_admin_viewer"}`)
		viewer := out["key"].(string)
		if s, _ := e.do("GET", "/user/list", viewer, ""); s != 200 {
			t.Fatalf("viewer could not list users: %d", s)
		}
		if s, _ := e.do("POST", "/key/generate", viewer, `{}`); s != 403 {
			t.Fatalf("viewer generated a key: %d", s)
		}
		if s, _ := e.do("POST", "/user/new", "sk-nope", `{}`); s != 401 {
			t.Fatalf("invalid key on the management API: %d", s)
		}

		// Teams bound their keys' models; a blocked team's keys are refused.
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "core-infra", "models": ["gpt-4"], "max_budget": 50}`); s != 200 {
			t.Fatalf("team/new: %d %v", s, out)
		}
		if s, out := e.do("POST", "/key/generate", "sk-1234", `{"team_id": "core-infra", "models": ["gpt-3.5-turbo"]}`); s != 400 || errParam(out) != "models" {
			t.Fatalf("key with a model outside its team's: %d %v", s, out)
		}
		teamKey := e.generate(`{"team_id": "core-infra"}`)
		if s, _ := e.chat(teamKey, "gpt-4"); s != 200 {
			t.Fatalf("team key on team model: %d", s)
		}
		if s, _ := e.chat(teamKey, "gpt-3.5-turbo"); s != 403 {
			t.Fatalf("team key outside team models: %d", s)
		}
		e.do("POST", "/team/member_add", "sk-1234", `{"team_id": "core-infra", "member": {"user_id": "dev", "role": "user"}}`)
		_, out = e.do("GET", "/team/info?team_id=core-infra", "sk-1234", "")
		if toJSON(out["team_info"].(map[string]any)["members_with_roles"]) != `[{"role":"user","user_id":"dev"}]` {
			t.Fatalf("member_add: %v", out)
		}
		e.do("POST", "/team/block", "sk-1234", `{"team_id": "core-infra"}`)
		if s, _ := e.chat(teamKey, "gpt-4"); s != 401 {
			t.Fatalf("key of a blocked team: %d", s)
		}
		e.do("POST", "/team/unblock", "sk-1234", `{"team_id": "core-infra"}`)
		e.do("POST", "/team/member_delete", "sk-1234", `{"team_id": "core-infra", "user_id": "dev"}`)
		if s, _ := e.chat(teamKey, "gpt-4"); s != 200 {
			t.Fatalf("key of an unblocked team: %d", s)
		}
		if s, out := e.do("POST", "/team/delete", "sk-1234", `{"team_ids": ["core-infra"]}`); s != 200 {
			t.Fatalf("team/delete: %d %v", s, out)
		}
		if s, out := e.do("POST", "/user/delete", "sk-1234", `{"user_ids": ["auditor"]}`); s != 200 {
			t.Fatalf("user/delete: %d %v", s, out)
		}
	})
}

func TestCustomersAndAudit(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		for _, prefix := range []string{"/customer", "/end_user"} {
			id := "acme" + strings.TrimPrefix(prefix, "/")
			if s, out := e.do("POST", prefix+"/new", "sk-1234", `{"user_id": "`+id+`", "alias": "Acme", "max_budget": 5}`); s != 200 {
				t.Fatalf("%s/new: %d %v", prefix, s, out)
			}
			e.do("POST", prefix+"/block", "sk-1234", `{"user_ids": ["`+id+`"]}`)
			_, out := e.do("GET", prefix+"/info?end_user_id="+id, "sk-1234", "")
			if out["blocked"] != true || out["alias"] != "Acme" || out["max_budget"] != 5.0 {
				t.Fatalf("%s/info: %v", prefix, out)
			}
			if s, _ := e.do("POST", prefix+"/update", "sk-1234", `{"user_id": "`+id+`", "max_budget": 7}`); s != 200 {
				t.Fatalf("%s/update: %d", prefix, s)
			}
		}
		_, out := e.do("GET", "/audit/list", "sk-1234", "")
		if out["total_count"].(float64) < 6 {
			t.Fatalf("audit entries: %v", out["total_count"])
		}
		first := out["audit_logs"].([]any)[0].(map[string]any)
		if first["changed_by"] != "master_key" || first["table_name"] != "end_user" || first["before_value"] == "" {
			t.Fatalf("audit entry: %v", first)
		}
	})
}

// TestRawKeysAreNeverStored scans the SQLite file for the keys this test
// created: only their hashes may be there.
func TestRawKeysAreNeverStored(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tollgate.db")
	st, err := sqlstore.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, seedConfig, st)
	var raws []string
	for range 3 {
		raws = append(raws, e.generate(`{"metadata": {"note": "x"}}`))
	}
	_, out := e.do("POST", "/key/regenerate", "sk-1234", `{"key": "`+raws[0]+`"}`)
	raws = append(raws, out["key"].(string))
	custom := "sk-my-own-custom-key-123"
	e.generate(`{"key": "` + custom + `"}`)
	raws = append(raws, custom, "sk-1234")
	st.Close()
	var blob []byte
	files, _ := filepath.Glob(filepath.Join(dir, "tollgate.db*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		blob = append(blob, b...)
	}
	for _, raw := range raws {
		if bytes.Contains(blob, []byte(raw)) {
			t.Errorf("raw key %s...%s is stored in the database", raw[:3], raw[len(raw)-2:])
		}
	}
	if !bytes.Contains(blob, []byte(sha(custom))) {
		t.Error("the key's hash is not stored (the scan would prove nothing)")
	}
}

// TestStaticKeys is seed 001's strict API key policy beside database keys.
func TestStaticKeys(t *testing.T) {
	cfg := `
llm:
  policies:
    apiKey:
      mode: strict
      keys:
      - key: sk-alice-abc123def456
        metadata:
          user: alice
      - keyHash: sha256:` + sha("sk-bob-xyz789uvw012") + `
        metadata:
          user: bob
  models:
  - name: "*"
    provider: openAI
    params:
      apiKey: "upstream"
      hostOverride: "{{UP}}"
`
	engines(t, cfg, func(t *testing.T, e *env) {
		tests := []struct {
			key    string
			status int
		}{
			{"sk-alice-abc123def456", 200},
			{"sk-bob-xyz789uvw012", 200},
			{"invalid-key", 401},
			{"", 401},
		}
		for _, tt := range tests {
			if s, out := e.chat(tt.key, "gpt-3.5-turbo"); s != tt.status {
				t.Errorf("key %q: %d %v, want %d", tt.key, s, out, tt.status)
			}
		}
		if body := string(e.mock.LastRequest().Body); !strings.Contains(body, `"model":"gpt-3.5-turbo"`) {
			t.Errorf("wildcard model not forwarded as asked: %s", body)
		}
	})
}
