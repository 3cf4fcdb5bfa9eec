package config

import (
	"context"
	"fmt"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
)

// Guardrail is one entry of LiteLLM's top-level guardrails list: a name
// requests, keys and teams select it by, and its litellm_params.
type Guardrail struct {
	GuardrailName string          `yaml:"guardrail_name"`
	LiteLLMParams GuardrailParams `yaml:"litellm_params"`
	// GuardrailInfo is free-form, returned by GET /guardrails/list.
	GuardrailInfo map[string]any `yaml:"guardrail_info"`
}

// GuardrailParams are a guardrail's litellm_params. Guardrail names the
// kind (litellm_content_filter, presidio, generic_guardrail_api, ...);
// the other members belong to some kinds only.
type GuardrailParams struct {
	Guardrail string        `yaml:"guardrail"`
	Mode      GuardrailMode `yaml:"mode"`
	DefaultOn bool          `yaml:"default_on"`

	APIBase EnvString `yaml:"api_base"`
	APIKey  EnvString `yaml:"api_key"`
	// UnreachableFallback is fail_closed (the default: an external
	// guardrail that cannot answer refuses the request) or fail_open.
	UnreachableFallback string `yaml:"unreachable_fallback"`
	// Timeout bounds one call to an external guardrail (default 5 s).
	Timeout                          *Seconds       `yaml:"timeout"`
	AdditionalProviderSpecificParams map[string]any `yaml:"additional_provider_specific_params"`

	// Presidio and LiteLLM's own PII guardrail.
	PresidioAnalyzerAPIBase   EnvString         `yaml:"presidio_analyzer_api_base"`
	PresidioAnonymizerAPIBase EnvString         `yaml:"presidio_anonymizer_api_base"`
	PresidioLanguage          string            `yaml:"presidio_language"`
	PIIEntitiesConfig         map[string]string `yaml:"pii_entities_config"`
	EntitiesConfig            map[string]string `yaml:"entities_config"`
	OutputParsePII            bool              `yaml:"output_parse_pii"`

	// litellm_content_filter.
	Patterns               []ContentPattern `yaml:"patterns"`
	BlockedWords           []BlockedWord    `yaml:"blocked_words"`
	PatternRedactionFormat string           `yaml:"pattern_redaction_format"`
	KeywordRedactionTag    string           `yaml:"keyword_redaction_tag"`

	// tollgate_input_limits (Tollgate's own): the most a request's input
	// may hold; a key's metadata max_input_bytes / max_input_tokens
	// override them.
	MaxInputBytes  int64 `yaml:"max_input_bytes"`
	MaxInputTokens int64 `yaml:"max_input_tokens"`
}

// ContentPattern is a litellm_content_filter pattern: a prebuilt one by
// pattern_name, or a regex (RE2) with its name.
type ContentPattern struct {
	PatternType string `yaml:"pattern_type"` // prebuilt or regex
	PatternName string `yaml:"pattern_name"`
	Pattern     string `yaml:"pattern"`
	Name        string `yaml:"name"`
	Action      string `yaml:"action"` // BLOCK or MASK
}

// BlockedWord is a litellm_content_filter keyword.
type BlockedWord struct {
	Keyword     string `yaml:"keyword"`
	Action      string `yaml:"action"`
	Description string `yaml:"description"`
}

// GuardrailMode is LiteLLM's mode: one of pre_call, during_call,
// post_call, logging_only, or a list of them. LiteLLM's tag-based form
// ({tags: ..., default: ...}) is read as its default.
type GuardrailMode []string

// UnmarshalYAML reads a string, a list or LiteLLM's tagged form.
func (m *GuardrailMode) UnmarshalYAML(ctx context.Context, node ast.Node) error {
	var one string
	if err := yaml.NodeToValue(node, &one); err == nil {
		*m = GuardrailMode{one}
		return nil
	}
	var list []string
	if err := yaml.NodeToValue(node, &list); err == nil {
		*m = list
		return nil
	}
	var tagged struct {
		Default string `yaml:"default"`
	}
	if err := yaml.NodeToValue(node, &tagged); err == nil && tagged.Default != "" {
		*m = GuardrailMode{tagged.Default}
		return nil
	}
	return fmt.Errorf("mode must be pre_call, during_call, post_call, logging_only or a list of them")
}
