package config

// ModelEntry is one item of LiteLLM's model_list.
type ModelEntry struct {
	ModelName     string        `yaml:"model_name"`
	LiteLLMParams LiteLLMParams `yaml:"litellm_params"`
	ModelInfo     ModelInfo     `yaml:"model_info"`
}

// LiteLLMParams is how to reach and price one deployment.
type LiteLLMParams struct {
	Model                       EnvString         `yaml:"model"`
	APIBase                     EnvString         `yaml:"api_base"`
	APIKey                      EnvString         `yaml:"api_key"`
	APIVersion                  EnvString         `yaml:"api_version"`
	Organization                EnvString         `yaml:"organization"`
	RPM                         *int64            `yaml:"rpm"`
	TPM                         *int64            `yaml:"tpm"`
	Weight                      *float64          `yaml:"weight"`
	Order                       *int              `yaml:"order"`
	Timeout                     *Seconds          `yaml:"timeout"`
	StreamTimeout               *Seconds          `yaml:"stream_timeout"`
	MaxTokens                   *int64            `yaml:"max_tokens"`
	InputCostPerToken           *float64          `yaml:"input_cost_per_token"`
	OutputCostPerToken          *float64          `yaml:"output_cost_per_token"`
	CacheReadInputTokenCost     *float64          `yaml:"cache_read_input_token_cost"`
	CacheCreationInputTokenCost *float64          `yaml:"cache_creation_input_token_cost"`
	ExtraHeaders                map[string]string `yaml:"extra_headers"`
	Headers                     map[string]string `yaml:"headers"`
	Tokenize                    bool              `yaml:"tokenize"`
	// Accepted for LiteLLM compatibility; no effect (see ignoredPaths).
	DropParams any `yaml:"drop_params"`
}

// ModelInfo is model_list[].model_info.
type ModelInfo struct {
	ID                 string   `yaml:"id"`
	AccessGroups       []string `yaml:"access_groups"`
	BaseModel          string   `yaml:"base_model"`
	Mode               string   `yaml:"mode"`
	MaxInputTokens     *int64   `yaml:"max_input_tokens"`
	MaxOutputTokens    *int64   `yaml:"max_output_tokens"`
	MaxTokens          *int64   `yaml:"max_tokens"`
	InputCostPerToken  *float64 `yaml:"input_cost_per_token"`
	OutputCostPerToken *float64 `yaml:"output_cost_per_token"`
	Description        string   `yaml:"description"`
}

// GeneralSettings is LiteLLM's general_settings.
type GeneralSettings struct {
	MasterKey    EnvString      `yaml:"master_key"`
	DatabaseURL  EnvString      `yaml:"database_url"`
	DatabaseType string         `yaml:"database_type"`
	DatabaseArgs map[string]any `yaml:"database_args"`
	RedisURL     EnvString      `yaml:"redis_url"`
	// CustomAuth and CustomKeyGenerate are LiteLLM's Python function paths
	// (warned about, not run) or Tollgate's hook mappings (see HookSpec).
	CustomAuth             any      `yaml:"custom_auth"`
	CustomKeyGenerate      any      `yaml:"custom_key_generate"`
	MaxRequestSizeMB       *float64 `yaml:"max_request_size_mb"`
	MaxResponseSizeMB      *float64 `yaml:"max_response_size_mb"`
	BackgroundHealthChecks bool     `yaml:"background_health_checks"`
	HealthCheckInterval    *Seconds `yaml:"health_check_interval"`
	AllowUserAuth          any      `yaml:"allow_user_auth"`
	Alerting               any      `yaml:"alerting"`
	ProxyBatchWriteAt      any      `yaml:"proxy_batch_write_at"`
	DisableSpendLogs       bool     `yaml:"disable_spend_logs"`
	MetricsPrefix          string   `yaml:"metrics_prefix"`
	// MetricsKeyLabels: per-key, per-user and per-end-user metric series
	// (default true; false for cardinality).
	MetricsKeyLabels *bool `yaml:"metrics_key_labels"`
	// GlobalMaxParallelRequests bounds requests in flight gateway-wide.
	GlobalMaxParallelRequests *int64 `yaml:"global_max_parallel_requests"`
	// RequestHeaderTimeout and RequestBodyTimeout bound how long a client
	// may take to send a request's headers, and then its whole body
	// (Tollgate's own keys: LiteLLM leaves this to uvicorn).
	RequestHeaderTimeout *Seconds `yaml:"request_header_timeout"`
	RequestBodyTimeout   *Seconds `yaml:"request_body_timeout"`
}

