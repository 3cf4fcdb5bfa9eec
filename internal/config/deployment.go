package config

import "time"

// Deployment is one upstream a model group can be routed to, normalized from
// whichever config dialect declared it (LiteLLM model_list, agentgateway
// llm.models or binds routes). The gateway and router only ever see this form.
type Deployment struct {
	// ModelName is the public model group name clients ask for. It may be a
	// wildcard pattern ("*", "openai/*", "gpt-4*") matched by the router.
	ModelName string
	// Provider is the upstream dialect: openai, azure, anthropic, ollama,
	// huggingface, hosted_vllm, demo, ... (lower case, LiteLLM spelling).
	Provider string
	// Model is the upstream model name (what follows "provider/"). Empty for a
	// wildcard deployment, which forwards the client's model name unchanged.
	Model string

	APIBase    string // resolved; empty means the provider's default
	APIKey     string // resolved secret; never logged or returned by the API
	APIVersion string // azure api-version
	Headers    map[string]string

	RPM, TPM int64   // deployment capacity; 0 means unlimited
	Weight   float64 // simple-shuffle weight; 0 means "use rpm/tpm, else 1"
	Order    int     // priority; lower is tried first, 0 means unset

	Timeout       time.Duration // 0 means the gateway default
	StreamTimeout time.Duration // 0 means Timeout

	// Price overrides in USD per token; nil means "use the embedded table".
	InputCostPerToken           *float64
	OutputCostPerToken          *float64
	CacheReadInputTokenCost     *float64
	CacheCreationInputTokenCost *float64
	// Per-second prices (LiteLLM's input_cost_per_second and
	// output_cost_per_second): each is charged for every second the
	// upstream took, on top of any per-token price.
	InputCostPerSecond, OutputCostPerSecond *float64
	// Media prices: per generated image (output_cost_per_image, or
	// input_cost_per_image as the dall-e entries name it), per pixel of
	// one, per character of text spoken. On transcriptions
	// InputCostPerSecond is per second of audio.
	InputCostPerImage, OutputCostPerImage, InputCostPerPixel, InputCostPerCharacter *float64

	// Region is litellm_params.region_name ("eu", "us", ...): an end user
	// with allowed_model_region is served only by deployments of that region.
	Region string
	// Tags are litellm_params.tags: request tags for spend tracking, added
	// to the tags of each request this deployment answers (its spend row,
	// callback payload, span and tag metrics). Not used for routing.
	Tags []string

	ID           string   // model_info.id; generated and stable when absent
	AccessGroups []string // model_info.access_groups
	BaseModel    string   // model_info.base_model: the price-table name to use
	Tokenize     bool     // agentgateway params.tokenize: estimate prompt tokens at request time

	// AWS is a bedrock deployment's credentials; nil when it sets none.
	AWS *AWSCredentials
	// Vertex is a vertex_ai deployment's project, location and credentials.
	Vertex *Vertex
}

// Vertex is where and as whom Vertex AI is called: LiteLLM's
// vertex_project, vertex_location and vertex_credentials (a key's path or
// JSON; empty: Google's application default credentials). Secret: never
// logged or returned by the API. PassThrough is use_in_pass_through: these
// credentials serve /vertex_ai/* calls for their project and location.
type Vertex struct {
	Project, Location, Credentials string
	PassThrough                    bool
}

// AWSCredentials sign requests to AWS (SigV4): litellm_params
// aws_access_key_id, aws_secret_access_key, aws_session_token and
// aws_region_name. Secrets: never logged or returned by the API. Profile
// is aws_profile_name: the shared config/credentials files' profile that
// holds what the params leave out (provider.ResolveAWS).
type AWSCredentials struct {
	AccessKeyID, SecretAccessKey, SessionToken, Region string
	Profile                                            string
}

// EffectiveStreamTimeout is the idle/first-byte bound applied to streams.
func (d *Deployment) EffectiveStreamTimeout() time.Duration {
	if d.StreamTimeout > 0 {
		return d.StreamTimeout
	}
	return d.Timeout
}
