package config

import (
	"cmp"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/tollgate/tollgate/internal/memlimit"
	"github.com/tollgate/tollgate/internal/reqtags"
)

// knownProviders are the provider prefixes recognized in
// litellm_params.model: LiteLLM's provider names (whether or not Tollgate
// serves them: a deployment of one it does not serve is disabled when the
// router is built, not sent to OpenAI under a prefixed name) and Tollgate's
// demo. A name without one is an OpenAI model.
var knownProviders = func() map[string]bool {
	m := map[string]bool{"demo": true, "openai_compatible": true}
	for _, p := range strings.Fields(`openai openai_like jina_ai xai custom_openai text-completion-openai
		cohere cohere_chat clarifai anthropic anthropic_text bytez replicate runwayml huggingface
		together_ai openrouter datarobot vertex_ai vertex_ai_beta gemini ai21 ai21_chat baseten azure
		azure_text azure_ai sagemaker sagemaker_chat bedrock vllm hosted_vllm nlp_cloud petals
		oobabooga ollama ollama_chat deepinfra perplexity mistral groq nvidia_nim cerebras
		volcengine codestral text-completion-codestral dashscope moonshot v0 morph lambda_ai
		deepseek sambanova maritalk voyage cloudflare xinference fireworks_ai friendliai
		featherless_ai watsonx watsonx_text triton predibase databricks empower github compactifai
		docker_model_runner custom litellm_proxy llamafile lm_studio galadriel nebius infinity
		deepgram elevenlabs novita aiohttp_openai github_copilot snowflake gradient_ai meta_llama
		nscale hyperbolic recraft fal_ai heroku aiml cometapi oci vercel_ai_gateway wandb ovhcloud
		lemonade`) {
		m[p] = true
	}
	return m
}()

// SplitModel splits "provider/name" into its provider and upstream name. A
// model with no known provider prefix is an OpenAI model.
func SplitModel(model string) (provider, name string) {
	if p, n, ok := strings.Cut(model, "/"); ok && knownProviders[p] {
		return p, n
	}
	return "openai", model
}

type normalizer struct {
	name     string
	src      []byte
	cfg      *Config
	file     *ast.File
	warnings []string
}

// at returns "file:line:col" of the node at a YAML path, or the file name.
func (n *normalizer) at(path string) string {
	if n.file == nil {
		f, err := parser.ParseBytes(n.src, 0)
		if err != nil {
			return n.name
		}
		n.file = f
	}
	p, err := yaml.PathString(path)
	if err != nil {
		return n.name
	}
	node, err := p.FilterFile(n.file)
	if err != nil || node == nil {
		return n.name
	}
	pos := node.GetToken().Position
	return fmt.Sprintf("%s:%d:%d", n.name, pos.Line, pos.Column)
}

func (n *normalizer) errorf(path, format string, args ...any) error {
	return fmt.Errorf("%s: %s", n.at(path), fmt.Sprintf(format, args...))
}

