package config

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// A LiteLLM config.yaml may hold many keys Tollgate does not act on; such a
// file must still load. The key check below walks the file before it is
// decoded and sorts every key into one of three kinds:
//
//   - acted on: a field of the section's struct. It is typed, validated and
//     used; a value of the wrong type stops the start.
//   - documented by LiteLLM but not acted on: listed in the section's Keys.
//     It is accepted and named in a startup warning (file:line:col).
//   - anything else: in a LiteLLM section it is a warning too (LiteLLM passes
//     unknown litellm_params to the noteProvider, keeps unknown model_info as
//     noteMetadata, and ignores unknown settings), unless it is a near miss of a
//     key Tollgate acts on: that is a typo, and a typo stops the start with
//     a suggestion. In Tollgate's and agentgateway's own sections (llm,
//     binds) every unknown key is an error, as before.
//
// The sections and their documented keys are the single source of
// docs/litellm-compatibility.md (see TestCompatibilityDocIsCurrent).

// Key is a LiteLLM config key Tollgate accepts without acting on it.
type Key struct {
	Name string
	Type string // as LiteLLM documents it
	Note string // what Tollgate does instead, if anything
}

// Section is one mapping of a LiteLLM config file.
type Section struct {
	// Path names the mapping: "" for the top level, "general_settings",
	// "model_list[].litellm_params" ([] stands for every list item).
	Path string
	// Type is the struct the section decodes into; its yaml fields are the
	// keys Tollgate acts on.
	Type reflect.Type
	// Keys are LiteLLM's documented keys of the section that Tollgate
	// accepts and does not act on.
	Keys []Key
	// Unknown says what LiteLLM does with the section's other keys.
	Unknown string
	// Extensions are acted-on keys that are Tollgate's own, not LiteLLM's.
	Extensions []string
	// Notes qualify acted-on keys whose handling has a condition.
	Notes map[string]string
}

// The statuses of a key in the compatibility table.
const (
	StatusActed     = "acted on"
	StatusExtension = "acted on (Tollgate extension)"
	StatusWarned    = "accepted, warned: no effect"
)

func typeOf[T any]() reflect.Type { return reflect.TypeFor[T]() }

// Notes shared by many keys.
const (
	noteLogging     = "LiteLLM logging/callback integration; Tollgate logs with slog and exports Prometheus metrics"
	noteCaching     = "Tollgate's response cache is exact-match, local or on the gateway's Redis (docs/caching.md)"
	noteNotEnforced = "NOT ENFORCED by Tollgate"
	noteSecretMgr   = "Tollgate reads secrets from the file and os.environ/ references only"
	noteUIOnly      = "LiteLLM admin UI setting"
	notePassThru    = "pass-through routes always use the gateway's credentials: the provider's first deployment, else its environment variable"
	noteMCP         = "Tollgate serves no MCP gateway"
	noteGuardrails  = "Tollgate runs no guardrails"
	noteJobs        = "LiteLLM background job tuning; Tollgate's jobs have their own timing"
	noteMetadata    = "model metadata; not used by Tollgate"
	noteAWSChain    = "credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID, AWS_PROFILE with role_arn, AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE, instance roles)"
	noteProvider    = "provider credential for a dialect Tollgate does not serve yet"
)

