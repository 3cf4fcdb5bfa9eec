package config

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// warnedPaths maps each key warning to its key path with list indices
// abstracted ("model_list[].litellm_params.tags"), and checks that every
// warning names file:line:col.
func warnedPaths(t *testing.T, file string, warnings []string) map[string]string {
	t.Helper()
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(file) + `:\d+:\d+: (\S+) (is accepted for LiteLLM|is not a key Tollgate knows)`)
	idx := regexp.MustCompile(`\[\d+\]`)
	named := regexp.MustCompile(`^callback_settings\.[^.]+\.`) // a map's entries share one section
	out := map[string]string{}
	for _, w := range warnings {
		m := re.FindStringSubmatch(w)
		if m == nil {
			continue
		}
		out[named.ReplaceAllString(idx.ReplaceAllString(m[1], "[]"), "callback_settings.<name>.")] = w
	}
	return out
}

// TestLiteLLMExampleProxyConfigLoads loads a file built like LiteLLM's own
// example proxy configs: Vertex AI deployments, tags, alerting, a key
// management system, pass-through endpoints and callbacks. It loads; what
// Tollgate does not act on is a warning naming the key and its place.
func TestLiteLLMExampleProxyConfigLoads(t *testing.T) {
	t.Setenv("TG_EXAMPLE_OPENAI_API_BASE", "https://openai.example.com/v1")
	t.Setenv("TG_EXAMPLE_ANTHROPIC_API_KEY", "sk-ant-example")
	const file = "testdata/litellm_proxy_example.yaml"
	cfg, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Deployments) != 6 {
		t.Fatalf("deployments = %d", len(cfg.Deployments))
	}
	if d := cfg.Deployments[0]; d.Provider != "vertex_ai" || d.Model != "gemini-1.5-pro" || d.ModelName != "gemini-vision" {
		t.Errorf("vertex deployment = %+v", d)
	}
	if d := cfg.Deployments[3]; d.ID != "team-a-model" || d.APIBase != "https://openai.example.com/v1" {
		t.Errorf("tagged deployment = %+v", d)
	}
	if cfg.MasterKey() != "sk-example-1234" {
		t.Errorf("master key = %q", cfg.MasterKey())
	}
	got := warnedPaths(t, file, cfg.Warnings)
	want := []string{
		"general_settings.alerting", "general_settings.alerting_threshold", "general_settings.alert_to_webhook_url",
		"general_settings.key_management_system",
		"litellm_settings.include_cost_in_streaming_usage", "router_settings.enable_tag_filtering",
	}
	if keys := sortedKeys(got); !slices.Equal(keys, sorted(want)) {
		t.Errorf("warned keys:\n got %q\nwant %q", keys, sorted(want))
	}
	// litellm_params.tags are request tags for spend tracking: kept.
	if tags := cfg.Deployments[3].Tags; len(tags) == 0 {
		t.Errorf("tagged deployment's tags = %q", tags)
	}
	// A vertex_ai deployment's project, location and credentials are
	// kept: they serve /vertex_ai/* pass-through calls.
	if v := cfg.Deployments[0].Vertex; v == nil || *v != (Vertex{Project: "demo-project", Location: "us-central1", Credentials: "/etc/tollgate/vertex-demo.json"}) {
		t.Errorf("vertex deployment's credentials = %+v", v)
	}
	// pass_through_endpoints is acted on; its unset target is a warning.
	if eps := cfg.GeneralSettings.PassThroughEndpoints; len(eps) != 1 || eps[0].Path != "/azure-passthrough" || !eps[0].IncludeSubpath || eps[0].Target != "" {
		t.Errorf("pass_through_endpoints = %+v", eps)
	}
	if !slices.ContainsFunc(cfg.Warnings, func(w string) bool { return strings.HasPrefix(w, file+":60:11:") && strings.Contains(w, "no target") }) {
		t.Errorf("no warning for the unset pass-through target in %q", cfg.Warnings)
	}
	if cfg.CustomAuth == nil || cfg.CustomAuth.Python == "" {
		t.Errorf("custom_auth's Python function not taken: %+v", cfg.CustomAuth)
	}
}