func (n *normalizer) run() error {
	c := n.cfg
	for i := range c.ModelList {
		d, err := n.litellmDeployment(i)
		if err != nil {
			return err
		}
		c.Deployments = append(c.Deployments, d)
	}
	if v, set := os.LookupEnv(EnvSingleDeploymentThreshold); set {
		if _, ok := singleDeploymentThreshold(); !ok {
			n.warnings = append(n.warnings, fmt.Sprintf("%s=%q is not a positive integer: the default %d applies", EnvSingleDeploymentThreshold, v, DefaultSingleDeploymentThreshold))
		}
	}
	if !validStrategies[c.RouterSettings.RoutingStrategy] {
		return n.errorf("$.router_settings.routing_strategy", "unknown routing_strategy %q (valid: simple-shuffle, least-busy, latency-based-routing, usage-based-routing, usage-based-routing-v2, cost-based-routing)", c.RouterSettings.RoutingStrategy)
	}
	switch c.LiteLLMSettings.BudgetEnforcement {
	case "", "default", "strict":
	default:
		return n.errorf("$.litellm_settings.budget_enforcement", "unknown budget_enforcement %q (valid: default, strict)", c.LiteLLMSettings.BudgetEnforcement)
	}
	switch c.LiteLLMSettings.BudgetOnRedisFailure {
	case "", "share", "fail_closed":
	default:
		return n.errorf("$.litellm_settings.budget_on_redis_failure", "unknown budget_on_redis_failure %q (valid: share, fail_closed)", c.LiteLLMSettings.BudgetOnRedisFailure)
	}
	if cp := c.LiteLLMSettings.CacheParams; cp != nil {
		switch cp.Type {
		case "", "local", "redis":
		case "redis-semantic", "local-semantic":
			if cp.RedisSemanticCacheEmbeddingModel == "" {
				return n.errorf("$.litellm_settings.cache_params.type", "cache_params.type %s needs redis_semantic_cache_embedding_model: the model_list model_name that embeds prompts", cp.Type)
			}
			if t := cp.SimilarityThreshold; t == nil || *t <= 0 || *t > 1 {
				return n.errorf("$.litellm_settings.cache_params.type", "cache_params.type %s needs similarity_threshold, above 0 and at most 1", cp.Type)
			}
		default:
			return n.errorf("$.litellm_settings.cache_params.type", "cache_params.type %q is not served (valid: local, redis, redis-semantic, local-semantic)", cp.Type)
		}
		switch cp.Mode {
		case "", "default_on", "default_off":
		default:
			return n.errorf("$.litellm_settings.cache_params.mode", "unknown cache_params.mode %q (valid: default_on, default_off)", cp.Mode)
		}
		for _, t := range cp.SupportedCallTypes {
			if !CacheCallTypes[t] {
				return n.errorf("$.litellm_settings.cache_params.supported_call_types", "supported_call_types: %q is not a call type Tollgate caches (valid: completion, acompletion, text_completion, atext_completion, embedding, aembedding, anthropic_messages, rerank, arerank)", t)
			}
		}
		if m := cp.MaxTTL; m != nil && *m <= 0 {
			return n.errorf("$.litellm_settings.cache_params.max_ttl", "max_ttl must be a positive number of seconds")
		}
		if m := cp.MaxEntryBytes; m != nil && *m < 1 {
			return n.errorf("$.litellm_settings.cache_params.max_entry_bytes", "max_entry_bytes must be positive")
		}
		if m := cp.MaxBytes; m != nil && *m < 1 {
			return n.errorf("$.litellm_settings.cache_params.max_bytes", "max_bytes must be positive")
		}
	}
	if m := c.LiteLLMSettings.CallbackQueueMaxBytes; m != nil && *m < 1<<20 {
		return n.errorf("$.litellm_settings.callback_queue_max_bytes", "callback_queue_max_bytes must be at least 1048576 (1 MiB)")
	}
	if m := c.GeneralSettings.ContentLogging.MaxFieldBytes; m != nil && *m < 1024 {
		return n.errorf("$.general_settings.content_logging.max_field_bytes", "max_field_bytes must be at least 1024")
	}
	if u := c.GeneralSettings.UnpricedModels; u != "" && u != "free" && u != "refuse" {
		return n.errorf("$.general_settings.unpriced_models", "unknown unpriced_models %q (valid: free, refuse)", u)
	}
	if err := n.passThrough(); err != nil {
		return err
	}
	if err := n.otel(); err != nil {
		return err
	}
	if mb := c.GeneralSettings.MaxRequestSizeMB; mb != nil && *mb <= 0 {
		return n.errorf("$.general_settings.max_request_size_mb", "max_request_size_mb must be positive")
	}
	if mb := c.GeneralSettings.MaxResponseSizeMB; mb != nil && *mb <= 0 {
		return n.errorf("$.general_settings.max_response_size_mb", "max_response_size_mb must be positive")
	}
	if v := c.GeneralSettings.MemoryLimit; v != "" {
		if _, err := memlimit.Parse(v); err != nil {
			return n.errorf("$.general_settings.memory_limit", "general_settings.memory_limit: %v", err)
		}
	}
	if v := c.GeneralSettings.MaxRequestsInFlight; v != nil && *v < -1 {
		return n.errorf("$.general_settings.max_requests_in_flight", "general_settings.max_requests_in_flight must be a positive number, 0 for the default or -1 for no bound")
	}
	if v := c.GeneralSettings.MaxClientConnections; v != nil && *v < -1 {
		return n.errorf("$.general_settings.max_client_connections", "general_settings.max_client_connections must be a positive number, 0 for the default or -1 for no bound")
	}
	for _, f := range []struct {
		name string
		v    *Seconds
	}{{"request_header_timeout", c.GeneralSettings.RequestHeaderTimeout}, {"request_body_timeout", c.GeneralSettings.RequestBodyTimeout}} {
		if f.v != nil && *f.v <= 0 {
			return n.errorf("$.general_settings."+f.name, "general_settings.%s must be a positive number of seconds", f.name)
		}
	}
	for _, f := range []struct {
		path string
		v    *float64
	}{{"$.litellm_settings.max_budget", c.LiteLLMSettings.MaxBudget}, {"$.litellm_settings.max_end_user_budget", c.LiteLLMSettings.MaxEndUserBudget}} {
		if f.v != nil && *f.v < 0 {
			return n.errorf(f.path, "must not be negative")
		}
	}
	if c.LLM != nil {
		if c.LLM.Port != 0 {
			c.ListenPort = c.LLM.Port
		}
		if err := n.policies("$.llm.policies", c.LLM.Policies); err != nil {
			return err
		}
		for i, m := range c.LLM.Models {
			d, err := n.agentgatewayModel(i, m)
			if err != nil {
				return err
			}
			c.Deployments = append(c.Deployments, d)
		}
	}
	if err := n.binds(); err != nil {
		return err
	}
	for i, p := range []any{c.GeneralSettings.CustomAuth, c.GeneralSettings.CustomKeyGenerate} {
		key := []string{"custom_auth", "custom_key_generate"}[i]
		switch v := p.(type) {
		case nil:
		case string:
			if v == "" {
				continue
			}
			if err := checkPythonPath(v); err != nil {
				return n.errorf("$.general_settings."+key, "general_settings.%s: %v", key, err)
			}
			// LiteLLM's form: the function replaces virtual-key auth.
			spec := &HookSpec{Python: v}
			if i == 0 {
				spec.Mode = "replace"
				c.CustomAuth = spec
			} else {
				c.CustomKeyGenerate = spec
			}
		default:
			raw, err := yaml.Marshal(v)
			if err != nil {
				return n.errorf("$.general_settings."+key, "%v", err)
			}
			spec := &HookSpec{}
			if err := yaml.UnmarshalWithOptions(raw, spec, yaml.Strict()); err != nil {
				return n.errorf("$.general_settings."+key, "general_settings.%s: %v", key, yaml.FormatError(err, false, false))
			}
			if given := btoi(spec.CEL != "") + btoi(spec.Webhook != nil) + btoi(spec.Python != ""); given != 1 {
				return n.errorf("$.general_settings."+key, "general_settings.%s needs exactly one of webhook, cel and python", key)
			}
			if spec.Python != "" {
				if err := checkPythonPath(spec.Python); err != nil {
					return n.errorf("$.general_settings."+key+".python", "general_settings.%s.python: %v", key, err)
				}
			}
			if spec.Mode != "" && spec.Mode != "after" && spec.Mode != "replace" {
				return n.errorf("$.general_settings."+key+".mode", "mode must be after or replace, got %q", spec.Mode)
			}
			if w := spec.Webhook; w != nil {
				hs := make(map[string]string, len(w.Headers))
				for k, v := range w.Headers {
					hs[k] = string(v)
				}
				if err := checkHeaders(hs, false); err != nil {
					return n.errorf("$.general_settings."+key+".webhook.headers", "general_settings.%s.webhook.headers.%s: %s", key, err.name, err.why)
				}
			}
			if i == 0 {
				c.CustomAuth = spec
			} else {
				c.CustomKeyGenerate = spec
			}
		}
	}
	ph := c.GeneralSettings.TollgatePythonHooks
	if ph.Workers < 0 || ph.Workers > 64 {
		return n.errorf("$.general_settings.tollgate_python_hooks.workers", "workers must be between 1 and 64, got %d", ph.Workers)
	}
	for _, f := range []struct {
		path string
		v    *Seconds
	}{{"timeout", ph.Timeout}, {"cache_ttl", ph.CacheTTL}} {
		if f.v != nil && *f.v < 0 {
			return n.errorf("$.general_settings.tollgate_python_hooks."+f.path, "must not be negative")
		}
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkPythonPath accepts LiteLLM's module.function (module may be dotted).
func checkPythonPath(v string) error {
	parts := strings.Split(v, ".")
	if len(parts) < 2 {
		return fmt.Errorf("%q is not a Python module.function (e.g. custom_auth.user_api_key_auth, for custom_auth.py beside the config file)", v)
	}
	for _, p := range parts {
		if p == "" || !isIdent(p) {
			return fmt.Errorf("%q is not a Python module.function: %q is not a name", v, p)
		}
	}
	return nil
}

func isIdent(s string) bool {
	for i, r := range s {
		if r != '_' && !unicode.IsLetter(r) && (i == 0 || !unicode.IsDigit(r)) {
			return false
		}
	}
	return true
}

func (n *normalizer) litellmDeployment(i int) (Deployment, error) {
	e := n.cfg.ModelList[i]
	path := fmt.Sprintf("$.model_list[%d]", i)
	p := e.LiteLLMParams
	if e.ModelName == "" {
		return Deployment{}, n.errorf(path, "model_list[%d]: model_name is required", i)
	}
	if p.Model == "" {
		return Deployment{}, n.errorf(path, "model_list[%d] (%s): litellm_params.model is required", i, e.ModelName)
	}
	provider, model := SplitModel(string(p.Model))
	if cp := strings.ToLower(p.CustomLLMProvider); cp != "" && cp != provider {
		// LiteLLM's custom_llm_provider names the provider of a model
		// given without its prefix; "openai/x" with custom_llm_provider
		// openai stays as it is.
		provider, model = cp, string(p.Model)
	}
	d := Deployment{
		ModelName: e.ModelName, Provider: provider, Model: model,
		APIBase: string(p.APIBase), APIKey: string(p.APIKey), APIVersion: string(p.APIVersion),
		InputCostPerToken:           firstPtr(p.InputCostPerToken, e.ModelInfo.InputCostPerToken),
		OutputCostPerToken:          firstPtr(p.OutputCostPerToken, e.ModelInfo.OutputCostPerToken),
		CacheReadInputTokenCost:     firstPtr(p.CacheReadInputTokenCost, e.ModelInfo.CacheReadInputTokenCost),
		CacheCreationInputTokenCost: firstPtr(p.CacheCreationInputTokenCost, e.ModelInfo.CacheCreationInputTokenCost),
		InputCostPerSecond:          firstPtr(p.InputCostPerSecond, e.ModelInfo.InputCostPerSecond),
		OutputCostPerSecond:         firstPtr(p.OutputCostPerSecond, e.ModelInfo.OutputCostPerSecond),
		InputCostPerPixel:           firstPtr(p.InputCostPerPixel, e.ModelInfo.InputCostPerPixel),
		InputCostPerImage:           e.ModelInfo.InputCostPerImage,
		OutputCostPerImage:          e.ModelInfo.OutputCostPerImage,
		InputCostPerCharacter:       e.ModelInfo.InputCostPerCharacter,
		Region:                      strings.ToLower(strings.TrimSpace(p.RegionName)),
		ID:                          e.ModelInfo.ID, AccessGroups: e.ModelInfo.AccessGroups, BaseModel: e.ModelInfo.BaseModel,
		Tokenize: p.Tokenize, Tags: p.Tags,
	}
	if err := reqtags.Check("litellm_params.tags", p.Tags); err != nil {
		return Deployment{}, n.errorf(path+".litellm_params.tags", "model_list[%d] (%s): %v", i, e.ModelName, err)
	}
	if d.APIBase == "" && d.Provider == "bedrock" {
		d.APIBase = string(p.AWSBedrockRuntimeEndpoint)
	}
	if p.AWSAccessKeyID != "" || p.AWSSecretAccessKey != "" || p.AWSRegionName != "" || p.AWSProfileName != "" {
		d.AWS = &AWSCredentials{AccessKeyID: string(p.AWSAccessKeyID), SecretAccessKey: string(p.AWSSecretAccessKey),
			SessionToken: string(p.AWSSessionToken), Region: string(p.AWSRegionName), Profile: string(p.AWSProfileName)}
	}
	if p.VertexProject != "" || p.VertexLocation != "" || p.VertexCredentials != "" {
		d.Vertex = &Vertex{Project: string(p.VertexProject), Location: string(p.VertexLocation),
			Credentials: string(p.VertexCredentials), PassThrough: p.UseInPassThrough}
	}
	if len(p.ExtraHeaders)+len(p.Headers) > 0 {
		d.Headers = map[string]string{}
		for k, v := range p.Headers {
			d.Headers[k] = v
		}
		for k, v := range p.ExtraHeaders {
			d.Headers[k] = v
		}
	}
	if p.Organization != "" {
		if d.Headers == nil {
			d.Headers = map[string]string{}
		}
		d.Headers["OpenAI-Organization"] = string(p.Organization)
	}
	for _, h := range []struct {
		field string
		m     map[string]string
	}{{"headers", p.Headers}, {"extra_headers", p.ExtraHeaders}, {"", map[string]string{"organization": string(p.Organization),
		"api_key": string(p.APIKey), "api_version": string(p.APIVersion)}}} {
		if err := checkHeaders(h.m, h.field == ""); err != nil {
			at, field := h.field, h.field+"."+err.name
			if h.field == "" {
				at, field = err.name, err.name
			}
			return Deployment{}, n.errorf(path+".litellm_params."+at, "model_list[%d].litellm_params.%s: %s", i, field, err.why)
		}
	}
	checks := []struct {
		field string
		bad   bool
	}{
		{"rpm", p.RPM != nil && *p.RPM < 0},
		{"tpm", p.TPM != nil && *p.TPM < 0},
		{"weight", p.Weight != nil && *p.Weight < 0},
		{"timeout", p.Timeout != nil && *p.Timeout < 0},
		{"stream_timeout", p.StreamTimeout != nil && *p.StreamTimeout < 0},
		{"input_cost_per_token", d.InputCostPerToken != nil && *d.InputCostPerToken < 0},
		{"output_cost_per_token", d.OutputCostPerToken != nil && *d.OutputCostPerToken < 0},
		{"cache_read_input_token_cost", d.CacheReadInputTokenCost != nil && *d.CacheReadInputTokenCost < 0},
		{"cache_creation_input_token_cost", d.CacheCreationInputTokenCost != nil && *d.CacheCreationInputTokenCost < 0},
		{"input_cost_per_second", d.InputCostPerSecond != nil && *d.InputCostPerSecond < 0},
		{"output_cost_per_second", d.OutputCostPerSecond != nil && *d.OutputCostPerSecond < 0},
		{"input_cost_per_pixel", d.InputCostPerPixel != nil && *d.InputCostPerPixel < 0},
		{"input_cost_per_image", d.InputCostPerImage != nil && *d.InputCostPerImage < 0},
		{"output_cost_per_image", d.OutputCostPerImage != nil && *d.OutputCostPerImage < 0},
		{"input_cost_per_character", d.InputCostPerCharacter != nil && *d.InputCostPerCharacter < 0},
	}
	for _, c := range checks {
		if c.bad {
			return Deployment{}, n.errorf(path+".litellm_params."+c.field, "model_list[%d].litellm_params.%s must not be negative", i, c.field)
		}
	}
	if p.RPM != nil {
		d.RPM = *p.RPM
	}
	if p.TPM != nil {
		d.TPM = *p.TPM
	}
	if p.Weight != nil {
		d.Weight = *p.Weight
	}
	if p.Order != nil {
		d.Order = *p.Order
	}
	if p.Timeout != nil {
		d.Timeout = time.Duration(*p.Timeout)
	}
	if p.StreamTimeout != nil {
		d.StreamTimeout = time.Duration(*p.StreamTimeout)
	}
	if d.ID == "" {
		d.ID = deploymentID(i, d)
	}
	return d, nil
}

func (n *normalizer) agentgatewayModel(i int, m LLMModel) (Deployment, error) {
	path := fmt.Sprintf("$.llm.models[%d]", i)
	if m.Name == "" {
		return Deployment{}, n.errorf(path, "llm.models[%d]: name is required", i)
	}
	provider, ok := agentgatewayProviders[strings.ToLower(m.Provider)]
	if !ok {
		return Deployment{}, n.errorf(path+".provider", "llm.models[%d]: unknown provider %q (openAI, anthropic, azureOpenAI, gemini, vertex, bedrock)", i, m.Provider)
	}
	if b := badHeaderByte(string(m.Params.APIKey)); b >= 0 {
		return Deployment{}, n.errorf(path+".params.apiKey", "llm.models[%d].params.apiKey holds a control character at byte %d; CR and LF would split the header", i, b)
	}
	d := Deployment{
		ModelName: m.Name, Provider: provider, Model: m.Params.Model,
		APIKey: string(m.Params.APIKey), Tokenize: m.Params.Tokenize, APIVersion: m.Params.AzureAPIVersion,
	}
	if provider == "bedrock" && m.Params.AWSRegion != "" {
		d.AWS = &AWSCredentials{Region: m.Params.AWSRegion} // keys from the environment
	}
	if host := string(m.Params.HostOverride); host != "" {
		d.APIBase = hostOverrideBase(host, n.cfg.LLM.Policies != nil && n.cfg.LLM.Policies.BackendTLS != nil) + m.Params.PathOverride
	} else if host := string(m.Params.AzureHost); host != "" {
		d.APIBase = withScheme(host)
	}
	if d.Model == "" && !strings.Contains(m.Name, "*") {
		d.Model = m.Name // a named model goes upstream under its own name
	}
	googleParams(&d, m.Params.VertexProject, m.Params.VertexRegion, m.Params.PathOverride)
	d.ID = deploymentID(1000+i, d)
	return d, nil
}

// googleParams completes an agentgateway gemini or vertex deployment: a
// vertex one takes its project and region (its credentials are LiteLLM's
// VERTEXAI_CREDENTIALS, else Google's application default credentials); a
// gemini host override names only the host, below which the Gemini API
// lies at /v1beta unless a path override says otherwise.
func googleParams(d *Deployment, project, region, pathOverride string) {
	switch d.Provider {
	case "vertex_ai":
		if project != "" || region != "" {
			d.Vertex = &Vertex{Project: project, Location: region}
		}
	case "gemini":
		if d.APIBase != "" && pathOverride == "" {
			d.APIBase += "/v1beta"
		}
	}
}

func (n *normalizer) binds() error {
	c := n.cfg
	for bi, b := range c.Binds {
		if c.ListenPort == 0 {
			c.ListenPort = b.Port
		}
		for li, l := range b.Listeners {
			for ri, r := range l.Routes {
				rpath := fmt.Sprintf("$.binds[%d].listeners[%d].routes[%d]", bi, li, ri)
				if err := n.policies(rpath+".policies", r.Policies); err != nil {
					return err
				}
				key := ""
				if r.Policies != nil && r.Policies.BackendAuth != nil {
					key = string(r.Policies.BackendAuth.Key)
				}
				tls := r.Policies != nil && r.Policies.BackendTLS != nil
				for k, be := range r.Backends {
					if be.AI == nil {
						return n.errorf(fmt.Sprintf("%s.backends[%d]", rpath, k), "only ai backends are supported")
					}
					if len(be.AI.Provider) != 1 {
						return n.errorf(fmt.Sprintf("%s.backends[%d].ai.provider", rpath, k), "ai.provider must name exactly one provider")
					}
					for pname, params := range be.AI.Provider {
						provider, ok := agentgatewayProviders[strings.ToLower(pname)]
						if !ok {
							return n.errorf(fmt.Sprintf("%s.backends[%d].ai.provider", rpath, k), "unknown provider %q", pname)
						}
						// A route takes every model name; a fixed model overrides it.
						d := Deployment{ModelName: "*", Provider: provider, Model: params.Model, APIKey: key,
							APIVersion: params.APIVersion, Weight: float64(be.Weight)}
						if h := string(be.AI.HostOverride); h != "" {
							d.APIBase = hostOverrideBase(h, tls)
						} else if params.Host != "" {
							d.APIBase = hostOverrideBase(params.Host, tls)
						}
						googleParams(&d, params.ProjectID, params.Region, "")
						d.ID = deploymentID(2000+bi*100+ri*10+k, d)
						if be.AI.Name != "" {
							d.ID = be.AI.Name
						}
						c.Deployments = append(c.Deployments, d)
					}
				}
			}
		}
	}
	return nil
}

var keyHash = regexp.MustCompile(`^sha256:[0-9a-fA-F]{64}$`)

func (n *normalizer) policies(path string, p *LLMPolicies) error {
	if p == nil {
		return nil
	}
	c := n.cfg
	if ak := p.APIKey; ak != nil {
		switch ak.Mode {
		case "strict", "optional":
		case "":
			ak.Mode = "strict"
		default:
			return n.errorf(path+".apiKey.mode", "apiKey.mode must be strict or optional, got %q", ak.Mode)
		}
		if c.APIKeyMode == "" || ak.Mode == "strict" {
			c.APIKeyMode = ak.Mode
		}
		for i, k := range ak.Keys {
			kp := fmt.Sprintf("%s.apiKey.keys[%d]", path, i)
			switch {
			case k.Key != "" && k.KeyHash != "":
				return n.errorf(kp, "give key or keyHash, not both")
			case k.Key != "":
				c.StaticKeys = append(c.StaticKeys, StaticKey{Hash: HashKey(string(k.Key)), Metadata: k.Metadata})
			case keyHash.MatchString(k.KeyHash):
				c.StaticKeys = append(c.StaticKeys, StaticKey{Hash: strings.ToLower(k.KeyHash[7:]), Metadata: k.Metadata})
			case k.KeyHash != "":
				return n.errorf(kp+".keyHash", "keyHash must be sha256:<64 hex digits>")
			default:
				return n.errorf(kp, "a key needs key or keyHash")
			}
		}
	}
	for i, rl := range p.LocalRateLimit {
		rp := fmt.Sprintf("%s.localRateLimit[%d]", path, i)
		switch {
		case rl.Type != "tokens" && rl.Type != "requests":
			return n.errorf(rp, "localRateLimit type must be tokens or requests, got %q", rl.Type)
		case rl.MaxTokens < 0 || rl.TokensPerFill < 0:
			return n.errorf(rp, "maxTokens and tokensPerFill must not be negative")
		case rl.FillInterval <= 0:
			return n.errorf(rp, "fillInterval must be a positive duration such as 60s")
		case !slices.Contains([]string{"", "global", "key", "user", "team", "end_user"}, rl.Scope):
			return n.errorf(rp+".scope", "scope must be global, key, user, team or end_user, got %q", rl.Scope)
		}
		c.LocalRateLimits = append(c.LocalRateLimits, LocalRateLimit{
			MaxTokens: rl.MaxTokens, TokensPerFill: rl.TokensPerFill, FillInterval: time.Duration(rl.FillInterval), Type: rl.Type,
			Scope: cmp.Or(rl.Scope, "global"),
		})
	}
	return nil
}

func withScheme(host string) string {
	if strings.Contains(host, "://") {
		return host
	}
	return "https://" + host
}

// hostOverrideBase is the base URL of an agentgateway hostOverride (or a
// provider's host). agentgateway takes it as host:port reached over plain
// HTTP unless a backendTLS policy applies (tls); Tollgate does the same,
// except that port 443 and a host without a port mean HTTPS (a provider's
// public API; plain HTTP to it cannot work). A value with a scheme
// (http://host:port, https://host:port) is taken as written: the way to
// say either explicitly.
func hostOverrideBase(host string, tls bool) string {
	if strings.Contains(host, "://") {
		return host
	}
	if tls {
		return "https://" + host
	}
	if _, port, err := net.SplitHostPort(host); err == nil && port != "443" {
		return "http://" + host
	}
	return "https://" + host
}

// deploymentID is a stable id for a deployment without model_info.id: the
// same config always yields the same ids, so they can label metrics.
func deploymentID(i int, d Deployment) string {
	return HashKey(fmt.Sprintf("%d|%s|%s|%s|%s", i, d.ModelName, d.Provider, d.Model, d.APIBase))[:16]
}

func firstPtr[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

// yamlKeys lists the yaml keys of a struct value's fields.
func yamlKeys(v any) []string {
	t := reflect.TypeOf(v)
	var out []string
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag != "" && tag != "-" {
			out = append(out, tag)
		}
	}
	return out
}

// Bounds of general_settings.otel: the queue (and a batch) are allocated
// per exporter up front, and an interval below the floor would make the
// exporter's goroutine spin.
const (
	MaxOTelQueue          = 1_000_000
	MinOTelExportInterval = 10 * time.Millisecond
)

// otel checks general_settings.otel.
func (n *normalizer) otel() error {
	o := n.cfg.GeneralSettings.OTel
	if o == nil {
		return nil
	}
	const at = "$.general_settings.otel"
	switch o.Protocol {
	case "", "http", "http/protobuf", "grpc":
	default:
		return n.errorf(at+".protocol", "unknown otel protocol %q (valid: http, http/protobuf, grpc)", o.Protocol)
	}
	if e := string(o.Endpoint); e != "" {
		if err := CheckOTelEndpoint(e); err != nil {
			return n.errorf(at+".endpoint", "%v", err)
		}
	}
	if r := o.SampleRatio; r != nil && !(*r >= 0 && *r <= 1) { // NaN fails both
		return n.errorf(at+".sample_ratio", "otel sample_ratio must be between 0 and 1, not %v", *r)
	}
	// The queue and a batch are allocated up front, per exporter.
	if q := o.QueueSize; q != nil && (*q <= 0 || *q > MaxOTelQueue) {
		return n.errorf(at+".queue_size", "otel queue_size must be between 1 and %d, not %d", MaxOTelQueue, *q)
	}
	if b := o.BatchSize; b != nil && (*b <= 0 || *b > MaxOTelQueue) {
		return n.errorf(at+".batch_size", "otel batch_size must be between 1 and %d, not %d", MaxOTelQueue, *b)
	}
	for _, d := range []*Seconds{o.ExportInterval, o.ExportTimeout} {
		if d != nil && *d <= 0 {
			return n.errorf(at, "otel export_interval and export_timeout must be positive")
		}
	}
	if d := o.ExportInterval; d != nil && time.Duration(*d) < MinOTelExportInterval {
		return n.errorf(at+".export_interval", "otel export_interval must be at least %s, not %s", MinOTelExportInterval, time.Duration(*d))
	}
	return nil
}

// CheckOTelEndpoint says what is wrong with an OTLP collector URL: it
// must be an absolute http:// or https:// URL with a host.
func CheckOTelEndpoint(e string) error {
	u, err := url.Parse(e)
	if err != nil {
		return fmt.Errorf("otel endpoint %q is not a URL: %v", e, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("otel endpoint %q must be an http:// or https:// URL with a host (http://collector:4318)", e)
	}
	return nil
}
