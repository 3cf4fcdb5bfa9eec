package config

// LLM is agentgateway's simplified `llm:` section.
type LLM struct {
	Port     int          `yaml:"port"`
	Policies *LLMPolicies `yaml:"policies"`
	Models   []LLMModel   `yaml:"models"`
}

// LLMPolicies are agentgateway's policies, on `llm:` or on a route.
type LLMPolicies struct {
	APIKey         *APIKeyPolicy        `yaml:"apiKey"`
	LocalRateLimit []LocalRateLimitSpec `yaml:"localRateLimit"`
	BackendAuth    *BackendAuth         `yaml:"backendAuth"`
	// BackendTLS is agentgateway's backendTLS policy: present (even
	// empty, `backendTLS: {}`), a hostOverride without a scheme is reached
	// over TLS. Its settings (CA, SNI, ...) are not read: Tollgate verifies
	// with the system's roots.
	BackendTLS map[string]any `yaml:"backendTLS"`
}

// APIKeyPolicy lists static keys and whether a key is required.
type APIKeyPolicy struct {
	Mode string       `yaml:"mode"` // strict or optional
	Keys []APIKeySpec `yaml:"keys"`
}

// APIKeySpec is one static key, given raw or as "sha256:<hex>".
type APIKeySpec struct {
	Key      EnvString      `yaml:"key"`
	KeyHash  string         `yaml:"keyHash"`
	Metadata map[string]any `yaml:"metadata"`
}

// LocalRateLimitSpec is one token bucket.
type LocalRateLimitSpec struct {
	MaxTokens     int64    `yaml:"maxTokens"`
	TokensPerFill int64    `yaml:"tokensPerFill"`
	FillInterval  Duration `yaml:"fillInterval"`
	Type          string   `yaml:"type"` // tokens or requests
	// Scope is Tollgate's extension: whose bucket it is — global (the
	// default, as in agentgateway), key, user, team or end_user (one bucket each).
	Scope string `yaml:"scope"`
}

// BackendAuth is the upstream credential of a route.
type BackendAuth struct {
	Key EnvString `yaml:"key"`
}

// LLMModel is one item of llm.models.
type LLMModel struct {
	Name     string    `yaml:"name"`
	Provider string    `yaml:"provider"`
	Params   LLMParams `yaml:"params"`
}

// LLMParams are an llm.models item's params.
type LLMParams struct {
	Model           string    `yaml:"model"`
	APIKey          EnvString `yaml:"apiKey"`
	Tokenize        bool      `yaml:"tokenize"`
	HostOverride    EnvString `yaml:"hostOverride"`
	PathOverride    string    `yaml:"pathOverride"`
	AzureHost       EnvString `yaml:"azureHost"`
	AzureAPIVersion string    `yaml:"azureApiVersion"`
	AWSRegion       string    `yaml:"awsRegion"`
	VertexRegion    string    `yaml:"vertexRegion"`
	VertexProject   string    `yaml:"vertexProject"`
}

// Bind is agentgateway's routing format: a port with listeners and routes.
type Bind struct {
	Port      int        `yaml:"port"`
	Listeners []Listener `yaml:"listeners"`
}

// Listener is a bind's listener.
type Listener struct {
	Name     string  `yaml:"name"`
	Hostname string  `yaml:"hostname"`
	Protocol string  `yaml:"protocol"`
	Routes   []Route `yaml:"routes"`
}

// Route is a listener's route.
type Route struct {
	Name     string       `yaml:"name"`
	Matches  any          `yaml:"matches"`
	Backends []Backend    `yaml:"backends"`
	Policies *LLMPolicies `yaml:"policies"`
}

// Backend is a route's backend; Tollgate serves AI backends.
type Backend struct {
	AI     *AIBackend `yaml:"ai"`
	Weight int        `yaml:"weight"`
}

// AIBackend names a provider and, optionally, the model it always uses.
type AIBackend struct {
	Name         string                      `yaml:"name"`
	Provider     map[string]AIProviderParams `yaml:"provider"`
	HostOverride EnvString                   `yaml:"hostOverride"`
}

// AIProviderParams are the provider block's fields.
type AIProviderParams struct {
	Model      string `yaml:"model"`
	Region     string `yaml:"region"`
	ProjectID  string `yaml:"projectId"` // vertex
	Host       string `yaml:"host"`
	APIVersion string `yaml:"apiVersion"`
}

// agentgatewayProviders maps agentgateway's provider names to LiteLLM's.
var agentgatewayProviders = map[string]string{
	"openai": "openai", "anthropic": "anthropic", "azureopenai": "azure", "azure": "azure",
	"gemini": "gemini", "vertex": "vertex_ai", "bedrock": "bedrock",
}