// TestEveryDocumentedKeyLoads loads a file holding every key LiteLLM
// documents for its proxy config, plus a few free-form ones. It loads, every
// key Tollgate acts on is taken without a warning, and every other key is
// exactly one warning.
func TestEveryDocumentedKeyLoads(t *testing.T) {
	const file = "testdata/litellm_all_keys.yaml"
	cfg, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	got := warnedPaths(t, file, cfg.Warnings)
	var want []string
	for _, s := range Sections {
		for _, k := range s.Keys {
			want = append(want, join(s.Path, k.Name))
		}
	}
	want = append(want, // free-form keys LiteLLM passes on or keeps
		"model_list[].litellm_params.temperature", "model_list[].model_info.my_own_label",
		"litellm_settings.default_key_generate_params.key_alias",
		"litellm_settings.upperbound_key_generate_params.model_max_budget")
	if keys := sortedKeys(got); !slices.Equal(keys, sorted(want)) {
		missing, extra := diff(sorted(want), keys)
		t.Errorf("warned keys differ: not warned %q; warned but not expected %q", missing, extra)
	}
	// Every key Tollgate acts on is in the file, and none warns.
	src, _ := os.ReadFile(file)
	for _, s := range Sections {
		for _, r := range s.KeyRows() {
			if r.Status == StatusWarned || r.Section == "" || strings.HasPrefix(r.Section, "litellm_settings.") && strings.HasSuffix(r.Section, "_params") {
				continue
			}
			if !regexp.MustCompile(`(?m)^[\s-]*` + regexp.QuoteMeta(r.Key) + `:`).Match(src) {
				t.Errorf("%s.%s (acted on) is not in %s", r.Section, r.Key, file)
			}
		}
	}
	d := cfg.Deployments[0]
	if d.Provider != "azure" || d.Model != "gpt-4o-eu" || d.RPM != 100 || d.ID != "gpt-4o-eu" {
		t.Errorf("deployment = %+v", d)
	}
	if cfg.RedisURL() != "redis://cache.example:6379/0" || cfg.Routing().Strategy != "usage-based-routing" {
		t.Errorf("redis %q strategy %q", cfg.RedisURL(), cfg.Routing().Strategy)
	}
}

// TestIssue22KeysAreWarnings: each key the issue found fatal loads alone as
// one warning that names it with file:line:col.
func TestIssue22KeysAreWarnings(t *testing.T) {
	model := func(section, kv string) string {
		y := "model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/a\n"
		if section == "model_info" {
			y += "    model_info:\n"
		}
		return y + "      " + kv + "\n"
	}
	tests := []struct {
		name, yaml, key, at string
	}{
		{"output_cost_per_pixel", model("litellm_params", "output_cost_per_pixel: 0.1"), "litellm_params.output_cost_per_pixel", ":5:7:"},
		{"mock_timeout", model("litellm_params", "mock_timeout: true"), "litellm_params.mock_timeout", ":5:7:"},
		{"tag_regex", model("litellm_params", "tag_regex: [\"^team\"]"), "litellm_params.tag_regex", ":5:7:"},
		{"health_check_timeout", model("model_info", "health_check_timeout: 5"), "model_info.health_check_timeout", ":6:7:"},
		{"default_team_settings", "litellm_settings:\n  default_team_settings:\n    - team_id: t1\n      success_callback: [langfuse]\n", "litellm_settings.default_team_settings", ":2:3:"},
		{"finetune_settings", "finetune_settings:\n  - custom_llm_provider: azure\n    api_key: x\n", "finetune_settings", ":1:1:"},
		{"files_settings", "files_settings:\n  - custom_llm_provider: openai\n", "files_settings", ":1:1:"},
		{"store_model_in_db", "general_settings:\n  store_model_in_db: true\n", "general_settings.store_model_in_db", ":2:3:"},
		{"proxy_budget_rescheduler_min_time", "general_settings:\n  proxy_budget_rescheduler_min_time: 60\n", "general_settings.proxy_budget_rescheduler_min_time", ":2:3:"},
		{"proxy_budget_rescheduler_max_time", "general_settings:\n  proxy_budget_rescheduler_max_time: 64\n", "general_settings.proxy_budget_rescheduler_max_time", ":2:3:"},
		{"database_connection_pool_limit", "general_settings:\n  database_connection_pool_limit: 10\n", "general_settings.database_connection_pool_limit", ":2:3:"},
		{"guardrails", "general_settings:\n  guardrails: [{guardrail_name: g}]\n", "general_settings.guardrails", ":2:3:"},
		{"mcp_servers", "general_settings:\n  mcp_servers: {z: {url: 'http://m'}}\n", "general_settings.mcp_servers", ":2:3:"},
		{"key_management_system", "general_settings:\n  key_management_system: google_kms\n", "general_settings.key_management_system", ":2:3:"},
		{"ui_access_mode", "general_settings:\n  ui_access_mode: admin_only\n", "general_settings.ui_access_mode", ":2:3:"},
		{"enable_tag_filtering", "general_settings:\n  enable_tag_filtering: true\n", "general_settings.enable_tag_filtering", ":2:3:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("c.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatalf("not loaded: %v", err)
			}
			if len(cfg.Warnings) != 1 || !strings.HasPrefix(cfg.Warnings[0], "c.yaml"+tt.at) || !strings.Contains(cfg.Warnings[0], tt.key) {
				t.Fatalf("warnings = %q, want one naming %s at %s", cfg.Warnings, tt.key, tt.at)
			}
		})
	}
}

