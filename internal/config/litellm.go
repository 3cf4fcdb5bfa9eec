package config

// ModelEntry is one item of LiteLLM's model_list.
type ModelEntry struct {
	ModelName     string        `yaml:"model_name"`
	LiteLLMParams LiteLLMParams `yaml:"litellm_params"`
	ModelInfo     ModelInfo     `yaml:"model_info"`
}

// LiteLLMParams is how to reach and price one deployment.
type LiteLLMParams struct {
	Model                       EnvString `yaml:"model"`
	APIBase                     EnvString `yaml:"api_base"`
	APIKey                      EnvString `yaml:"api_key"`
	APIVersion                  EnvString `yaml:"api_version"`
	Organization                EnvString `yaml:"organization"`
	RPM                         *int64    `yaml:"rpm"`
	TPM                         *int64    `yaml:"tpm"`
	Weight                      *float64  `yaml:"weight"`
	Order                       *int      `yaml:"order"`
	Timeout                     *Seconds  `yaml:"timeout"`
	StreamTimeout               *Seconds  `yaml:"stream_timeout"`
	InputCostPerToken           *float64  `yaml:"input_cost_per_token"`
	OutputCostPerToken          *float64  `yaml:"output_cost_per_token"`
	CacheReadInputTokenCost     *float64  `yaml:"cache_read_input_token_cost"`
	CacheCreationInputTokenCost *float64  `yaml:"cache_creation_input_token_cost"`
	InputCostPerSecond          *float64  `yaml:"input_cost_per_second"`
	OutputCostPerSecond         *float64  `yaml:"output_cost_per_second"`
	InputCostPerPixel           *float64  `yaml:"input_cost_per_pixel"`
	RegionName                  string    `yaml:"region_name"`
	// Tags are LiteLLM's request tags for spend tracking: added to the
	// tags of every request this deployment answers.
	Tags         []string          `yaml:"tags"`
	ExtraHeaders map[string]string `yaml:"extra_headers"`
	Headers      map[string]string `yaml:"headers"`
	Tokenize     bool              `yaml:"tokenize"`
	// CustomLLMProvider is the provider of a model named without a
	// provider/ prefix.
	CustomLLMProvider string `yaml:"custom_llm_provider"`
	// AWS credentials of a bedrock deployment (lent to /bedrock/*).
	AWSAccessKeyID     EnvString `yaml:"aws_access_key_id"`
	AWSSecretAccessKey EnvString `yaml:"aws_secret_access_key"`
	AWSSessionToken    EnvString `yaml:"aws_session_token"`
	AWSRegionName      EnvString `yaml:"aws_region_name"`
	// AWSProfileName names the profile of the shared AWS files that holds
	// the keys (and region) the params above leave out.
	AWSProfileName EnvString `yaml:"aws_profile_name"`
	// AWSBedrockRuntimeEndpoint is LiteLLM's name for a bedrock
	// deployment's api_base.
	AWSBedrockRuntimeEndpoint EnvString `yaml:"aws_bedrock_runtime_endpoint"`
	// Vertex AI project, location and credentials of a vertex_ai
	// deployment (lent to /vertex_ai/*).
	VertexProject     EnvString         `yaml:"vertex_project"`
	VertexLocation    EnvString         `yaml:"vertex_location"`
	VertexCredentials VertexCredentials `yaml:"vertex_credentials"`
	UseInPassThrough  bool              `yaml:"use_in_pass_through"`
}

// ModelInfo is model_list[].model_info.
type ModelInfo struct {
	ID                          string   `yaml:"id"`
	AccessGroups                []string `yaml:"access_groups"`
	BaseModel                   string   `yaml:"base_model"`
	InputCostPerToken           *float64 `yaml:"input_cost_per_token"`
	OutputCostPerToken          *float64 `yaml:"output_cost_per_token"`
	CacheReadInputTokenCost     *float64 `yaml:"cache_read_input_token_cost"`
	CacheCreationInputTokenCost *float64 `yaml:"cache_creation_input_token_cost"`
	InputCostPerSecond          *float64 `yaml:"input_cost_per_second"`
	OutputCostPerSecond         *float64 `yaml:"output_cost_per_second"`
	// Media prices, as the price list names them.
	InputCostPerPixel     *float64 `yaml:"input_cost_per_pixel"`
	InputCostPerImage     *float64 `yaml:"input_cost_per_image"`
	OutputCostPerImage    *float64 `yaml:"output_cost_per_image"`
	InputCostPerCharacter *float64 `yaml:"input_cost_per_character"`
}

