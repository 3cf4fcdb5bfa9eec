package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, name string) *Config {
	t.Helper()
	cfg, err := Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cfg
}

// TestSeedExamplesLoad loads every YAML example of both seed pages. The
// LiteLLM page lost its indentation when it was captured; testdata restores
// it and changes nothing else, except one comma its DynamoDB example lacks
// (without it the flow mapping is invalid YAML for any parser).
func TestSeedExamplesLoad(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-upstream")
	t.Setenv("AZURE_API_BASE", "https://example.openai.azure.com")
	t.Setenv("AZURE_API_KEY", "az-key")
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") && !strings.HasPrefix(e.Name(), "bad_") {
			load(t, e.Name())
		}
	}
}

func TestLiteLLMModelList(t *testing.T) {
	cfg := load(t, "litellm_tiers.yaml")
	if len(cfg.Deployments) != 4 {
		t.Fatalf("deployments = %d", len(cfg.Deployments))
	}
	free := cfg.Deployments[1]
	if free.ModelName != "my-free-tier" || free.Provider != "huggingface" || free.Model != "HuggingFaceH4/zephyr-7b-beta" || free.APIBase != "http://0.0.0.0:8002" {
		t.Errorf("free tier = %+v", free)
	}
	paid := cfg.Deployments[3]
	if paid.Provider != "openai" || paid.Model != "gpt-4" || paid.APIKey != "my-api-key" {
		t.Errorf("bare gpt-4 = %+v, want provider openai", paid)
	}
	ids := map[string]bool{}
	for _, d := range cfg.Deployments {
		if d.ID == "" || ids[d.ID] {
			t.Errorf("deployment id %q empty or repeated", d.ID)
		}
		ids[d.ID] = true
	}
	again := load(t, "litellm_tiers.yaml")
	if again.Deployments[2].ID != cfg.Deployments[2].ID {
		t.Error("generated ids are not stable across loads")
	}
}

