// Package config loads Tollgate's configuration: LiteLLM's config.yaml
// (model_list, general_settings, litellm_settings, router_settings,
// environment_variables) and agentgateway's `llm:` and `binds:` formats,
// normalized into one form. Errors name the file, line and column. Any
// LiteLLM config loads: its keys Tollgate does not act on are warnings, and
// only typos of keys Tollgate acts on, and values of the wrong type, are
// errors (schema.go holds the key tables).
package config

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/parser"
)

// The environment variables the config falls back to.
const (
	EnvMasterKey   = "TOLLGATE_MASTER_KEY"
	EnvDatabaseURL = "DATABASE_URL"
	EnvRedisURL    = "REDIS_URL"
	// EnvSingleDeploymentThreshold is LiteLLM's name for the traffic a
	// group's only deployment must fail entirely, in a minute, to cool
	// down (Routing.SingleDeploymentThreshold).
	EnvSingleDeploymentThreshold = "SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD"
)

// The defaults LiteLLM's router uses (litellm/constants.py).
const (
	// DefaultAllowedFails is LiteLLM's DEFAULT_ALLOWED_FAILS.
	DefaultAllowedFails = 3
	// DefaultSingleDeploymentThreshold is LiteLLM's default
	// SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD.
	DefaultSingleDeploymentThreshold = 1000
)

// EnvVars are the environment variables Tollgate reads, and what for (the
// compatibility page lists them).
var EnvVars = []Key{
	{EnvMasterKey, "string", "the master key when general_settings.master_key is not set"},
	{EnvDatabaseURL, "string", "PostgreSQL when general_settings.database_url is not set (as LiteLLM)"},
	{EnvRedisURL, "string", "Redis when neither general_settings.redis_url nor router_settings.redis_url/redis_host is set"},
	{"TOLLGATE_CONFIG", "string", "the config file when serve has no --config"},
	{EnvSingleDeploymentThreshold, "integer", "requests in a minute, all failed, that cool down a group's only deployment (default 1000, as LiteLLM); not used when router_settings.allowed_fails is set"},
}

// Config is a loaded configuration. The YAML sections are kept as written;
// the normalized fields below them are what the gateway uses.
type Config struct {
	ModelList            []ModelEntry      `yaml:"model_list"`
	GeneralSettings      GeneralSettings   `yaml:"general_settings"`
	LiteLLMSettings      LiteLLMSettings   `yaml:"litellm_settings"`
	RouterSettings       RouterSettings    `yaml:"router_settings"`
	EnvironmentVariables map[string]string `yaml:"environment_variables"`
	LLM                  *LLM              `yaml:"llm"`
	Binds                []Bind            `yaml:"binds"`
	// DefaultVertexConfig is LiteLLM's default_vertex_config: the
	// credentials of /vertex_ai/* calls that no vertex_ai deployment's
	// match.
	DefaultVertexConfig *DefaultVertexConfig `yaml:"default_vertex_config"`
	// CallbackSettings is LiteLLM's callback_settings: per callback name,
	// its settings (a generic_api webhook's endpoint and headers).
	CallbackSettings map[string]CallbackSettings `yaml:"callback_settings"`
	// Guardrails is LiteLLM's guardrails list (internal/guardrail).
	Guardrails []Guardrail `yaml:"guardrails"`

	// Path is the file the config came from ("" for the embedded default).
	Path string `yaml:"-"`
	// Deployments are every upstream, from all config dialects.
	Deployments []Deployment `yaml:"-"`
	// StaticKeys are agentgateway's config-file keys (hashed).
	StaticKeys []StaticKey `yaml:"-"`
	// APIKeyMode is "strict", "optional", or "" when no apiKey policy is set.
	APIKeyMode string `yaml:"-"`
	// LocalRateLimits are agentgateway's gateway-wide token buckets.
	LocalRateLimits []LocalRateLimit `yaml:"-"`
	// CustomAuth and CustomKeyGenerate are the hooks of
	// general_settings.custom_auth / custom_key_generate; nil when unset. A
	// Python path (module.function) is a HookSpec with Python set.
	CustomAuth, CustomKeyGenerate *HookSpec `yaml:"-"`
	// ListenPort is the port the file asks for (llm.port, binds[0].port); 0 when none.
	ListenPort int `yaml:"-"`
	// Warnings are things the operator should know; serve logs them.
	Warnings []string `yaml:"-"`
}

// DefaultVertexConfig is default_vertex_config. APIBase (Tollgate's) sends
// the calls to another host than {location}-aiplatform.googleapis.com.
type DefaultVertexConfig struct {
	VertexProject     EnvString         `yaml:"vertex_project"`
	VertexLocation    EnvString         `yaml:"vertex_location"`
	VertexCredentials VertexCredentials `yaml:"vertex_credentials"`
	APIBase           EnvString         `yaml:"api_base"`
}