// GeneralSettings is LiteLLM's general_settings.
type GeneralSettings struct {
	MasterKey    EnvString `yaml:"master_key"`
	DatabaseURL  EnvString `yaml:"database_url"`
	DatabaseType string    `yaml:"database_type"`
	// DatabaseArgs configures the DynamoDB store (database_type
	// "dynamo_db"): LiteLLM's DynamoDBArgs, plus endpoint_url.
	DatabaseArgs *DatabaseArgs `yaml:"database_args"`
	RedisURL     EnvString     `yaml:"redis_url"`
	// CustomAuth and CustomKeyGenerate are LiteLLM's Python function paths
	// (module.function, run by python3 workers) or Tollgate's hook mappings
	// (see HookSpec).
	CustomAuth        any `yaml:"custom_auth"`
	CustomKeyGenerate any `yaml:"custom_key_generate"`
	// TollgatePythonHooks tunes the python3 workers that run Python hooks.
	TollgatePythonHooks    PythonHooks `yaml:"tollgate_python_hooks"`
	MaxRequestSizeMB       *float64    `yaml:"max_request_size_mb"`
	MaxResponseSizeMB      *float64    `yaml:"max_response_size_mb"`
	BackgroundHealthChecks bool        `yaml:"background_health_checks"`
	HealthCheckInterval    *Seconds    `yaml:"health_check_interval"`
	DisableSpendLogs       bool        `yaml:"disable_spend_logs"`
	// DisableErrorLogs: a failed request's spend row without cost is not
	// written (rows with spend still are).
	DisableErrorLogs bool   `yaml:"disable_error_logs"`
	MetricsPrefix    string `yaml:"metrics_prefix"`
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
	// MaxRequestsInFlight bounds this process's inference requests in
	// flight; past it new ones are shed with 503 (Tollgate's own key;
	// 0 or absent: derived from GOMAXPROCS; -1: no bound).
	MaxRequestsInFlight *int64 `yaml:"max_requests_in_flight"`
	// MaxClientConnections bounds the connections open on the main port;
	// past it a new connection whose first request is an inference route
	// is answered 503 at accept (Tollgate's own key; 0 or absent: twice
	// max_requests_in_flight; -1: no bound).
	MaxClientConnections *int64 `yaml:"max_client_connections"`
	// MemoryLimit is the Go runtime's soft memory limit, as GOMEMLIMIT
	// writes it ("512MiB", "off"); GOMEMLIMIT in the environment wins;
	// absent: nine tenths of the cgroup's memory limit, if any (Tollgate's
	// own key, read at start; internal/memlimit).
	MemoryLimit string `yaml:"memory_limit"`
	// UnpricedModels is what a budgeted request to a deployment nobody can
	// price gets: "free" (served at cost 0, the default) or "refuse".
	UnpricedModels string `yaml:"unpriced_models"`
	// BudgetAllotments decides budget holds and rate limits (rpm, tpm,
	// max_parallel_requests) in process against allotments this replica
	// holds on Redis, flushed every 100 ms, instead of Redis scripts per
	// request (Tollgate's own key; only with redis_url: absent, on when
	// Redis and a database are configured (rate limits on Redis without a
	// database: only when true); false: the per-request scripts;
	// docs/allotments.md). Read it with Allotments.
	BudgetAllotments *bool `yaml:"budget_allotments"`
	// PassThroughEndpoints are custom routes forwarded to other APIs
	// (passthrough.go).
	PassThroughEndpoints []PassThroughEndpoint `yaml:"pass_through_endpoints"`
	// OTel is Tollgate's own tracing setting: set, every inference request
	// is exported as OpenTelemetry spans (as with litellm_settings.callbacks:
	// ["otel"]); its fields win over the OTEL_* environment variables. See
	// docs/tracing.md.
	OTel *OTelSettings `yaml:"otel"`
	// StorePromptsInSpendLogs keeps each request's messages and answer,
	// redacted and capped, with its spend row (LiteLLM's name).
	StorePromptsInSpendLogs bool `yaml:"store_prompts_in_spend_logs"`
	// ContentLogging bounds and masks the messages and answers that leave
	// the process (spend rows, callbacks); Tollgate's own key.
	ContentLogging ContentLogging `yaml:"content_logging"`
}