// Sections are the LiteLLM config sections, in document order.
var Sections = []*Section{
	{
		Path: "", Type: typeOf[Config](),
		Unknown:    "LiteLLM ignores other top-level keys",
		Extensions: []string{"llm", "binds"},
		Notes: map[string]string{
			"llm":                   "agentgateway's simplified format; its keys are checked strictly",
			"binds":                 "agentgateway's routing format; its keys are checked strictly",
			"callback_settings":     "acted on for entries with callback_type generic_api (a webhook named by the entry, see docs/callbacks.md); other entries' keys are accepted",
			"default_vertex_config": "the Google credentials of /vertex_ai/* pass-through calls (vertex_project, vertex_location, vertex_credentials; Tollgate's api_base sends them elsewhere)",
		},
		Keys: []Key{
			{"finetune_settings", "object", "Tollgate serves no /fine_tuning endpoints"},
			{"files_settings", "array of objects", "not read: /v1/files goes to a model_list deployment of the provider, with its credentials"},
			{"assistant_settings", "object", "Tollgate serves no /assistants endpoints"},
			{"credential_list", "array of objects", "litellm_credential_name references are not resolved; give api_key on the deployment"},
			{"mcp_servers", "object", noteMCP},
			{"mcp_tools", "array of objects", noteMCP},
			{"vector_store_registry", "array of objects", "Tollgate serves no vector stores"},
			{"prompts", "array of objects", "Tollgate has no prompt management"},
			{"search_tools", "array of objects", "Tollgate serves no /search endpoints"},
			{"include", "array of strings", "included files are NOT read: deployments and settings in them are missing"},
		},
	},
	{
		Path: "guardrails[]", Type: typeOf[Guardrail](),
		Unknown: "LiteLLM ignores other keys of a guardrail",
		Notes: map[string]string{
			"guardrail_name": "selected per request (guardrails in the body or metadata), per key and per team (metadata.guardrails); see docs/guardrails.md",
		},
	},
	{
		Path: "guardrails[].litellm_params", Type: typeOf[GuardrailParams](),
		Unknown:    "LiteLLM passes other keys to the guardrail's integration; Tollgate serves litellm_content_filter, litellm_pii, presidio, hide-secrets, detect_prompt_injection, generic_guardrail_api and its own tollgate_input_limits, and lists others as inactive",
		Extensions: []string{"max_input_bytes", "max_input_tokens", "timeout"},
		Notes: map[string]string{
			"guardrail":            "an unknown kind loads with a warning and is listed as inactive by /guardrails/list; it checks nothing",
			"mode":                 "LiteLLM's tag-based form is read as its default",
			"presidio_language":    "sent to Presidio's analyzer",
			"output_parse_pii":     "placeholders are numbered per entity (<EMAIL_ADDRESS>, <EMAIL_ADDRESS_2>) and mapped back in whole and streamed answers",
			"api_key":              "sent as Authorization: Bearer to generic_guardrail_api",
			"unreachable_fallback": "fail_closed (default) or fail_open, for external guardrails",
		},
	},
	{
		Path: "model_list[]", Type: typeOf[ModelEntry](),
		Unknown: "LiteLLM keeps other keys on the deployment",
	},
	{
		Path: "model_list[].litellm_params", Type: typeOf[LiteLLMParams](),
		Unknown:    "LiteLLM passes other keys to the provider call as request parameters, such as temperature or top_p; Tollgate forwards the client's request as sent",
		Extensions: []string{"tokenize"},
		Notes: map[string]string{
			"model":                        "provider/name; a deployment whose provider Tollgate does not serve is disabled (see /model/info)",
			"custom_llm_provider":          "the provider when model has no provider/ prefix",
			"aws_access_key_id":            "a bedrock deployment's credentials sign its Converse calls and /bedrock/* pass-through calls (SigV4)",
			"aws_secret_access_key":        "a bedrock deployment's credentials sign its Converse calls and /bedrock/* pass-through calls (SigV4)",
			"aws_session_token":            "a bedrock deployment's credentials sign its Converse calls and /bedrock/* pass-through calls (SigV4)",
			"aws_region_name":              "the region of a bedrock deployment's Converse and /bedrock/* pass-through calls",
			"aws_profile_name":             "a profile of the shared AWS files (~/.aws/credentials and ~/.aws/config, or AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE): its static keys sign a bedrock deployment's calls unless aws_access_key_id is given (ahead of AWS_ACCESS_KEY_ID), its region serves without aws_region_name or AWS_REGION; read at load and on reload; a profile using SSO, a role or credential_process disables the deployment",
			"aws_bedrock_runtime_endpoint": "a bedrock deployment's api_base",
			"vertex_project":               "a vertex_ai deployment's project, location and credentials serve /vertex_ai/* pass-through calls",
			"vertex_location":              "a vertex_ai deployment's project, location and credentials serve /vertex_ai/* pass-through calls",
			"vertex_credentials":           "a service account key's path or JSON (a string or an object); empty: application default credentials",
			"use_in_pass_through":          "a vertex_ai deployment's credentials serve /vertex_ai/* calls for its project and location",
			"tags":                         "request tags for spend tracking: added to the tags of each request this deployment answers (spend row, callbacks, span, tag metrics); at most 32 tags of at most 128 bytes, UTF-8 without control characters; tag-based routing is not applied",
		},
		Keys: []Key{
			{"output_cost_per_pixel", "number", ""},
			{"max_budget", "number", "deployment budgets are " + noteNotEnforced},
			{"budget_duration", "string", "deployment budgets are " + noteNotEnforced},
			{"max_parallel_requests", "integer", "per-deployment parallel limit " + noteNotEnforced},
			{"itpm", "integer", ""},
			{"otpm", "integer", ""},
			{"default_api_key_tpm_limit", "integer", noteNotEnforced},
			{"default_api_key_rpm_limit", "integer", noteNotEnforced},
			{"cooldown_time", "number", "router_settings.cooldown_time applies to every deployment"},
			{"max_retries", "integer", "retries are router_settings.num_retries"},
			{"num_retries", "integer", "retries are router_settings.num_retries"},
			{"mock_response", "string", "requests go to the upstream"},
			{"mock_timeout", "boolean", ""},
			{"tag_regex", "array of strings", "tag-based routing is not applied"},
			{"max_tokens", "integer", "a default request parameter; Tollgate does not add it"},
			{"drop_params", "boolean", "Tollgate forwards request parameters unchanged"},
			{"additional_drop_params", "array of strings", "Tollgate forwards request parameters unchanged"},
			{"merge_reasoning_content_in_choices", "boolean", ""},
			{"use_litellm_proxy", "boolean", ""},
			{"use_chat_completions_api", "boolean", ""},
			{"litellm_credential_name", "string", "credential_list is not read; give api_key"},
			{"configurable_clientside_auth_params", "array", "clients cannot override the deployment's api_base or key"},
			{"keepalive_seconds", "number", ""},
			{"allow_client_keepalive_override", "boolean", ""},
			{"max_file_size_mb", "number", ""},
			{"litellm_trace_id", "string", ""},
			{"model_info", "object", "give model_info beside litellm_params"},
			{"azure_ad_token", "string", "Azure deployments authenticate with api_key"},
			{"tenant_id", "string", "Azure deployments authenticate with api_key"},
			{"client_id", "string", "Azure deployments authenticate with api_key"},
			{"client_secret", "string", "Azure deployments authenticate with api_key"},
			{"azure_username", "string", "Azure deployments authenticate with api_key"},
			{"azure_password", "string", "Azure deployments authenticate with api_key"},
			{"aws_session_name", "string", noteProvider},
			{"aws_role_name", "string", noteProvider},
			{"aws_web_identity_token", "string", noteProvider},
			{"aws_sts_endpoint", "string", noteProvider},
			{"aws_external_id", "string", noteProvider},
			{"watsonx_region_name", "string", noteProvider},
			{"s3_bucket_name", "string", ""},
			{"gcs_bucket_name", "string", ""},
			{"auto_router_config_path", "string", "Tollgate has no auto router"},
			{"auto_router_default_model", "string", "Tollgate has no auto router"},
			{"auto_router_embedding_model", "string", "Tollgate has no auto router"},
			{"vector_store_id", "string", ""},
		},
	},
	{
		Path: "model_list[].model_info", Type: typeOf[ModelInfo](),
		Unknown: "LiteLLM keeps any other key as free-form model metadata",
		Keys: []Key{
			{"mode", "string", noteMetadata},
			{"max_tokens", "integer", noteMetadata},
			{"max_input_tokens", "integer", "context-window pre-call checks are not applied"},
			{"max_output_tokens", "integer", noteMetadata},
			{"description", "string", noteMetadata},
			{"tier", "string", noteMetadata},
			{"key", "string", noteMetadata},
			{"litellm_provider", "string", noteMetadata},
			{"metadata", "object", noteMetadata},
			{"db_model", "boolean", "Tollgate sets it in /model/info"},
			{"team_id", "string", "team-scoped models are not applied"},
			{"team_public_model_name", "string", "team-scoped models are not applied"},
			{"blocked", "boolean", "a blocked deployment is still served: " + noteNotEnforced},
			{"created_at", "string", noteMetadata},
			{"created_by", "string", noteMetadata},
			{"updated_at", "string", noteMetadata},
			{"updated_by", "string", noteMetadata},
			{"health_check_timeout", "number", "health checks time out after 30 s"},
			{"health_check_model", "string", "health checks ask the deployment's own model"},
			{"health_check_max_tokens", "integer", ""},
			{"supports_function_calling", "boolean", noteMetadata},
			{"supports_parallel_function_calling", "boolean", noteMetadata},
			{"supports_tool_choice", "boolean", noteMetadata},
			{"supports_vision", "boolean", noteMetadata},
			{"supports_response_schema", "boolean", noteMetadata},
			{"supports_system_messages", "boolean", noteMetadata},
			{"supports_prompt_caching", "boolean", noteMetadata},
			{"supports_reasoning", "boolean", noteMetadata},
			{"supports_audio_input", "boolean", noteMetadata},
			{"supports_audio_output", "boolean", noteMetadata},
			{"supports_pdf_input", "boolean", noteMetadata},
			{"supports_web_search", "boolean", noteMetadata},
			{"supports_embedding_image_input", "boolean", noteMetadata},
			{"supported_openai_params", "array of strings", noteMetadata},
			{"allow_fail_open", "boolean", "tag-based routing is not applied"},
			{"enable_tag_filtering", "boolean", "tag-based routing is not applied"},
			{"ptu_count", "integer", ""},
			{"cost_per_ptu_per_hour", "number", ""},
		},
	},
	{
		Path: "general_settings", Type: typeOf[GeneralSettings](),
		Unknown: "LiteLLM ignores other keys",
		Extensions: []string{"redis_url", "metrics_prefix", "metrics_key_labels",
			"request_header_timeout", "request_body_timeout", "max_requests_in_flight", "max_client_connections", "memory_limit", "otel", "content_logging", "tollgate_python_hooks", "budget_allotments"},
		Notes: map[string]string{
			"store_prompts_in_spend_logs": "messages and answers are kept with the spend row, size-capped and redacted (general_settings.content_logging; docs/content-logging.md)",
			"content_logging":             "max_field_bytes (65536), redact_secrets (true), redact_pii (every class); docs/content-logging.md",
			"custom_auth":                 "a Python module.function (relative to the config file) runs in python3 workers and replaces virtual-key auth; a webhook, cel or python mapping also works (docs/custom-auth.md)",
			"custom_key_generate":         "a Python module.function (relative to the config file) runs in python3 workers; a webhook, cel or python mapping also works (docs/custom-auth.md)",
			"tollgate_python_hooks":       "python (python3), workers (2), timeout (2s), cache_ttl (0: the hook runs on every request); docs/custom-auth.md",
			"database_type":               "postgres, sqlite (the default) or dynamo_db (DynamoDB, configured by database_args; docs/dynamodb.md); others stop the start",
			"database_args":               "read for database_type dynamo_db (docs/dynamodb.md); ignored by the SQL stores, whose pool Tollgate sizes",
			"pass_through_endpoints":      "served for paths no Tollgate route takes, reloaded on SIGHUP; see docs/endpoints.md, Pass-through routes",
			"max_requests_in_flight":      "inference requests in flight in this process before new ones are shed with 503 overloaded_error (default 1024 × GOMAXPROCS, lowered while the CPU cannot keep up; -1: no bound); see docs/performance.md, Overload",
			"max_client_connections":      "connections open on the main port before a new one whose first request is an inference route is answered 503 overloaded_error at accept (default twice max_requests_in_flight; never more than twice the in-flight bound in force, nor below 512 × GOMAXPROCS on that account; -1: no bound); see docs/performance.md, Overload",
			"memory_limit":                "the Go runtime's soft memory limit as GOMEMLIMIT writes it (512MiB, off); GOMEMLIMIT in the environment wins; absent: 90 % of the cgroup's memory limit, none without one; read at start; see docs/performance.md, Issue 31: memory at load",
			"budget_allotments":           "on by default with redis_url and a database (false: a Redis script per request, as before; Redis without a database: only when true); budget holds and rate limits (rpm, tpm, max_parallel_requests) are decided in process against allotments this replica holds on Redis, flushed every 100 ms (docs/allotments.md)",
			"otel":                        "OpenTelemetry traces of every inference request (endpoint, protocol, headers, sample_ratio, ...); see docs/tracing.md",
		},
		Keys: []Key{
			{"database_connection_pool_limit", "integer", "the pool is sized by Tollgate"},
			{"database_connection_timeout", "integer", ""},
			{"allow_requests_on_db_unavailable", "boolean", "known keys are served from the snapshot, unknown keys get 503 while the database is down"},
			{"store_model_in_db", "boolean", "/model/new always stores models in the database"},
			{"supported_db_objects", "array of strings", ""},
			{"disable_spend_updates", "boolean", "spend is always booked"},
			{"disable_master_key_return", "boolean", ""},
			{"disable_retry_on_max_parallel_request_limit_error", "boolean", ""},
			{"disable_reset_budget", "boolean", "budgets always reset on schedule"},
			{"disable_adding_master_key_hash_to_db", "boolean", ""},
			{"disable_responses_id_security", "boolean", "a Responses API id is always held to the key that created it (docs/endpoints.md)"},
			{"disable_prisma_schema_update", "boolean", "migrations always run at start"},
			{"completion_model", "string", ""},
			{"embedding_model", "string", ""},
			{"image_generation_model", "string", ""},
			{"moderation_model", "string", ""},
			{"forward_client_headers_to_llm_api", "boolean", "client headers are not forwarded"},
			{"forward_openai_org_id", "boolean", "litellm_params.organization is sent instead"},
			{"enable_jwt_auth", "boolean", "JWT auth " + noteNotEnforced},
			{"litellm_jwtauth", "object", "JWT auth " + noteNotEnforced},
			{"enable_oauth2_auth", "boolean", noteNotEnforced},
			{"enable_oauth2_proxy_auth", "boolean", noteNotEnforced},
			{"oauth2_config_mappings", "object", noteNotEnforced},
			{"enforce_user_param", "boolean", noteNotEnforced},
			{"enforced_params", "array of strings", noteNotEnforced},
			{"reject_clientside_metadata_tags", "boolean", noteNotEnforced},
			{"allowed_routes", "array of strings", noteNotEnforced},
			{"admin_only_routes", "array of strings", noteNotEnforced},
			{"public_routes", "array of strings", noteNotEnforced},
			{"allowed_ips", "array of strings", noteNotEnforced + ": restrict access in front of Tollgate"},
			{"use_x_forwarded_for", "boolean", ""},
			{"litellm_key_header_name", "string", "keys are read from Authorization, x-api-key and api-key only"},
			{"allow_client_side_credentials", "boolean", "clients cannot pass upstream credentials"},
			{"use_client_credentials_pass_through_routes", "boolean", notePassThru},
			{"key_management_system", "string", noteSecretMgr},
			{"key_management_settings", "object", noteSecretMgr},
			{"use_azure_key_vault", "boolean", noteSecretMgr},
			{"use_google_kms", "boolean", noteSecretMgr},
			{"max_parallel_requests", "integer", "per-deployment parallel limit " + noteNotEnforced},
			{"infer_model_from_keys", "boolean", ""},
			{"health_check_details", "boolean", ""},
			{"alerting", "array of strings", "Tollgate sends no alerts; watch the logs and metrics"},
			{"alerting_threshold", "number", "Tollgate sends no alerts"},
			{"alerting_args", "object", "Tollgate sends no alerts"},
			{"alert_types", "array of strings", "Tollgate sends no alerts"},
			{"alert_to_webhook_url", "object", "Tollgate sends no alerts"},
			{"spend_report_frequency", "string", "Tollgate sends no alerts"},
			{"proxy_budget_rescheduler_min_time", "integer", noteJobs},
			{"proxy_budget_rescheduler_max_time", "integer", noteJobs},
			{"proxy_batch_write_at", "integer", "spend is written in batches every 100 ms"},
			{"proxy_batch_polling_interval", "integer", noteJobs},
			{"maximum_spend_logs_retention_period", "string", "spend logs are not purged"},
			{"maximum_spend_logs_retention_interval", "string", "spend logs are not purged"},
			{"user_api_key_cache_ttl", "integer", "key changes reach every replica within a second"},
			{"service_account_settings", "object", ""},
			{"default_team_disabled", "boolean", noteNotEnforced},
			{"custom_sso", "string", noteUIOnly},
			{"ui_access_mode", "string", noteUIOnly},
			{"litellm_license", "string", ""},
			{"user_mcp_management_mode", "string", noteMCP},
			{"mcp_servers", "object", noteMCP},
			{"guardrails", "array of objects", noteGuardrails},
			{"enable_tag_filtering", "boolean", "tag-based routing is not applied"},
			{"allow_user_auth", "boolean", "deprecated in LiteLLM"},
		},
	},
	{
		Path: "general_settings.database_args", Type: typeOf[DatabaseArgs](),
		Unknown:    "LiteLLM refuses other keys",
		Extensions: []string{"endpoint_url"},
		Notes: map[string]string{
			"billing_mode":         "for the tables Tollgate creates when missing: PAY_PER_REQUEST or PROVISIONED_THROUGHPUT (PROVISIONED also accepted); existing tables are used as they are",
			"read_capacity_units":  "provisioned read units of each table and index created (default 5)",
			"write_capacity_units": "provisioned write units of each table and index created (default 5)",
			"ssl_verify":           "false skips TLS certificate checks",
			"region_name":          "else the AWS chain (AWS_REGION, the profile)",
			"user_table_name":      "users, teams, end users, budgets and organizations (default LiteLLM_UserTable)",
			"key_table_name":       "keys, their alias locks and model budgets (default LiteLLM_VerificationToken)",
			"config_table_name":    "models, files and batches, audit log, tombstones (default LiteLLM_Config)",
			"spend_table_name":     "spend logs, daily rollups, budget spend (default LiteLLM_SpendLogs)",
			"endpoint_url":         "Tollgate's: a DynamoDB-compatible server (dynalite, DynamoDB Local); else AWS_ENDPOINT_URL_DYNAMODB or AWS_ENDPOINT_URL, else AWS",
		},
		Keys: []Key{
			{"aws_role_name", "string", noteAWSChain},
			{"aws_session_name", "string", noteAWSChain},
			{"aws_web_identity_token", "string", noteAWSChain},
			{"aws_provider_id", "string", noteAWSChain},
			{"aws_policy_arns", "array of strings", noteAWSChain},
			{"aws_policy", "string", noteAWSChain},
			{"aws_duration_seconds", "integer", noteAWSChain},
			{"assume_role_aws_role_name", "string", noteAWSChain},
			{"assume_role_aws_session_name", "string", noteAWSChain},
		},
	},
	{
		Path: "general_settings.pass_through_endpoints[]", Type: typeOf[PassThroughEndpoint](),
		Unknown: "LiteLLM ignores other keys of an endpoint",
		Notes: map[string]string{
			"headers":          "set over the client's; os.environ/NAME is resolved whole or as one word (Bearer os.environ/NAME)",
			"auth":             "true: a virtual key is required, its model access, rate limits and budgets apply; false or absent: open to anyone",
			"cost_per_request": "held before and booked for every call when auth is true (the target's answer is not read for usage)",
		},
		Keys: []Key{
			{"guardrails", "object", noteGuardrails},
		},
	},
	{
		Path: "litellm_settings", Type: typeOf[LiteLLMSettings](),
		Unknown:    "LiteLLM sets other keys as attributes of its Python module",
		Extensions: []string{"callback_queue_max_bytes"},
		Notes: map[string]string{
			"cache":                    "an exact-match response cache, scoped per team (or key) unless cache_params.namespace shares it (docs/caching.md)",
			"callback_queue_max_bytes": "Tollgate's: the bytes of payloads each logging callback's queue holds, at most, before it drops (default 67108864; docs/callbacks.md)",
			"callbacks":                "served: otel (or opentelemetry), langfuse and langfuse_otel export OpenTelemetry traces (docs/tracing.md); generic_api, datadog, s3 and callback_settings webhooks get LiteLLM's logging payload (docs/callbacks.md); prometheus is /metrics; any other name is warned about at start",
			"success_callback":         "as callbacks, for successful requests only; the tracers (otel, langfuse) trace every request",
			"failure_callback":         "as callbacks, for failed requests only; the tracers (otel, langfuse) trace every request",
			"s3_callback_params":       "where the s3 callback writes JSON lines objects, batched by time and size (docs/callbacks.md)",
			"turn_off_message_logging": "no messages or answers in spend rows or callbacks, whatever else is set (docs/content-logging.md)",
			"langfuse_default_tags":    "user_api_key_alias, user_api_key_user_id, user_api_key_team_id, user_api_key_team_alias, user_api_key_org_id, user_api_key_end_user_id and cache_hit become field:value on the request span's langfuse.trace.tags (none of the key's under redact_user_api_key_info); other fields (cache_key, proxy_base_url, user_api_key_user_email, semantic-similarity) have no value here and are skipped (docs/tracing.md)",
			"redact_user_api_key_info": "the key's hash, alias, user, team and organization (metadata.user_api_key_*) are left out of callback payloads and spans; spend rows keep them (docs/callbacks.md, docs/tracing.md)",
		},
		Keys: []Key{
			{"budget_duration", "string", "the gateway's budget (max_budget) has no period here: its spend never resets on its own; reset it with /user/update on litellm-proxy-budget"},
			{"drop_params", "boolean", "Tollgate forwards request parameters unchanged"},
			{"modify_params", "boolean", "Tollgate forwards request parameters unchanged"},
			{"set_verbose", "boolean", "use serve's log flags"},
			{"json_logs", "boolean", "use serve's log flags"},
			{"service_callbacks", "array of strings", noteLogging},
			{"service_callback", "array of strings", noteLogging},
			{"redact_messages_in_exceptions", "boolean", ""},
			{"force_ipv4", "boolean", ""},
			{"ssl_verify", "boolean", "upstream TLS is always verified"},
			{"content_policy_fallbacks", "array of objects", "fallbacks apply to every failure"},
			{"mcp_aliases", "object", noteMCP},
			{"enable_preview_features", "boolean", ""},
			{"disable_end_user_cost_tracking", "boolean", "end-user spend is always tracked"},
			{"disable_end_user_cost_tracking_prometheus_only", "boolean", ""},
			{"key_generation_settings", "object", "who may generate keys is Tollgate's role model; " + noteNotEnforced},
			{"default_team_settings", "array of objects", ""},
			{"default_internal_user_params", "object", ""},
			{"max_internal_user_budget", "number", noteNotEnforced},
			{"internal_user_budget_duration", "string", noteNotEnforced},
			{"disable_add_transform_inline_image_block", "boolean", ""},
			{"use_chat_completions_url_for_anthropic_messages", "boolean", ""},
			{"disable_hf_tokenizer_download", "boolean", ""},
			{"enable_json_schema_validation", "boolean", ""},
			{"enable_key_alias_format_validation", "boolean", ""},
			{"disable_copilot_system_to_assistant", "boolean", ""},
			{"include_cost_in_streaming_usage", "boolean", "the cost is in the spend logs"},
			{"return_response_headers", "boolean", ""},
			{"global_disable_no_log_param", "boolean", ""},
			{"enable_loadbalancing_on_batch_endpoints", "boolean", ""},
			{"guardrails", "array of objects", noteGuardrails},
			{"telemetry", "boolean", "Tollgate sends no telemetry"},
		},
	},
	{
		Path: "litellm_settings.cache_params", Type: typeOf[CacheParams](),
		Unknown:    "LiteLLM passes other keys to the cache it builds; Tollgate refuses them",
		Extensions: []string{"max_bytes", "max_entry_bytes", "charge_hits", "max_ttl"},
		// local-semantic is a type value, not a key: noted under type.
		Notes: map[string]string{
			"type":                                 "local (in process, LRU bounded by max_bytes) or redis (the gateway's redis_url); redis-semantic (answers on Redis) and Tollgate's local-semantic add a semantic cache whose vector index is in process, per replica (docs/caching.md); qdrant-semantic, s3, gcs and disk are refused",
			"similarity_threshold":                 "the cosine similarity a prior prompt needs for a semantic hit (redis-semantic, local-semantic)",
			"redis_semantic_cache_embedding_model": "the model_list model_name (an OpenAI-compatible embeddings deployment) that embeds prompts for the semantic cache",
			"host":                                 "accepted; the cache uses the gateway's Redis (redis_url), not a Redis of its own",
			"port":                                 "as host",
			"password":                             "as host",
			"namespace":                            "shared by every key and team: without it each team (or key without a team) has a cache of its own",
			"supported_call_types":                 "completion, acompletion, text_completion, atext_completion, embedding, aembedding, anthropic_messages, rerank, arerank; the Responses API is never cached",
			"max_bytes":                            "Tollgate's: the local cache's size in bytes (default 268435456)",
			"max_entry_bytes":                      "Tollgate's: larger answers are not stored (default 1048576)",
			"charge_hits":                          "Tollgate's: a hit is booked at what its answer cost when stored (default false: hits are free)",
			"max_ttl":                              "Tollgate's: the most seconds a request's cache.ttl keeps an answer (default 86400, or ttl when longer)",
		},
		Keys: []Key{
			{"redis_semantic_cache_index_name", "string", "the semantic index is in process, not a Redis Search index"},
			{"max_connections", "integer", "the gateway's Redis client's pool is used"},
			{"redis_startup_nodes", "array of objects", "the gateway's Redis is used"},
			{"service_name", "string", "the gateway's Redis is used"},
			{"max_size_in_memory", "integer", "the local cache is bounded by max_bytes"},
		},
	},
	{
		Path: "litellm_settings.s3_callback_params", Type: typeOf[S3CallbackParams](),
		Unknown: "LiteLLM ignores other keys",
		Notes: map[string]string{
			"s3_api_version":    "accepted; S3's one API version is used",
			"s3_endpoint_url":   "an S3-compatible store, addressed path-style (endpoint/bucket/key)",
			"s3_flush_interval": "seconds between writes (default 10)",
			"s3_batch_size":     "payloads per object at most (default 1000)",
		},
		Keys: []Key{
			{"s3_aws_session_name", "string", "only static keys (s3_aws_access_key_id, or AWS_ACCESS_KEY_ID) sign the writes"},
			{"s3_aws_profile_name", "string", "only static keys (s3_aws_access_key_id, or AWS_ACCESS_KEY_ID) sign the writes"},
			{"s3_aws_role_name", "string", "only static keys (s3_aws_access_key_id, or AWS_ACCESS_KEY_ID) sign the writes"},
			{"s3_aws_web_identity_token", "string", "only static keys (s3_aws_access_key_id, or AWS_ACCESS_KEY_ID) sign the writes"},
			{"s3_aws_sts_endpoint", "string", "only static keys (s3_aws_access_key_id, or AWS_ACCESS_KEY_ID) sign the writes"},
			{"s3_config", "object", ""},
			{"s3_use_team_prefix", "boolean", "objects hold many requests: keys are s3_path/date/time-random.jsonl"},
			{"s3_use_key_prefix", "boolean", "objects hold many requests: keys are s3_path/date/time-random.jsonl"},
			{"s3_strip_base64_files", "boolean", ""},
		},
	},
	{
		Path: "callback_settings.<name>", Type: typeOf[CallbackSettings](),
		Unknown: "LiteLLM passes other keys to the callback; Tollgate ignores them",
		Notes: map[string]string{
			"callback_type":   "generic_api makes the entry a webhook callback; other entries configure callbacks served elsewhere or not at all",
			"headers":         "values may be os.environ/NAME, $NAME or ${NAME}",
			"event_types":     "llm_api_success, llm_api_failure; both when absent",
			"log_format":      "json_array (default: a batch as one JSON array), ndjson, or single (one POST per payload)",
			"message_logging": "false: no messages or answers to this callback (a webhook, datadog, s3; langfuse and otel: the span carries none), the others keep theirs (docs/content-logging.md)",
		},
	},
	{
		Path: "litellm_settings.default_key_generate_params", Type: typeOf[KeyGenerateParams](),
		Unknown: "other /key/generate fields are not defaulted by Tollgate",
	},
	{
		Path: "litellm_settings.upperbound_key_generate_params", Type: typeOf[KeyGenerateParams](),
		Unknown: "other /key/generate fields are not bounded by Tollgate",
	},
	{
		Path: "router_settings", Type: typeOf[RouterSettings](),
		Unknown: "LiteLLM passes other keys to its Router",
		Notes: map[string]string{
			"routing_strategy":  "usage-based-routing-v2 is usage-based-routing",
			"model_group_alias": "a mapping of alias to model group name",
		},
		Keys: []Key{
			{"redis_db", "integer", "give the database in general_settings.redis_url"},
			{"enable_pre_call_checks", "boolean", "context-window pre-call checks are not applied"},
			{"enable_pre_call_check", "boolean", "context-window pre-call checks are not applied"},
			{"optional_pre_call_checks", "array of strings", ""},
			{"content_policy_fallbacks", "array of objects", "fallbacks apply to every failure"},
			{"enable_tag_filtering", "boolean", "tag-based routing is not applied"},
			{"tag_filtering_match_any", "boolean", "tag-based routing is not applied"},
			{"tag_routing_prefix", "string", "tag-based routing is not applied"},
			{"disable_cooldowns", "boolean", "set allowed_fails high instead"},
			{"retry_policy", "object", "num_retries applies to every retryable failure"},
			{"model_group_retry_policy", "object", "num_retries applies to every group"},
			{"allowed_fails_policy", "object", "allowed_fails applies to every failure"},
			{"default_max_parallel_requests", "integer", noteNotEnforced},
			{"default_priority", "integer", ""},
			{"polling_interval", "number", ""},
			{"max_fallbacks", "integer", "every listed fallback is tried"},
			{"max_retries", "integer", "retries are num_retries"},
			{"default_litellm_params", "object", "Tollgate forwards request parameters unchanged"},
			{"stream_timeout", "number", "set stream_timeout on the deployment"},
			{"debug_level", "string", ""},
			{"set_verbose", "boolean", ""},
			{"client_ttl", "integer", ""},
			{"cache_kwargs", "object", noteCaching},
			{"cache_responses", "boolean", noteCaching},
			{"caching_groups", "array", noteCaching},
			{"routing_strategy_args", "object", ""},
			{"routing_groups", "array of objects", ""},
			{"alerting_config", "object", "Tollgate sends no alerts"},
			{"assistants_config", "object", ""},
			{"provider_budget_config", "object", "provider budgets are " + noteNotEnforced},
			{"router_general_settings", "object", ""},
			{"deployment_affinity_ttl_seconds", "integer", ""},
			{"model_group_affinity_config", "object", ""},
			{"ignore_invalid_deployments", "boolean", "a deployment whose provider Tollgate does not serve is always disabled, not fatal"},
			{"search_tools", "array of objects", "Tollgate serves no /search endpoints"},
			{"guardrail_list", "array of objects", noteGuardrails},
		},
	},
}