// KeyGenerateParams are /key/generate fields used as defaults or bounds.
type KeyGenerateParams struct {
	MaxBudget           *float64          `yaml:"max_budget"`
	SoftBudget          *float64          `yaml:"soft_budget"`
	BudgetDuration      *string           `yaml:"budget_duration"`
	Duration            *string           `yaml:"duration"` // a blank value means null
	Models              []string          `yaml:"models"`
	Aliases             map[string]string `yaml:"aliases"`
	Config              map[string]any    `yaml:"config"`
	Metadata            map[string]any    `yaml:"metadata"`
	Tags                []string          `yaml:"tags"`
	TeamID              *string           `yaml:"team_id"`
	UserID              *string           `yaml:"user_id"`
	TPMLimit            *int64            `yaml:"tpm_limit"`
	RPMLimit            *int64            `yaml:"rpm_limit"`
	MaxParallelRequests *int64            `yaml:"max_parallel_requests"`
}

// LiteLLMSettings is LiteLLM's litellm_settings.
type LiteLLMSettings struct {
	NumRetries          *int     `yaml:"num_retries"`
	RequestTimeout      *Seconds `yaml:"request_timeout"`
	MaxBudget           *float64 `yaml:"max_budget"`
	BudgetDuration      string   `yaml:"budget_duration"`
	MaxEndUserBudget    *float64 `yaml:"max_end_user_budget"`
	MaxParallelRequests *int64   `yaml:"max_parallel_requests"`
	// RequireAuthForMetricsEndpoint puts /metrics behind the master key.
	RequireAuthForMetricsEndpoint bool                  `yaml:"require_auth_for_metrics_endpoint"`
	UpperboundKeyGenerateParams   *KeyGenerateParams    `yaml:"upperbound_key_generate_params"`
	DefaultKeyGenerateParams      *KeyGenerateParams    `yaml:"default_key_generate_params"`
	Fallbacks                     []map[string][]string `yaml:"fallbacks"`
	ContextWindowFallbacks        []map[string][]string `yaml:"context_window_fallbacks"`
	DefaultFallbacks              []string              `yaml:"default_fallbacks"`
	// Accepted for LiteLLM compatibility; no effect (see ignoredPaths).
	DropParams      any `yaml:"drop_params"`
	SetVerbose      any `yaml:"set_verbose"`
	JSONLogs        any `yaml:"json_logs"`
	SuccessCallback any `yaml:"success_callback"`
	FailureCallback any `yaml:"failure_callback"`
	Callbacks       any `yaml:"callbacks"`
	Cache           any `yaml:"cache"`
	CacheParams     any `yaml:"cache_params"`
	Telemetry       any `yaml:"telemetry"`
}

// RouterSettings is LiteLLM's router_settings.
type RouterSettings struct {
	RoutingStrategy        string                `yaml:"routing_strategy"`
	NumRetries             *int                  `yaml:"num_retries"`
	Timeout                *Seconds              `yaml:"timeout"`
	RetryAfter             *Seconds              `yaml:"retry_after"`
	AllowedFails           *int                  `yaml:"allowed_fails"`
	CooldownTime           *Seconds              `yaml:"cooldown_time"`
	Fallbacks              []map[string][]string `yaml:"fallbacks"`
	ContextWindowFallbacks []map[string][]string `yaml:"context_window_fallbacks"`
	DefaultFallbacks       []string              `yaml:"default_fallbacks"`
	ModelGroupAlias        map[string]string     `yaml:"model_group_alias"`
	RedisHost              EnvString             `yaml:"redis_host"`
	RedisPort              any                   `yaml:"redis_port"`
	RedisPassword          EnvString             `yaml:"redis_password"`
	EnablePreCallChecks    bool                  `yaml:"enable_pre_call_checks"`
}

// ignoredPaths are LiteLLM settings Tollgate reads and does not act on;
// each present one is reported as a warning, never dropped silently.
var ignoredPaths = []string{
	"litellm_settings.drop_params", "litellm_settings.set_verbose", "litellm_settings.json_logs",
	"litellm_settings.success_callback", "litellm_settings.failure_callback", "litellm_settings.callbacks",
	"litellm_settings.cache", "litellm_settings.cache_params", "litellm_settings.telemetry",
	"general_settings.allow_user_auth", "general_settings.alerting", "general_settings.proxy_batch_write_at",
	"general_settings.database_args",
}

var validStrategies = map[string]bool{
	"": true, "simple-shuffle": true, "least-busy": true, "latency-based-routing": true,
	"usage-based-routing": true, "usage-based-routing-v2": true, "cost-based-routing": true,
}