// HookSpec is a webhook, a CEL expression or a Python function deciding
// auth or key generation.
type HookSpec struct {
	Mode    string       `yaml:"mode"` // custom_auth: after (default) or replace
	CEL     string       `yaml:"cel"`
	Webhook *WebhookSpec `yaml:"webhook"`
	// Python is LiteLLM's module.function, resolved against the config
	// file's directory. The string form custom_auth: module.function is
	// LiteLLM's: the function replaces virtual-key auth (mode replace).
	Python string `yaml:"python"`
}

// WebhookSpec is an HTTP decision service.
type WebhookSpec struct {
	URL      EnvString            `yaml:"url"`
	Timeout  *Seconds             `yaml:"timeout"`
	Headers  map[string]EnvString `yaml:"headers"`
	CacheTTL *Seconds             `yaml:"cache_ttl"`
}

// StaticKey is a key from the config file; only its sha256 is kept.
type StaticKey struct {
	Hash     string // sha256 hex
	Metadata map[string]any
}

// LocalRateLimit is a normalized token bucket.
type LocalRateLimit struct {
	MaxTokens     int64
	TokensPerFill int64
	FillInterval  time.Duration
	Type          string // tokens or requests
	Scope         string // global, key, user, team or end_user
}

// GlobalMaxParallelRequests is the gateway-wide bound on requests in flight:
// general_settings.global_max_parallel_requests, else
// litellm_settings.max_parallel_requests; 0 means none.
func (c *Config) GlobalMaxParallelRequests() int64 {
	if v := c.GeneralSettings.GlobalMaxParallelRequests; v != nil {
		return *v
	}
	if v := c.LiteLLMSettings.MaxParallelRequests; v != nil {
		return *v
	}
	return 0
}

// The demo model's prices are fictional: small but not zero, so that spend,
// budgets and the UI's charts move on the embedded default ($10 per million
// prompt tokens, $30 per million completion tokens). Nothing is paid to anyone.
const (
	DemoInputCostPerToken  = 0.00001
	DemoOutputCostPerToken = 0.00003
)

// Default is the zero-config embedded default: one built-in `demo` model
// that answers inside the process, at the fictional demo prices.
func Default() *Config {
	return &Config{Deployments: []Deployment{{
		ModelName: "demo", Provider: "demo", Model: "demo", ID: "demo",
		InputCostPerToken: ptr(DemoInputCostPerToken), OutputCostPerToken: ptr(DemoOutputCostPerToken),
	}}}
}

func ptr[T any](v T) *T { return &v }

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse reads and validates a config; name is used in error messages.
// Input the YAML library cannot cope with is an error, never a panic (the
// decoder has panicked on malformed input found by FuzzParse).
func Parse(name string, data []byte) (cfg *Config, err error) {
	defer func() {
		if r := recover(); r != nil {
			cfg, err = nil, fmt.Errorf("%s: not a config Tollgate can read: the YAML decoder failed on it (%v)", name, r)
		}
	}()
	return parse(name, data)
}

func parse(name string, data []byte) (*Config, error) {
	// environment_variables are applied before any value is resolved.
	var env struct {
		EnvironmentVariables map[string]any `yaml:"environment_variables"`
	}
	if err := yaml.Unmarshal(data, &env); err != nil {
		return nil, positioned(name, err)
	}
	for k, v := range env.EnvironmentVariables {
		if err := os.Setenv(k, fmt.Sprint(v)); err != nil {
			return nil, fmt.Errorf("%s: environment_variables.%s: %w", name, k, err)
		}
	}
	// Keys are sorted before decoding (see schema.go): LiteLLM keys without
	// effect are warnings, typos of keys Tollgate acts on are errors.
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, positioned(name, err)
	}
	keyWarnings, err := checkKeys(name, file)
	if err != nil {
		return nil, err
	}
	w := &warnings{name: name}
	ctx := context.WithValue(context.Background(), warningsKey{}, w)
	cfg := &Config{Path: name}
	// Not strict: checkKeys has judged every key already.
	if err := yaml.UnmarshalContext(ctx, data, cfg); err != nil {
		return nil, positioned(name, err)
	}
	n := &normalizer{name: name, src: data, cfg: cfg, file: file}
	if err := n.run(); err != nil {
		return nil, err
	}
	cfg.Warnings = append(append(keyWarnings, w.list...), n.warnings...)
	return cfg, nil
}