var sectionByPath = func() map[string]*Section {
	m := map[string]*Section{}
	for _, s := range Sections {
		m[s.Path] = s
	}
	return m
}()

// KeyRow is one line of the compatibility table.
type KeyRow struct {
	Section, Key, Type, Status, Note string
}

// KeyRows lists every key of every section: those Tollgate acts on first (in
// struct order), then the accepted-and-warned ones (sorted).
func (s *Section) KeyRows() []KeyRow {
	var rows []KeyRow
	t := s.Type
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		st := StatusActed
		if slices.Contains(s.Extensions, name) {
			st = StatusExtension
		}
		rows = append(rows, KeyRow{s.Path, name, typeName(f.Type), st, s.Notes[name]})
	}
	keys := slices.Clone(s.Keys)
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	for _, k := range keys {
		rows = append(rows, KeyRow{s.Path, k.Name, k.Type, StatusWarned, k.Note})
	}
	return rows
}

// typeName describes a Go field type in the words LiteLLM's docs use.
func typeName(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[EnvString]():
		return "string (os.environ/ allowed)"
	case reflect.TypeFor[Seconds]():
		return "number (seconds)"
	case reflect.TypeFor[Duration]():
		return "duration"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Float64:
		return "number"
	case reflect.Slice:
		return "array of " + plural(typeName(t.Elem()))
	case reflect.Map:
		return "object"
	case reflect.Struct:
		return "object"
	case reflect.Interface:
		return "any"
	}
	return t.String()
}

