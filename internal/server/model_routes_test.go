package server

import (
	"slices"
	"sort"
	"testing"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

const modelRoutesConfig = `
model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}", rpm: 10, tpm: 1000}
    model_info: {access_groups: ["beta-models"]}
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-haiku-20241022, api_base: "{{UP}}"}
  - model_name: "openai/gpt-4o*"
    litellm_params: {model: "openai/gpt-4o*", api_base: "{{UP}}"}
litellm_settings:
  fallbacks: [{"gpt-4": ["claude"]}]
general_settings:
  master_key: sk-1234
`

// modelIDs lists the ids of a /models answer.
func modelIDs(out map[string]any) []string {
	var ids []string
	data, _ := out["data"].([]any)
	for _, d := range data {
		ids = append(ids, d.(map[string]any)["id"].(string))
	}
	sort.Strings(ids)
	return ids
}

// TestModelsFilters: /models answers LiteLLM's filters.
func TestModelsFilters(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, modelRoutesConfig)
	beta := newKey(t, e, `{"models": ["beta-models"]}`)
	e.post(t, "/team/new", "sk-1234", `{"team_id": "t1", "models": ["claude"]}`)

	tests := []struct {
		name, query, key string
		want             func(ids []string) bool
	}{
		{"plain: groups and the wildcard's known models, not the route", "", "sk-1234", func(ids []string) bool {
			return slices.Contains(ids, "gpt-4") && slices.Contains(ids, "claude") && slices.Contains(ids, "openai/gpt-4o") &&
				!slices.Contains(ids, "openai/gpt-4o*") && !slices.Contains(ids, "beta-models")
		}},
		{"return_wildcard_routes", "?return_wildcard_routes=True", "sk-1234", func(ids []string) bool {
			return slices.Contains(ids, "openai/gpt-4o*") && slices.Contains(ids, "openai/gpt-4o")
		}},
		{"include_model_access_groups", "?include_model_access_groups=true", "sk-1234", func(ids []string) bool {
			return slices.Contains(ids, "beta-models") && slices.Contains(ids, "gpt-4")
		}},
		{"only_model_access_groups", "?only_model_access_groups=True", "sk-1234", func(ids []string) bool {
			return slices.Equal(ids, []string{"beta-models"})
		}},
		{"a key limited to an access group", "", beta, func(ids []string) bool { return slices.Equal(ids, []string{"gpt-4"}) }},
		{"its access groups", "?only_model_access_groups=True", beta, func(ids []string) bool { return slices.Equal(ids, []string{"beta-models"}) }},
		{"team_id", "?team_id=t1", "sk-1234", func(ids []string) bool { return slices.Equal(ids, []string{"claude"}) }},
	}
	for _, tt := range tests {
		code, out := e.getJSON(t, "/v1/models"+tt.query, tt.key)
		if ids := modelIDs(out); code != 200 || !tt.want(ids) {
			t.Errorf("%s: %d %v", tt.name, code, ids)
		}
	}

	code, out := e.getJSON(t, "/models?include_metadata=true", "sk-1234")
	var fb []any
	for _, d := range out["data"].([]any) {
		if m := d.(map[string]any); m["id"] == "gpt-4" {
			fb, _ = m["metadata"].(map[string]any)["fallbacks"].([]any)
		}
	}
	if code != 200 || len(fb) != 1 || fb[0] != "claude" {
		t.Errorf("include_metadata: %d fallbacks %v", code, fb)
	}

	for _, q := range []string{"?only_model_access_groups=maybe", "?fallback_type=sideways", "?scope=everything"} {
		code, out := e.getJSON(t, "/v1/models"+q, "sk-1234")
		if typ, msg := errorOf(out); code != 400 || typ == "" || msg == "" {
			t.Errorf("%s: %d %v, want an OpenAI-shaped 400", q, code, out)
		}
	}
	if code, out := e.getJSON(t, "/v1/models?team_id=nope", "sk-1234"); code != 404 {
		t.Errorf("unknown team: %d %v", code, out)
	}
}

// TestModelGroupInfo: /model_group/info describes each group in LiteLLM's
// ModelGroupInfo shape, only the ones the key may use.
func TestModelGroupInfo(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, modelRoutesConfig)
	beta := newKey(t, e, `{"models": ["beta-models"]}`)
	code, out := e.getJSON(t, "/model_group/info", "sk-1234")
	data, _ := out["data"].([]any)
	groups := map[string]map[string]any{}
	for _, d := range data {
		g := d.(map[string]any)
		groups[g["model_group"].(string)] = g
	}
	g := groups["gpt-4"]
	if code != 200 || len(groups) != 3 || g == nil {
		t.Fatalf("%d %v", code, out)
	}
	if p, _ := g["providers"].([]any); len(p) != 1 || p[0] != "openai" || g["tpm"] != 1000.0 || g["rpm"] != 10.0 || g["mode"] != "chat" ||
		g["input_cost_per_token"] == nil || g["max_input_tokens"] == nil || g["supports_vision"] != false {
		t.Errorf("gpt-4: %v", g)
	}
	code, out = e.getJSON(t, "/model_group/info", beta)
	if data, _ := out["data"].([]any); code != 200 || len(data) != 1 || data[0].(map[string]any)["model_group"] != "gpt-4" {
		t.Errorf("a key limited to beta-models: %d %v", code, out)
	}
	code, out = e.getJSON(t, "/model_group/info?model_group=claude", "sk-1234")
	if data, _ := out["data"].([]any); code != 200 || len(data) != 1 {
		t.Errorf("model_group=claude: %d %v", code, out)
	}
}