// MasterKey is general_settings.master_key, else TOLLGATE_MASTER_KEY.
func (c *Config) MasterKey() string {
	if c.GeneralSettings.MasterKey != "" {
		return string(c.GeneralSettings.MasterKey)
	}
	return os.Getenv(EnvMasterKey)
}

// DatabaseURL is general_settings.database_url, else DATABASE_URL.
func (c *Config) DatabaseURL() string {
	if c.GeneralSettings.DatabaseURL != "" {
		return string(c.GeneralSettings.DatabaseURL)
	}
	return os.Getenv(EnvDatabaseURL)
}

// RedisURL is general_settings.redis_url, else router_settings.redis_url,
// else router_settings.redis_host (with redis_port and redis_password), else
// REDIS_URL.
func (c *Config) RedisURL() string {
	if c.GeneralSettings.RedisURL != "" {
		return string(c.GeneralSettings.RedisURL)
	}
	if c.RouterSettings.RedisURL != "" {
		return string(c.RouterSettings.RedisURL)
	}
	if rs := c.RouterSettings; rs.RedisHost != "" {
		port := "6379"
		if rs.RedisPort != nil {
			port = fmt.Sprint(rs.RedisPort)
		}
		auth := ""
		if rs.RedisPassword != "" {
			auth = ":" + url.QueryEscape(string(rs.RedisPassword)) + "@"
		}
		return "redis://" + auth + net.JoinHostPort(string(rs.RedisHost), port)
	}
	return os.Getenv(EnvRedisURL)
}

// MaxRequestBytes is general_settings.max_request_size_mb in bytes (default 16 MiB).
func (c *Config) MaxRequestBytes() int64 {
	if mb := c.GeneralSettings.MaxRequestSizeMB; mb != nil && *mb > 0 {
		return max(1, int64(*mb*(1<<20)))
	}
	return 16 << 20
}

// MaxResponseBytes is general_settings.max_response_size_mb in bytes: the
// largest whole (non-streaming) upstream answer the gateway reads. LiteLLM
// has no default; Tollgate's is 32 MiB, LiteLLM's recommended production
// value, so that no upstream can make the gateway buffer without bound.
func (c *Config) MaxResponseBytes() int64 {
	if mb := c.GeneralSettings.MaxResponseSizeMB; mb != nil && *mb > 0 {
		return max(1, int64(*mb*(1<<20)))
	}
	return 32 << 20
}

// RequestHeaderTimeout is general_settings.request_header_timeout (default
// 10 s): how long a client may take to send a request's headers.
func (c *Config) RequestHeaderTimeout() time.Duration {
	if s := c.GeneralSettings.RequestHeaderTimeout; s != nil {
		return time.Duration(*s)
	}
	return 10 * time.Second
}

// MaxRequestsInFlight is general_settings.max_requests_in_flight: the bound
// on this process's inference requests in flight past which new ones are
// shed with a 503. Absent or 0 it is derived from the CPUs Go may use,
// 1024 per GOMAXPROCS: LLM calls wait on their upstream for seconds to
// minutes, costing memory rather than CPU, so the bound sits far above
// what the CPUs keep busy and bounds the memory they hold
// (docs/performance.md).
// -1 means no bound.
func (c *Config) MaxRequestsInFlight() int64 {
	if v := c.GeneralSettings.MaxRequestsInFlight; v != nil && *v != 0 {
		return max(*v, -1)
	}
	return 1024 * int64(runtime.GOMAXPROCS(0))
}

// MaxClientConnections is general_settings.max_client_connections: the
// bound on connections open on the main port past which a new connection
// is answered 503 at accept (internal/server/accept.go). Absent or 0 it is
// twice MaxRequestsInFlight: one connection carrying each request the
// in-flight bound admits and one idle in a client's pool or waiting to be
// read; past that a connection can only wait for a request the in-flight
// bound would shed (docs/performance.md). -1 (or no in-flight bound)
// means no bound.
func (c *Config) MaxClientConnections() int64 {
	if v := c.GeneralSettings.MaxClientConnections; v != nil && *v != 0 {
		return max(*v, -1)
	}
	if n := c.MaxRequestsInFlight(); n > 0 {
		return 2 * n
	}
	return -1
}

// RequestBodyTimeout is general_settings.request_body_timeout (default
// 60 s): how long a client may take to send a whole request body, counted
// from the end of its headers. Reading the response is not bounded by it.
func (c *Config) RequestBodyTimeout() time.Duration {
	if s := c.GeneralSettings.RequestBodyTimeout; s != nil {
		return time.Duration(*s)
	}
	return 60 * time.Second
}