func plural(s string) string {
	switch s {
	case "object", "string", "integer", "number", "boolean":
		return s + "s"
	}
	return s
}

// keyCheck walks a parsed config file and sorts its keys (see the top of
// this file). Warnings are gathered per key path, so a key repeated on every
// deployment is one warning naming its first place and the count.
type keyCheck struct {
	name  string
	found map[string]*keyUse
	order []string
}

type keyUse struct {
	pos   string // file:line:col of the first use
	path  string // concrete path of the first use
	msg   string
	count int
}

func (c *keyCheck) warnKey(id, pos, path, msg string) {
	if u, ok := c.found[id]; ok {
		u.count++
		return
	}
	c.found[id] = &keyUse{pos: pos, path: path, msg: msg, count: 1}
	c.order = append(c.order, id)
}

func (c *keyCheck) warnings() []string {
	out := make([]string, 0, len(c.order))
	for _, id := range c.order {
		u := c.found[id]
		w := fmt.Sprintf("%s: %s %s", u.pos, u.path, u.msg)
		if u.count > 1 {
			w += fmt.Sprintf(" (and %d more)", u.count-1)
		}
		out = append(out, w)
	}
	return out
}

func (c *keyCheck) position(n ast.Node) string {
	p := n.GetToken().Position
	return fmt.Sprintf("%s:%d:%d", c.name, p.Line, p.Column)
}