func TestEnvironmentReferences(t *testing.T) {
	t.Setenv("AZURE_API_BASE", "https://res.openai.azure.com")
	t.Setenv("AZURE_API_KEY", "secret-az")
	cfg := load(t, "litellm_access_groups.yaml")
	d := cfg.Deployments[0]
	if d.Provider != "azure" || d.Model != "azure-embedding-model" || d.APIBase != "https://res.openai.azure.com" || d.APIKey != "secret-az" || d.APIVersion != "2023-07-01-preview" {
		t.Errorf("azure = %+v", d)
	}
	if len(d.AccessGroups) != 1 || d.AccessGroups[0] != "beta-models" {
		t.Errorf("access groups = %v", d.AccessGroups)
	}

	t.Setenv("MY_KEY", "from-dollar")
	cfg, err := Parse("x.yaml", []byte("model_list:\n  - model_name: a\n    litellm_params: {model: openai/a, api_key: $MY_KEY, api_base: '${MY_BASE}'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Deployments[0].APIKey != "from-dollar" || cfg.Deployments[0].APIBase != "" {
		t.Errorf("$VAR resolution: %+v", cfg.Deployments[0])
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "x.yaml:3:") || !strings.Contains(cfg.Warnings[0], "MY_BASE is not set") {
		t.Errorf("warnings = %q, want one naming MY_BASE with its line", cfg.Warnings)
	}
}

func TestEnvironmentVariablesAppliedFirst(t *testing.T) {
	t.Setenv("TG_TEST_BASE", "") // restored after the test
	cfg, err := Parse("x.yaml", []byte(`
model_list:
  - model_name: a
    litellm_params: {model: openai/a, api_base: os.environ/TG_TEST_BASE}
environment_variables:
  TG_TEST_BASE: http://10.1.2.3:9000
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Deployments[0].APIBase; got != "http://10.1.2.3:9000" {
		t.Fatalf("api_base = %q", got)
	}
}

func TestKeyGenerateParams(t *testing.T) {
	up := load(t, "litellm_upperbound.yaml").LiteLLMSettings.UpperboundKeyGenerateParams
	if up == nil || *up.MaxBudget != 100 || *up.Duration != "30d" {
		t.Fatalf("upperbound = %+v", up)
	}
	def := load(t, "litellm_defaults.yaml").LiteLLMSettings.DefaultKeyGenerateParams
	if def == nil || *def.MaxBudget != 1.5 || def.Duration != nil || def.Models[0] != "azure-gpt-3.5" || def.Metadata["setting"] != "default" || *def.TeamID != "core-infra" {
		t.Fatalf("defaults = %+v", def)
	}
}

func TestSettingsWithoutEffectAreWarnings(t *testing.T) {
	cfg := load(t, "litellm_custom_auth.yaml")
	joined := strings.Join(cfg.Warnings, "\n")
	for _, want := range []string{"litellm_custom_auth.yaml:7:", "drop_params", "set_verbose"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings lack %q:\n%s", want, joined)
		}
	}
	// custom_auth: module.function is run (by python3 workers), in
	// LiteLLM's place of virtual-key auth.
	if h := cfg.CustomAuth; h == nil || h.Python != "custom_auth.user_api_key_auth" || h.Mode != "replace" || strings.Contains(joined, "general_settings.custom_auth") {
		t.Errorf("custom_auth = %+v, warnings:\n%s", h, joined)
	}
	if d := cfg.Deployments[0]; d.Provider != "openai" || d.Model != "gpt-3.5-turbo" {
		t.Errorf("deployment = %+v", d)
	}
}

func TestAgentgatewayFormats(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-upstream")
	cfg := load(t, "agw_tokenize.yaml")
	if cfg.APIKeyMode != "strict" || len(cfg.StaticKeys) != 2 {
		t.Fatalf("mode %q keys %d", cfg.APIKeyMode, len(cfg.StaticKeys))
	}
	if cfg.StaticKeys[0].Hash != HashKey("sk-alice-abc123def456") || cfg.StaticKeys[0].Metadata["user"] != "alice" {
		t.Errorf("alice = %+v", cfg.StaticKeys[0])
	}
	want := LocalRateLimit{MaxTokens: 10, TokensPerFill: 1, FillInterval: time.Minute, Type: "tokens", Scope: "global"}
	if len(cfg.LocalRateLimits) != 1 || cfg.LocalRateLimits[0] != want {
		t.Errorf("rate limits = %+v", cfg.LocalRateLimits)
	}
	d := cfg.Deployments[0]
	if d.ModelName != "*" || d.Provider != "openai" || d.Model != "" || d.APIKey != "sk-upstream" || !d.Tokenize {
		t.Errorf("model = %+v", d)
	}

	b := load(t, "agw_binds.yaml")
	if b.ListenPort != 4000 || len(b.Deployments) != 1 || len(b.StaticKeys) != 2 {
		t.Fatalf("binds: port %d deployments %d keys %d", b.ListenPort, len(b.Deployments), len(b.StaticKeys))
	}
	bd := b.Deployments[0]
	if bd.ModelName != "*" || bd.Model != "gpt-3.5-turbo" || bd.APIKey != "sk-upstream" || bd.ID != "openai" {
		t.Errorf("binds deployment = %+v", bd)
	}
	if rl := b.LocalRateLimits[0]; rl.MaxTokens != 100000 || rl.FillInterval != 24*time.Hour {
		t.Errorf("binds rate limit = %+v", rl)
	}
}

func TestMissingEnvInAgentgatewayExampleIsAWarning(t *testing.T) {
	os.Unsetenv("OPENAI_API_KEY")
	cfg := load(t, "agw_keys.yaml")
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "OPENAI_API_KEY") {
		t.Fatalf("warnings = %q", cfg.Warnings)
	}
}

func TestErrorsNameFileLineColumn(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key with suggestion", "model_list:\n  - model_name: a\n    litellm_params:\n      modle: openai/a\n",
			[]string{"bad.yaml:4:7:", `unknown field "modle"`, `did you mean "model"?`}},
		{"unknown top-level section", "model_lists: []\n", []string{"bad.yaml:1:1:", `"model_lists"`}},
		{"wrong type", "model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/a\n      rpm: abc\n", []string{"bad.yaml:5:", "rpm"}},
		{"missing model", "model_list:\n  - model_name: a\n    litellm_params: {api_base: http://x}\n", []string{"bad.yaml:2:", "litellm_params.model is required"}},
		{"missing model_name", "model_list:\n  - litellm_params: {model: openai/x}\n", []string{"bad.yaml:2:", "model_name is required"}},
		{"negative rpm", "model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/a\n      rpm: -5\n", []string{"bad.yaml:5:12:", "rpm must not be negative"}},
		{"negative timeout", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/a, timeout: -1}\n", []string{"timeout must not be negative"}},
		{"bad strategy", "router_settings:\n  routing_strategy: fastest\n", []string{"bad.yaml:2:21:", `unknown routing_strategy "fastest"`}},
		{"bad unpriced policy", "general_settings:\n  unpriced_models: maybe\n", []string{"bad.yaml:2:20:", `unknown unpriced_models "maybe"`}},
		{"bad apiKey mode", "llm:\n  policies:\n    apiKey: {mode: lax}\n", []string{"bad.yaml:3:", "strict or optional"}},
		{"bad keyHash", "llm:\n  policies:\n    apiKey:\n      keys: [{keyHash: 'md5:abc'}]\n", []string{"keyHash must be sha256:<64 hex digits>"}},
		{"bad limit type", "llm:\n  policies:\n    localRateLimit: [{maxTokens: 1, tokensPerFill: 1, fillInterval: 1s, type: bytes}]\n", []string{"tokens or requests"}},
		{"bad fill interval", "llm:\n  policies:\n    localRateLimit: [{maxTokens: 1, tokensPerFill: 1, fillInterval: 0s, type: tokens}]\n", []string{"fillInterval must be a positive"}},
		{"negative maxTokens", "llm:\n  policies:\n    localRateLimit: [{maxTokens: -1, tokensPerFill: 1, fillInterval: 1s, type: tokens}]\n", []string{"must not be negative"}},
		{"unknown agentgateway provider", "llm:\n  models: [{name: a, provider: acme}]\n", []string{`unknown provider "acme"`}},
		{"negative global budget", "litellm_settings:\n  max_budget: -1\n", []string{"bad.yaml:2:15:", "must not be negative"}},
		{"bad budget enforcement", "litellm_settings:\n  budget_enforcement: lax\n", []string{"bad.yaml:2:23:", `unknown budget_enforcement "lax"`}},
		{"bad redis failure policy", "litellm_settings:\n  budget_on_redis_failure: open\n", []string{"bad.yaml:2:28:", `unknown budget_on_redis_failure "open"`}},
		{"syntax error", "model_list: [\n", []string{"bad.yaml:"}},
		{"CRLF in a header value", "model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/a\n      headers: {X-Team: \"core\\r\\nX-Injected: 1\"}\n",
			[]string{"bad.yaml:5:16:", "litellm_params.headers.X-Team", "control character"}},
		{"LF in an extra_headers value", "model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/a\n      extra_headers: {X-A: \"a\\nb\"}\n",
			[]string{"litellm_params.extra_headers.X-A", "control character"}},
		{"NUL in a header value", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/a, headers: {X-A: \"a\\0b\"}}\n",
			[]string{"litellm_params.headers.X-A", "control character"}},
		{"bad header name", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/a, headers: {\"X A\": b}}\n",
			[]string{`litellm_params.headers."X A"`, "not a valid header name"}},
		{"LF in api_key", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/a, api_key: \"sk-a\\n\"}\n",
			[]string{"litellm_params.api_key", "control character"}},
		{"CR in organization", "model_list:\n  - model_name: a\n    litellm_params: {model: openai/a, organization: \"org\\r\"}\n",
			[]string{"litellm_params.organization", "control character"}},
		{"LF in agentgateway apiKey", "llm:\n  models: [{name: a, provider: openAI, params: {apiKey: \"k\\nX: y\"}}]\n",
			[]string{"params.apiKey", "control character"}},
		{"CRLF in a webhook header", "general_settings:\n  custom_auth:\n    webhook: {url: http://127.0.0.1:1, headers: {Authorization: \"Bearer x\\r\\nX-B: y\"}}\n",
			[]string{"custom_auth.webhook.headers.Authorization", "control character"}},
		{"zero body timeout", "general_settings:\n  request_body_timeout: 0\n", []string{"bad.yaml:2:", "request_body_timeout must be a positive"}},
		{"negative header timeout", "general_settings:\n  request_header_timeout: -1\n", []string{"request_header_timeout must be a positive"}},
		{"memory limit in MB", "general_settings:\n  memory_limit: 512MB\n", []string{"bad.yaml:2:", "general_settings.memory_limit", "512MiB"}},
		{"memory limit zero", "general_settings:\n  memory_limit: \"0\"\n", []string{"general_settings.memory_limit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatal("config accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestDefaultAndHelpers(t *testing.T) {
	d := Default()
	if len(d.Deployments) != 1 || d.Deployments[0].Provider != "demo" || d.Deployments[0].ModelName != "demo" {
		t.Fatalf("default = %+v", d.Deployments)
	}
	t.Setenv("TOLLGATE_MASTER_KEY", "sk-env")
	t.Setenv("DATABASE_URL", "postgres://db")
	t.Setenv("REDIS_URL", "redis://r")
	if d.MasterKey() != "sk-env" || d.DatabaseURL() != "postgres://db" || d.RedisURL() != "redis://r" {
		t.Error("environment fallbacks not used")
	}
	if d.MaxRequestBytes() != 16<<20 || d.RequestTimeout() != 600*time.Second || d.MaxResponseBytes() != 32<<20 {
		t.Error("defaults wrong")
	}
	half, err := Parse("r.yaml", []byte("general_settings:\n  max_response_size_mb: 0.5\n"))
	if err != nil || half.MaxResponseBytes() != 512<<10 {
		t.Errorf("max_response_size_mb 0.5: %v %v", half, err)
	}
	if _, err := Parse("r.yaml", []byte("general_settings:\n  max_response_size_mb: 0\n")); err == nil || !strings.Contains(err.Error(), "r.yaml:2:") {
		t.Errorf("max_response_size_mb 0 accepted or not located: %v", err)
	}
	cfg := load(t, "litellm_step1.yaml")
	if cfg.MasterKey() != "sk-1234" || cfg.DatabaseURL() != "postgresql://<user>:<password>@<host>:<port>/<dbname>" {
		t.Error("file values must win over the environment")
	}
}

// TestBedrockParams: a bedrock deployment's aws_bedrock_runtime_endpoint
// is its api_base (an api_base given wins), and agentgateway's bedrock
// provider takes its region from awsRegion (its keys from the
// environment).
func TestBedrockParams(t *testing.T) {
	cfg, err := Parse("b.yaml", []byte(`
model_list:
  - model_name: a
    litellm_params: {model: bedrock/amazon.nova-pro-v1:0, aws_region_name: us-east-1, aws_bedrock_runtime_endpoint: "https://vpce-1.example"}
  - model_name: b
    litellm_params: {model: bedrock/amazon.nova-pro-v1:0, api_base: "https://base.example", aws_bedrock_runtime_endpoint: "https://vpce-2.example"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Deployments; len(d) != 2 || d[0].APIBase != "https://vpce-1.example" || d[0].AWS == nil || d[0].AWS.Region != "us-east-1" || d[1].APIBase != "https://base.example" {
		t.Fatalf("litellm: %+v", d)
	}
	cfg, err = Parse("ag.yaml", []byte("llm:\n  models: [{name: nova, provider: bedrock, params: {model: amazon.nova-pro-v1:0, awsRegion: eu-west-1}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Deployments; len(d) != 1 || d[0].Provider != "bedrock" || d[0].AWS == nil || d[0].AWS.Region != "eu-west-1" || d[0].AWS.AccessKeyID != "" {
		t.Fatalf("agentgateway: %+v", d)
	}
}