// Allotments reports whether budget_allotments is on: as set, or on when
// absent. It takes effect only with Redis (redis_url).
func (g *GeneralSettings) Allotments() bool {
	return g.BudgetAllotments == nil || *g.BudgetAllotments
}

// DatabaseArgs is LiteLLM's DynamoDBArgs (general_settings.database_args),
// read when database_type is "dynamo_db" (docs/dynamodb.md).
type DatabaseArgs struct {
	// BillingMode is PAY_PER_REQUEST or PROVISIONED_THROUGHPUT (LiteLLM's
	// name; PROVISIONED, AWS's, is accepted too) for the tables created.
	BillingMode        string    `yaml:"billing_mode"`
	ReadCapacityUnits  *int64    `yaml:"read_capacity_units"`
	WriteCapacityUnits *int64    `yaml:"write_capacity_units"`
	SSLVerify          *bool     `yaml:"ssl_verify"`
	RegionName         EnvString `yaml:"region_name"`
	UserTableName      string    `yaml:"user_table_name"`
	KeyTableName       string    `yaml:"key_table_name"`
	ConfigTableName    string    `yaml:"config_table_name"`
	SpendTableName     string    `yaml:"spend_table_name"`
	// EndpointURL (Tollgate's) is a DynamoDB-compatible server to use
	// instead of AWS's endpoint; AWS_ENDPOINT_URL_DYNAMODB and
	// AWS_ENDPOINT_URL do the same when it is not set.
	EndpointURL EnvString `yaml:"endpoint_url"`
}

// OTelSettings is general_settings.otel: where and how traces are
// exported. Every field is optional.
type OTelSettings struct {
	// Endpoint is the collector's URL: for http the traces URL itself
	// when it has a path (http://host:4318/v1/traces), else /v1/traces is
	// added; for grpc http://host:4317 (https:// for TLS).
	Endpoint EnvString `yaml:"endpoint"`
	// Protocol is http (OTLP/HTTP protobuf, the default; http/protobuf is
	// the same) or grpc.
	Protocol string `yaml:"protocol"`
	// Headers are sent with every export (an API key).
	Headers map[string]EnvString `yaml:"headers"`
	// SampleRatio is the share of new traces recorded (default 1); a
	// client's traceparent decides for the traces it continues.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName is the resource's service.name (default tollgate, or
	// OTEL_SERVICE_NAME).
	ServiceName string `yaml:"service_name"`
	// QueueSize bounds the spans waiting per exporter (default 2048, at
	// most MaxOTelQueue); spans that find it full are dropped and counted.
	QueueSize *int `yaml:"queue_size"`
	// BatchSize is the most spans per export (default 512, at most
	// MaxOTelQueue).
	BatchSize *int `yaml:"batch_size"`
	// ExportInterval is how long a span may wait for a batch to fill
	// (default 1 s, at least MinOTelExportInterval); ExportTimeout bounds
	// one export (default 10 s).
	ExportInterval *Seconds `yaml:"export_interval"`
	ExportTimeout  *Seconds `yaml:"export_timeout"`
}

// PythonHooks is general_settings.tollgate_python_hooks (Tollgate's own):
// how the Python functions named by custom_auth / custom_key_generate run.
type PythonHooks struct {
	Python   EnvString `yaml:"python"`    // interpreter (default python3 on PATH)
	Workers  int       `yaml:"workers"`   // worker processes (default 2)
	Timeout  *Seconds  `yaml:"timeout"`   // per call (default 2s); then 503 and the worker is replaced
	CacheTTL *Seconds  `yaml:"cache_ttl"` // custom_auth decisions kept per key this long (default 0: every request)
}