// TestTyposOfActedOnKeysFail: a near miss of a key Tollgate acts on stops the
// start with file:line:col and the key meant; a suggestion never names the
// key itself (it once said `unknown field "tags" (did you mean "tags"?)`).
func TestTyposOfActedOnKeysFail(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"litellm_params.modle", "model_list:\n  - model_name: a\n    litellm_params:\n      modle: openai/a\n",
			[]string{"t.yaml:4:7:", `unknown field "modle"`, `did you mean "model"?`}},
		{"litellm_params.api_bsae", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/a, api_bsae: 'http://x'}\n",
			[]string{"t.yaml:3:39:", `"api_bsae"`, `did you mean "api_base"?`}},
		{"model_info.acess_groups", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/a}\n    model_info:\n      acess_groups: [beta]\n",
			[]string{"t.yaml:5:7:", `did you mean "access_groups"?`}},
		{"model_nme", "model_list:\n  - model_nme: a\n", []string{"t.yaml:2:5:", `did you mean "model_name"?`}},
		{"top-level litellm_setings", "litellm_setings:\n  max_budget: 10\n", []string{"t.yaml:1:1:", `did you mean "litellm_settings"?`}},
		{"general_settings.master_kye", "general_settings:\n  master_kye: sk-1\n", []string{"t.yaml:2:3:", `did you mean "master_key"?`}},
		{"router_settings.routing_stratgy", "router_settings:\n  routing_stratgy: least-busy\n", []string{"t.yaml:2:3:", `did you mean "routing_strategy"?`}},
		{"litellm_settings.max_budgte", "litellm_settings:\n  max_budgte: 10\n", []string{"t.yaml:2:3:", `did you mean "max_budget"?`}},
		{"key params max_budgt", "litellm_settings:\n  upperbound_key_generate_params:\n    max_budgt: 10\n", []string{"t.yaml:3:5:", `did you mean "max_budget"?`}},
		{"wrong type max_budget", "litellm_settings:\n  max_budget: lots\n", []string{"t.yaml:2:", "max_budget"}},
		{"wrong type access_groups", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/a}\n    model_info: {access_groups: {a: b}}\n", []string{"t.yaml:4:"}},
		{"agentgateway stays strict", "llm:\n  models:\n    - {name: a, provider: openAI, tags: [x]}\n", []string{"t.yaml:3:35:", `unknown field "tags"`}},
		{"agentgateway typo", "llm:\n  polices: {}\n", []string{"t.yaml:2:3:", `did you mean "policies"?`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatal("config accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if m := regexp.MustCompile(`unknown field "([^"]+)" .*did you mean "([^"]+)"`).FindStringSubmatch(err.Error()); m != nil && m[1] == m[2] {
				t.Errorf("suggests the key itself: %v", err)
			}
		})
	}
}