// TestModelRoutesByRole calls the read-only routes of readRoutes
// (internal/admin/policy.go) as each role and without a key.
func TestModelRoutesByRole(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, modelRoutesConfig)
	e.post(t, "/team/new", "sk-1234", `{"team_id": "own", "models": ["gpt-4"]}`)
	e.post(t, "/team/new", "sk-1234", `{"team_id": "foreign", "models": ["claude"]}`)
	keys := map[string]string{}
	for _, role := range []string{"proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"} {
		if resp, out := e.post(t, "/user/new", "sk-1234", `{"user_id": "u-`+role+`", "user_role": "`+role+`"}`); resp.StatusCode != 200 {
			t.Fatalf("/user/new %s: %d %v", role, resp.StatusCode, out)
		}
		e.post(t, "/team/member_add", "sk-1234", `{"team_id": "own", "member": {"user_id": "u-`+role+`", "role": "user"}}`)
		keys[role] = newKey(t, e, `{"user_id": "u-`+role+`", "team_id": "own"}`)
	}
	keys["no key"] = ""
	type want map[string]int
	tests := []struct {
		path string
		want want
	}{
		{"/v1/models", want{"proxy_admin": 200, "proxy_admin_viewer": 200, "internal_user": 200, "internal_user_viewer": 200, "no key": 401}},
		{"/v1/models?team_id=own", want{"proxy_admin": 200, "proxy_admin_viewer": 200, "internal_user": 200, "internal_user_viewer": 200, "no key": 401}},
		{"/v1/models?team_id=foreign", want{"proxy_admin": 200, "proxy_admin_viewer": 200, "internal_user": 403, "internal_user_viewer": 403, "no key": 401}},
		{"/model_group/info", want{"proxy_admin": 200, "proxy_admin_viewer": 200, "internal_user": 200, "internal_user_viewer": 200, "no key": 401}},
		{"/routes", want{"proxy_admin": 200, "proxy_admin_viewer": 200, "internal_user": 200, "internal_user_viewer": 200, "no key": 401}},
		{"/health/readiness/details", want{"proxy_admin": 200, "proxy_admin_viewer": 200, "internal_user": 200, "internal_user_viewer": 200, "no key": 401}},
		{"/health/readiness", want{"proxy_admin": 200, "proxy_admin_viewer": 200, "internal_user": 200, "internal_user_viewer": 200, "no key": 200}},
	}
	for _, tt := range tests {
		for role, key := range keys {
			code, out := e.getJSON(t, tt.path, key)
			if code != tt.want[role] {
				t.Errorf("%s as %s: %d %v, want %d", tt.path, role, code, out, tt.want[role])
			}
			if code >= 400 {
				if typ, msg := errorOf(out); typ == "" || msg == "" {
					t.Errorf("%s as %s: %d without an OpenAI-shaped error: %v", tt.path, role, code, out)
				}
			}
		}
	}
	// A team's models for a member: her own team's, narrowed by it.
	if code, out := e.getJSON(t, "/v1/models?team_id=own", keys["internal_user"]); code != 200 || !slices.Equal(modelIDs(out), []string{"gpt-4"}) {
		t.Errorf("own team's models: %d %v", code, modelIDs(out))
	}
	if code, out := e.getJSON(t, "/v1/models?team_id=foreign", keys["proxy_admin_viewer"]); code != 200 || !slices.Equal(modelIDs(out), []string{"claude"}) {
		t.Errorf("a viewer's look at another team: %d %v", code, modelIDs(out))
	}
}

// TestReadinessAndRoutes: /health/readiness answers LiteLLM's fields, and
// /routes lists what the server registered, in LiteLLM's shape.
func TestReadinessAndRoutes(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, modelRoutesConfig)
	code, out := e.getJSON(t, "/health/readiness", "")
	for _, f := range []string{"status", "db", "cache", "litellm_version", "success_callbacks", "log_level", "is_detailed_debug"} {
		if _, ok := out[f]; !ok {
			t.Errorf("readiness lacks %s: %v", f, out)
		}
	}
	if code != 200 || out["status"] != "healthy" || out["db"] != "connected" || out["litellm_version"] != Version || out["cache"] != nil {
		t.Errorf("readiness: %d %v", code, out)
	}
	code, out = e.getJSON(t, "/routes", "sk-1234")
	routes, _ := out["routes"].([]any)
	paths := map[string][]any{}
	for _, r := range routes {
		m := r.(map[string]any)
		paths[m["path"].(string)], _ = m["methods"].([]any)
	}
	if code != 200 || len(paths) < 50 || len(paths["/key/generate"]) != 1 || paths["/key/generate"][0] != "POST" || paths["/model_group/info"] == nil || paths["/routes"] == nil {
		t.Errorf("/routes: %d, %d paths, /key/generate %v", code, len(paths), paths["/key/generate"])
	}
}