// checkKeys checks the keys of the file's first document.
func checkKeys(name string, f *ast.File) ([]string, error) {
	c := &keyCheck{name: name, found: map[string]*keyUse{}}
	if len(f.Docs) == 0 || f.Docs[0].Body == nil {
		return nil, nil
	}
	if err := c.walk(f.Docs[0].Body, typeOf[Config](), "", ""); err != nil {
		return nil, err
	}
	return c.warnings(), nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// walk checks node, which decodes into t, at the section path (abstract,
// with []) and concrete (with indices).
func (c *keyCheck) walk(n ast.Node, t reflect.Type, path, concrete string) error {
	for {
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
			continue
		case *ast.TagNode:
			n = v.Value
			continue
		}
		break
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice:
		seq, ok := n.(*ast.SequenceNode)
		if !ok {
			return nil // the decoder reports the type
		}
		for i, item := range seq.Values {
			if err := c.walk(item, t.Elem(), path+"[]", fmt.Sprintf("%s[%d]", concrete, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if t.Elem().Kind() != reflect.Struct {
			return nil // free-form
		}
		for _, mv := range mappingValues(n) {
			k := mv.Key.GetToken().Value
			if err := c.walk(mv.Value, t.Elem(), join(path, "<name>"), join(concrete, k)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		fields := yamlFields(t)
		sec := sectionByPath[path]
		for _, mv := range mappingValues(n) {
			if mv.Key.IsMergeKey() {
				continue
			}
			k := mv.Key.GetToken().Value
			if ft, ok := fields[k]; ok {
				if err := c.walk(mv.Value, ft, join(path, k), join(concrete, k)); err != nil {
					return err
				}
				continue
			}
			if err := c.other(sec, t, mv, k, path, concrete); err != nil {
				return err
			}
		}
	}
	return nil
}

// other handles a key that is not a field of the section's struct.
func (c *keyCheck) other(sec *Section, t reflect.Type, mv *ast.MappingValueNode, k, path, concrete string) error {
	pos := c.position(mv.Key)
	where := concrete
	if where == "" {
		where = "the top level"
	}
	acted := yamlKeys(reflect.New(t).Elem().Interface())
	if sec == nil { // Tollgate's and agentgateway's own sections: strict
		msg := fmt.Sprintf("%s: unknown field %q in %s", pos, k, where)
		if s := closest(k, acted, 3); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		return fmt.Errorf("%s", msg)
	}
	id := join(path, k)
	if i := slices.IndexFunc(sec.Keys, func(d Key) bool { return d.Name == k }); i >= 0 {
		msg := "is accepted for LiteLLM compatibility and has no effect in Tollgate"
		if note := sec.Keys[i].Note; note != "" {
			msg += " (" + note + ")"
		}
		c.warnKey(id, pos, join(concrete, k), msg)
		return nil
	}
	if s := typoOf(k, acted); s != "" {
		return fmt.Errorf("%s: unknown field %q in %s (did you mean %q?)", pos, k, where, s)
	}
	msg := "is not a key Tollgate knows and is ignored (" + sec.Unknown + ")"
	documented := make([]string, len(sec.Keys))
	for i, d := range sec.Keys {
		documented[i] = d.Name
	}
	if s := closest(k, documented, 3); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	c.warnKey(id, pos, join(concrete, k), msg)
	return nil
}

// typoOf returns the acted-on key that k is a near miss of: a key that
// differs only in case, or by one edit (two for keys of eight characters or
// more). Short keys are left alone: "n" or "top_k" are noteProvider arguments,
// not typos.
func typoOf(k string, acted []string) string {
	if len(k) < 4 {
		return ""
	}
	for _, a := range acted {
		limit := 1
		if len(a) >= 8 {
			limit = 2
		}
		if d := editDistance(strings.ToLower(k), strings.ToLower(a)); d <= limit && len(a) >= 4 {
			return a
		}
	}
	return ""
}

// closest is the candidate nearest to k within maxD edits, never k itself.
func closest(k string, candidates []string, maxD int) string {
	best, bestD := "", maxD
	for _, c := range candidates {
		if c == k {
			continue
		}
		d := editDistance(strings.ToLower(k), strings.ToLower(c))
		if d < bestD || (d == bestD && best != "" && len(c) == len(k) && len(best) != len(k)) {
			best, bestD = c, d
		}
	}
	return best
}

// mappingValues are the entries of a mapping node (nil for anything else).
func mappingValues(n ast.Node) []*ast.MappingValueNode {
	switch v := n.(type) {
	case *ast.MappingNode:
		return v.Values
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{v}
	}
	return nil
}

// yamlFields maps a struct's yaml keys to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag != "" && tag != "-" {
			m[tag] = t.Field(i).Type
		}
	}
	return m
}