// TestFreeFormKeysNeverFail: keys LiteLLM passes to the provider or keeps as
// metadata load as warnings, short ones included.
func TestFreeFormKeysNeverFail(t *testing.T) {
	cfg, err := Parse("f.yaml", []byte(`model_list:
  - model_name: a
    litellm_params: {model: openai/a, temperature: 0.1, top_p: 1, n: 2, seed: 7, stop: ["x"], user: u}
    model_info: {team: finance, owner: ops, cost_center: 12, mode: chat}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 10 {
		t.Errorf("warnings = %d:\n%s", len(cfg.Warnings), strings.Join(cfg.Warnings, "\n"))
	}
}

func TestProviderNamesAndCustomLLMProvider(t *testing.T) {
	tests := []struct {
		params, provider, model string
	}{
		{"{model: sagemaker/my-endpoint}", "sagemaker", "my-endpoint"},
		{"{model: bedrock/anthropic.claude-3}", "bedrock", "anthropic.claude-3"},
		{"{model: meta-llama/Llama-3-8B}", "openai", "meta-llama/Llama-3-8B"},
		{"{model: meta-llama/Llama-3-8B, custom_llm_provider: hosted_vllm, api_base: 'http://v'}", "hosted_vllm", "meta-llama/Llama-3-8B"},
		{"{model: azure/gpt-4o, custom_llm_provider: azure}", "azure", "gpt-4o"},
	}
	for _, tt := range tests {
		cfg, err := Parse("p.yaml", []byte("model_list:\n  - model_name: a\n    litellm_params: "+tt.params+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		if d := cfg.Deployments[0]; d.Provider != tt.provider || d.Model != tt.model {
			t.Errorf("%s: provider %q model %q", tt.params, d.Provider, d.Model)
		}
	}
}

var update = flag.Bool("update", false, "rewrite docs/litellm-compatibility.md from the key tables")

const (
	docPath    = "../../docs/litellm-compatibility.md"
	beginMark  = "<!-- config-keys: generated by TestCompatibilityDocIsCurrent; go test ./internal/config -run TestCompatibilityDocIsCurrent -update -->\n"
	endMark    = "<!-- end config-keys -->\n"
	sectionFmt = "### %s\n\n%s\n\n| key | type | status | note |\n|---|---|---|---|\n"
)

// renderKeyTables is the config half of the compatibility page, from the
// code's own tables.
func renderKeyTables() string {
	var b strings.Builder
	for _, s := range Sections {
		name := "`" + s.Path + "`"
		if s.Path == "" {
			name = "top level"
		}
		fmt.Fprintf(&b, sectionFmt, name, "Other keys: "+s.Unknown+". Tollgate warns and ignores them, except a near miss of a key it acts on, which stops the start.")
		for _, r := range s.KeyRows() {
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.Key, r.Type, r.Status, strings.ReplaceAll(r.Note, "|", `\|`))
		}
		b.WriteString("\n")
	}
	b.WriteString("### Environment variables Tollgate reads\n\n| variable | type | used for |\n|---|---|---|\n")
	for _, e := range EnvVars {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", e.Name, e.Type, e.Note)
	}
	return b.String()
}

// TestCompatibilityDocIsCurrent fails when docs/litellm-compatibility.md and
// the key tables of this package disagree; -update rewrites the doc.
func TestCompatibilityDocIsCurrent(t *testing.T) {
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	i, j := strings.Index(doc, beginMark), strings.Index(doc, endMark)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q ... %q", docPath, beginMark, endMark)
	}
	want := doc[:i+len(beginMark)] + renderKeyTables() + doc[j:]
	if want == doc {
		return
	}
	if *update {
		if err := os.WriteFile(docPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is out of date with the key tables; run: go test ./internal/config -run TestCompatibilityDocIsCurrent -update", docPath)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return slices.Compact(s)
}

// diff returns what is in a and not b, and in b and not a.
func diff(a, b []string) (onlyA, onlyB []string) {
	for _, x := range a {
		if !slices.Contains(b, x) {
			onlyA = append(onlyA, x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			onlyB = append(onlyB, x)
		}
	}
	return onlyA, onlyB
}

// TestAnchorsAndMergeKeys: LiteLLM configs share litellm_params through YAML
// anchors and merge keys; the keys behind them are judged and decoded too.
func TestAnchorsAndMergeKeys(t *testing.T) {
	cfg, err := Parse("a.yaml", []byte(`model_list:
  - model_name: a
    litellm_params: &base
      model: openai/gpt-4o
      api_base: http://upstream.example
      tags: [shared]
      tag_regex: ["^x$"]
  - model_name: b
    litellm_params:
      <<: *base
      rpm: 10
  - model_name: c
    litellm_params: *base
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Deployments) != 3 || cfg.Deployments[1].APIBase != "http://upstream.example" || cfg.Deployments[1].RPM != 10 || cfg.Deployments[2].Model != "gpt-4o" || len(cfg.Deployments[1].Tags) != 1 || cfg.Deployments[2].Tags[0] != "shared" {
		t.Fatalf("deployments = %+v", cfg.Deployments)
	}
	if len(cfg.Warnings) != 1 || !strings.HasPrefix(cfg.Warnings[0], "a.yaml:7:7: model_list[0].litellm_params.tag_regex") {
		t.Fatalf("warnings = %q", cfg.Warnings)
	}
	if _, err := Parse("a.yaml", []byte("model_list:\n  - model_name: a\n    litellm_params: &base {modle: openai/x}\n")); err == nil || !strings.Contains(err.Error(), `did you mean "model"?`) {
		t.Fatalf("typo behind an anchor: %v", err)
	}
}

// TestKeyTablesAreConsistent: a key is either acted on or accepted-and-
// warned, never both (a field added for a key must leave the Keys list),
// and listed once.
func TestKeyTablesAreConsistent(t *testing.T) {
	for _, s := range Sections {
		acted := yamlFields(s.Type)
		seen := map[string]bool{}
		for _, k := range s.Keys {
			if _, ok := acted[k.Name]; ok {
				t.Errorf("%s: %s is a field and in Keys; drop it from Keys", s.Path, k.Name)
			}
			if seen[k.Name] {
				t.Errorf("%s: %s listed twice", s.Path, k.Name)
			}
			seen[k.Name] = true
		}
		for _, e := range s.Extensions {
			if _, ok := acted[e]; !ok {
				t.Errorf("%s: extension %s is not a field", s.Path, e)
			}
		}
	}
}

// TestPerSecondPrices: input_cost_per_second and output_cost_per_second are
// acted on, from litellm_params or model_info, and a negative one stops the
// start.
func TestPerSecondPrices(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(`model_list:
  - model_name: sm
    litellm_params: {model: openai/llama, api_base: "http://x", input_cost_per_second: 0.00042}
    model_info: {output_cost_per_second: 0.001}
`))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Deployments[0]
	if len(cfg.Warnings) != 0 || d.InputCostPerSecond == nil || *d.InputCostPerSecond != 0.00042 || d.OutputCostPerSecond == nil || *d.OutputCostPerSecond != 0.001 {
		t.Fatalf("warnings %q; per-second prices %v %v", cfg.Warnings, d.InputCostPerSecond, d.OutputCostPerSecond)
	}
	if _, err := Parse("c.yaml", []byte("model_list:\n  - model_name: sm\n    litellm_params: {model: openai/llama, input_cost_per_second: -1}\n")); err == nil || !strings.Contains(err.Error(), "input_cost_per_second") {
		t.Fatalf("a negative per-second price: %v", err)
	}
}

// TestDeploymentTagsBounded: litellm_params.tags ride on every request the
// deployment answers, so tags past the request tag bounds fail the load
// with the place and the bound, rather than being dropped on each request.
func TestDeploymentTagsBounded(t *testing.T) {
	model := func(tags string) string {
		return "model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/x\n      tags: " + tags + "\n"
	}
	tests := []struct {
		name, tags, want string
	}{
		{"long", `["` + strings.Repeat("x", 129) + `"]`, "at most 128 bytes"},
		{"many", "[" + strings.Repeat("t,", 32) + "t]", "at most 32"},
		{"empty", `[""]`, "is empty"},
		{"control", `["a\tb"]`, "control character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(model(tt.tags)))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "litellm_params.tags") {
				t.Errorf("err = %v, want one naming litellm_params.tags and %q", err, tt.want)
			}
		})
	}
	cfg, err := Parse("c.yaml", []byte(model(`["AWS_IAM_PROD", "`+strings.Repeat("y", 128)+`"]`)))
	if err != nil || len(cfg.Deployments) != 1 || len(cfg.Deployments[0].Tags) != 2 {
		t.Fatalf("tags at the bounds: %v", err)
	}
}