// ContentLogging is general_settings.content_logging.
type ContentLogging struct {
	// MaxFieldBytes caps the messages and the response of one request,
	// each (default 65536).
	MaxFieldBytes *int `yaml:"max_field_bytes"`
	// RedactSecrets masks API keys, tokens and private keys (default true).
	RedactSecrets *bool `yaml:"redact_secrets"`
	// RedactPII names the PII classes masked, by Presidio's names
	// (EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, US_SSN, IP_ADDRESS,
	// IBAN_CODE); all of them when absent, none when empty.
	RedactPII *[]string `yaml:"redact_pii"`
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
	MaxEndUserBudget    *float64 `yaml:"max_end_user_budget"`
	MaxParallelRequests *int64   `yaml:"max_parallel_requests"`
	// RequireAuthForMetricsEndpoint puts /metrics behind the master key.
	RequireAuthForMetricsEndpoint bool                  `yaml:"require_auth_for_metrics_endpoint"`
	UpperboundKeyGenerateParams   *KeyGenerateParams    `yaml:"upperbound_key_generate_params"`
	DefaultKeyGenerateParams      *KeyGenerateParams    `yaml:"default_key_generate_params"`
	Fallbacks                     []map[string][]string `yaml:"fallbacks"`
	ContextWindowFallbacks        []map[string][]string `yaml:"context_window_fallbacks"`
	DefaultFallbacks              []string              `yaml:"default_fallbacks"`

	// BudgetEnforcement is Tollgate's: "default" or "strict" (a key's
	// metadata.budget_enforcement: strict makes that key strict). See
	// docs/spend-and-limits.md.
	BudgetEnforcement string `yaml:"budget_enforcement"`
	// BudgetOnRedisFailure is Tollgate's: "share" (default: a replica cut
	// off from Redis spends its share of each budget) or "fail_closed"
	// (budgeted requests get 503 until Redis is back).
	BudgetOnRedisFailure string `yaml:"budget_on_redis_failure"`

	// Callbacks, SuccessCallback and FailureCallback name the logging
	// services (LiteLLM's names: otel, langfuse, datadog, s3, generic_api
	// or a callback_settings entry) that get every request, the successes,
	// and the failures.
	Callbacks       []string `yaml:"callbacks"`
	SuccessCallback []string `yaml:"success_callback"`
	FailureCallback []string `yaml:"failure_callback"`
	// TurnOffMessageLogging keeps messages and answers out of every log
	// that leaves the process, whatever else is set.
	TurnOffMessageLogging bool `yaml:"turn_off_message_logging"`
	// RedactUserAPIKeyInfo keeps the key's hash, alias, user, team and
	// organization out of the callback payloads and the spans.
	RedactUserAPIKeyInfo bool `yaml:"redact_user_api_key_info"`
	// LangfuseDefaultTags names metadata fields whose "field:value" join
	// the Langfuse trace's tags.
	LangfuseDefaultTags []string `yaml:"langfuse_default_tags"`
	// S3CallbackParams is where the s3 callback writes.
	S3CallbackParams *S3CallbackParams `yaml:"s3_callback_params"`
	// CallbackQueueMaxBytes is Tollgate's: the most bytes (estimated) of
	// payloads each logging callback's queue holds before it drops
	// (default 64 MiB; at least 1 MiB).
	CallbackQueueMaxBytes *int `yaml:"callback_queue_max_bytes"`
	// Cache turns the response cache on (docs/caching.md); CacheParams
	// says where it lives and what it caches.
	Cache       bool         `yaml:"cache"`
	CacheParams *CacheParams `yaml:"cache_params"`
}

// CacheParams is LiteLLM's litellm_settings.cache_params.
type CacheParams struct {
	// Type is local (in process, the default) or redis (the gateway's
	// Redis, redis_url); redis-semantic and local-semantic add the
	// semantic cache to them.
	Type string `yaml:"type"`
	// SimilarityThreshold and RedisSemanticCacheEmbeddingModel configure
	// the semantic cache: the cosine similarity a prior prompt needs, and
	// the model group that embeds prompts.
	SimilarityThreshold              *float64 `yaml:"similarity_threshold"`
	RedisSemanticCacheEmbeddingModel string   `yaml:"redis_semantic_cache_embedding_model"`
	// TTL is how long an answer is kept (default 600 s);
	// default_in_memory_ttl and default_in_redis_ttl override it for their
	// type.
	TTL                *Seconds `yaml:"ttl"`
	DefaultInMemoryTTL *Seconds `yaml:"default_in_memory_ttl"`
	DefaultInRedisTTL  *Seconds `yaml:"default_in_redis_ttl"`
	// Namespace, when set, is shared by every key and team: their cached
	// answers reach each other. Without it each team (or key without a
	// team) has its own.
	Namespace string `yaml:"namespace"`
	// SupportedCallTypes are LiteLLM's call types cached (completion,
	// acompletion, text_completion, atext_completion, embedding,
	// aembedding, anthropic_messages, rerank, arerank); all of those when
	// empty.
	SupportedCallTypes []string `yaml:"supported_call_types"`
	// Mode default_off caches only requests that ask with
	// cache: {"use-cache": true}; default_on (or empty) caches all.
	Mode string `yaml:"mode"`
	// Host, Port and Password name LiteLLM's cache Redis; Tollgate's cache
	// uses the gateway's own Redis (redis_url), and warns when these name
	// another.
	Host     EnvString `yaml:"host"`
	Port     any       `yaml:"port"`
	Password EnvString `yaml:"password"`
	// MaxBytes bounds the local cache's entries, in bytes (default 256 MiB);
	// MaxEntryBytes the answer one entry may hold (default 1 MiB): larger
	// answers are not stored. Tollgate's.
	MaxBytes      *int64 `yaml:"max_bytes"`
	MaxEntryBytes *int64 `yaml:"max_entry_bytes"`
	// ChargeHits books a hit at what its answer cost when it was stored,
	// instead of nothing. Tollgate's.
	ChargeHits bool `yaml:"charge_hits"`
	// MaxTTL bounds, in seconds, the ttl a request's cache.ttl may set
	// (default: 24 hours, or ttl when that is longer). Tollgate's.
	MaxTTL *Seconds `yaml:"max_ttl"`
}