// RequestTimeout is litellm_settings.request_timeout, else router_settings.timeout, else 600 s.
func (c *Config) RequestTimeout() time.Duration {
	for _, s := range []*Seconds{c.LiteLLMSettings.RequestTimeout, c.RouterSettings.Timeout} {
		if s != nil && *s > 0 {
			return time.Duration(*s)
		}
	}
	return 600 * time.Second
}

// HashKey is the sha256 hex of a raw key.
func HashKey(raw string) string {
	h := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(h[:])
}

// Routing is the effective retry, fallback and cooldown policy: each value
// from router_settings, else litellm_settings, else the default.
type Routing struct {
	Strategy     string
	NumRetries   int           // default 0
	RetryAfter   time.Duration // minimum wait before a retry
	AllowedFails int           // failures in a minute before a cooldown (default 3)
	Cooldown     time.Duration // default 5s
	// SingleDeploymentThreshold is what a group's only deployment must fail
	// entirely in a minute to cool down (router.Settings): the environment's
	// SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD, else 1000. It is 0 when
	// router_settings.allowed_fails is set to other than LiteLLM's default
	// (3): then, as in LiteLLM, allowed_fails applies to every deployment.
	SingleDeploymentThreshold int
	Fallbacks                 map[string][]string
	ContextWindowFallbacks    map[string][]string
	DefaultFallbacks          []string
}

// Routing returns the effective routing policy.
func (c *Config) Routing() Routing {
	rs, ls := c.RouterSettings, c.LiteLLMSettings
	r := Routing{Strategy: rs.RoutingStrategy, AllowedFails: DefaultAllowedFails, Cooldown: 5 * time.Second,
		SingleDeploymentThreshold: DefaultSingleDeploymentThreshold}
	if n, ok := singleDeploymentThreshold(); ok {
		r.SingleDeploymentThreshold = n
	}
	if r.Strategy == "usage-based-routing-v2" {
		r.Strategy = "usage-based-routing"
	}
	switch {
	case rs.NumRetries != nil:
		r.NumRetries = *rs.NumRetries
	case ls.NumRetries != nil:
		r.NumRetries = *ls.NumRetries
	}
	if rs.RetryAfter != nil {
		r.RetryAfter = time.Duration(*rs.RetryAfter)
	}
	if rs.AllowedFails != nil {
		r.AllowedFails = *rs.AllowedFails
		if r.AllowedFails != DefaultAllowedFails {
			// LiteLLM's _is_allowed_fails_set_on_router: a value other
			// than its default turns the per-minute count on for every
			// deployment, a group's only one included.
			r.SingleDeploymentThreshold = 0
		}
	}
	if rs.CooldownTime != nil {
		r.Cooldown = time.Duration(*rs.CooldownTime)
	}
	merge := func(lists ...[]map[string][]string) map[string][]string {
		out := map[string][]string{}
		for _, l := range lists {
			for _, m := range l {
				for k, v := range m {
					out[k] = append(out[k], v...)
				}
			}
		}
		return out
	}
	r.Fallbacks = merge(rs.Fallbacks, ls.Fallbacks)
	r.ContextWindowFallbacks = merge(rs.ContextWindowFallbacks, ls.ContextWindowFallbacks)
	r.DefaultFallbacks = append(append([]string{}, rs.DefaultFallbacks...), ls.DefaultFallbacks...)
	return r
}

// singleDeploymentThreshold reads SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD;
// ok is false when it is unset or not a positive integer (Parse warns).
func singleDeploymentThreshold() (n int, ok bool) {
	v, set := os.LookupEnv(EnvSingleDeploymentThreshold)
	if !set {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	return n, err == nil && n > 0
}

// ParseModelEntry validates one model_list entry given as JSON, as
// /model/new receives it, with the same rules and messages as the file.
func ParseModelEntry(entry []byte) (Deployment, error) {
	doc := make([]byte, 0, len(entry)+32)
	doc = append(doc, `{"model_list": [`...)
	doc = append(doc, entry...)
	doc = append(doc, "]}"...)
	c, err := Parse("request", doc)
	if err != nil {
		return Deployment{}, err
	}
	if len(c.Deployments) != 1 {
		return Deployment{}, fmt.Errorf("expected one model, got %d", len(c.Deployments))
	}
	return c.Deployments[0], nil
}

// QueryFlag reads a boolean query parameter as LiteLLM's FastAPI does
// (true/false, 1/0, yes/no, on/off, t/f, y/n); ok is false for anything else.
func QueryFlag(v string) (val, ok bool) {
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on", "t", "y":
		return true, true
	case "false", "0", "no", "off", "f", "n":
		return false, true
	}
	return false, false
}