// CallbackSettings is one entry of LiteLLM's callback_settings. With
// callback_type generic_api the entry's name is a callback of its own, a
// webhook (docs/callbacks.md).
type CallbackSettings struct {
	CallbackType string               `yaml:"callback_type"`
	Endpoint     EnvString            `yaml:"endpoint"`
	Headers      map[string]EnvString `yaml:"headers"`
	// EventTypes narrows what the webhook gets: llm_api_success,
	// llm_api_failure; all when empty.
	EventTypes []string `yaml:"event_types"`
	// LogFormat is json_array (default), ndjson or single.
	LogFormat string `yaml:"log_format"`
	// MessageLogging false keeps messages and answers from this callback
	// (the others keep theirs).
	MessageLogging *bool `yaml:"message_logging"`
}

// NoMessageLogging reports whether callback_settings turns content off for
// any of the callback names.
func (c *Config) NoMessageLogging(names ...string) bool {
	for _, n := range names {
		if s, ok := c.CallbackSettings[n]; ok && s.MessageLogging != nil && !*s.MessageLogging {
			return true
		}
	}
	return false
}

// S3CallbackParams is LiteLLM's litellm_settings.s3_callback_params.
type S3CallbackParams struct {
	S3BucketName         EnvString `yaml:"s3_bucket_name"`
	S3RegionName         EnvString `yaml:"s3_region_name"`
	S3APIVersion         EnvString `yaml:"s3_api_version"`
	S3UseSSL             *bool     `yaml:"s3_use_ssl"`
	S3Verify             *bool     `yaml:"s3_verify"`
	S3EndpointURL        EnvString `yaml:"s3_endpoint_url"`
	S3AWSAccessKeyID     EnvString `yaml:"s3_aws_access_key_id"`
	S3AWSSecretAccessKey EnvString `yaml:"s3_aws_secret_access_key"`
	S3AWSSessionToken    EnvString `yaml:"s3_aws_session_token"`
	S3Path               EnvString `yaml:"s3_path"`
	S3FlushInterval      *Seconds  `yaml:"s3_flush_interval"`
	S3BatchSize          *int      `yaml:"s3_batch_size"`
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
	RedisURL               EnvString             `yaml:"redis_url"`
	RedisHost              EnvString             `yaml:"redis_host"`
	RedisPort              any                   `yaml:"redis_port"`
	RedisPassword          EnvString             `yaml:"redis_password"`
}

var validStrategies = map[string]bool{
	"": true, "simple-shuffle": true, "least-busy": true, "latency-based-routing": true,
	"usage-based-routing": true, "usage-based-routing-v2": true, "cost-based-routing": true,
}

// Callback names served by parts of Tollgate other than the logging
// callbacks (internal/callback): the tracer's exporters, and prometheus,
// which is /metrics.
var (
	OTelCallbacks     = []string{"otel", "opentelemetry"}
	LangfuseCallbacks = []string{"langfuse", "langfuse_otel"}
	MetricsCallbacks  = []string{"prometheus"}
)

// CacheCallTypes are the LiteLLM call types the response cache serves.
var CacheCallTypes = map[string]bool{
	"completion": true, "acompletion": true, "text_completion": true, "atext_completion": true,
	"embedding": true, "aembedding": true, "anthropic_messages": true, "rerank": true, "arerank": true,
}
