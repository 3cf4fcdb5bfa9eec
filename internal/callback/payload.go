// Package callback carries what Tollgate tells the logging services it
// sends to (LiteLLM's success_callback, failure_callback and callbacks):
// one Payload per inference request, in the shape of LiteLLM's
// StandardLoggingPayload, so that what reads LiteLLM's logs reads these.
package callback

import "encoding/json"

// Payload is one inference request as LiteLLM's StandardLoggingPayload
// describes it (docs.litellm.ai/docs/proxy/logging_spec): who called, what
// was asked of which deployment, what it cost, how it ended. Times are unix
// seconds. Messages and Response are null unless the operator lets content
// leave the process (store_prompts_in_spend_logs or a callback, and not
// turn_off_message_logging), and are redacted when present.
type Payload struct {
	ID                  string   `json:"id"`       // the call id (x-litellm-call-id)
	TraceID             string   `json:"trace_id"` // the W3C trace id when traced, else the call id
	CallType            string   `json:"call_type"`
	ResponseCost        float64  `json:"response_cost"`
	Status              string   `json:"status"` // success or failure
	TotalTokens         int64    `json:"total_tokens"`
	PromptTokens        int64    `json:"prompt_tokens"`
	CompletionTokens    int64    `json:"completion_tokens"`
	StartTime           float64  `json:"startTime"`
	EndTime             float64  `json:"endTime"`
	CompletionStartTime float64  `json:"completionStartTime"`
	ResponseTime        float64  `json:"response_time"` // seconds: to the first token for streams
	Model               string   `json:"model"`         // the model the upstream was asked for
	ModelID             *string  `json:"model_id"`      // the deployment's id
	ModelGroup          *string  `json:"model_group"`
	APIBase             string   `json:"api_base"`
	CustomLLMProvider   string   `json:"custom_llm_provider"`
	Metadata            Metadata `json:"metadata"`
	CacheHit            *bool    `json:"cache_hit"`
	CacheKey            *string  `json:"cache_key"`
	SavedCacheCost      float64  `json:"saved_cache_cost"`
	RequestTags         []string `json:"request_tags"`
	EndUser             *string  `json:"end_user"`
	RequesterIPAddress  *string  `json:"requester_ip_address"`
	// Messages is what the client sent (messages, input or prompt);
	// Response what it got back (a stream assembled into one answer).
	Messages         json.RawMessage   `json:"messages"`
	Response         json.RawMessage   `json:"response"`
	ErrorStr         *string           `json:"error_str"`
	ErrorInformation *ErrorInformation `json:"error_information"`
	// ModelParameters are the request's optional parameters
	// (temperature, max_tokens, ...): never null.
	ModelParameters     map[string]any      `json:"model_parameters"`
	HiddenParams        HiddenParams        `json:"hidden_params"`
	ModelMapInformation ModelMapInformation `json:"model_map_information"`
	Stream              bool                `json:"stream"`

	// Tollgate's own: the HTTP status the client got (499: it left).
	HTTPStatus int `json:"http_status"`
	// Retries and Fallbacks made on the way.
	Retries   int `json:"retries"`
	Fallbacks int `json:"fallbacks"`

	// Skip names the callbacks the request disabled
	// (x-litellm-disable-callbacks); never sent.
	Skip []string `json:"-"`
}

// Metadata is LiteLLM's StandardLoggingMetadata: who the key belongs to,
// and the metadata the request itself carried (RequesterMetadata).
type Metadata struct {
	UserAPIKeyHash      *string        `json:"user_api_key_hash"` // sha256 of the key, never the key
	UserAPIKeyAlias     *string        `json:"user_api_key_alias"`
	UserAPIKeyOrgID     *string        `json:"user_api_key_org_id"`
	UserAPIKeyTeamID    *string        `json:"user_api_key_team_id"`
	UserAPIKeyUserID    *string        `json:"user_api_key_user_id"`
	UserAPIKeyTeamAlias *string        `json:"user_api_key_team_alias"`
	UserAPIKeyEndUserID *string        `json:"user_api_key_end_user_id"`
	RequesterIPAddress  *string        `json:"requester_ip_address"`
	RequesterMetadata   map[string]any `json:"requester_metadata"`
	// SessionID groups the request with others (LiteLLM's
	// litellm_session_id, or metadata.session_id); absent when none.
	SessionID string `json:"session_id,omitempty"`
}

// HiddenParams is LiteLLM's StandardLoggingHiddenParams: the deployment
// that answered and what it cost, repeated for readers of LiteLLM's
// hidden_params. Fields Tollgate has no value for are null.
type HiddenParams struct {
	ModelID               *string        `json:"model_id"`
	CacheKey              *string        `json:"cache_key"`
	APIBase               *string        `json:"api_base"`
	ResponseCost          *float64       `json:"response_cost"`
	LiteLLMOverheadTimeMS *float64       `json:"litellm_overhead_time_ms"`
	AdditionalHeaders     map[string]any `json:"additional_headers"`
	BatchModels           []string       `json:"batch_models"`
	LiteLLMModelName      *string        `json:"litellm_model_name"` // the model sent upstream
	UsageObject           map[string]any `json:"usage_object"`
}

// ModelMapInformation is LiteLLM's StandardLoggingModelInformation: the
// key the call was priced under and, when priced, the prices per token.
type ModelMapInformation struct {
	ModelMapKey string `json:"model_map_key"`
	// ModelMapValue is the price table's entry (its LiteLLM names), or nil.
	ModelMapValue any `json:"model_map_value"`
}

// ErrorInformation says why a failed request failed.
type ErrorInformation struct {
	ErrorCode   string `json:"error_code"`  // the HTTP status, as LiteLLM writes it
	ErrorClass  string `json:"error_class"` // LiteLLM's exception class (BadRequestError, RateLimitError, ...)
	LLMProvider string `json:"llm_provider"`
}

// estimateSize is about how many bytes p holds: its fixed fields, plus
// what varies with the request (content, error, tags, metadata,
// parameters). It does not encode p; nested maps are walked.
func (p *Payload) estimateSize() int {
	n := 1024 + len(p.ID) + len(p.TraceID) + len(p.Model) + len(p.APIBase) + len(p.Messages) + len(p.Response)
	if p.ErrorStr != nil {
		n += len(*p.ErrorStr)
	}
	for _, t := range p.RequestTags {
		n += len(t) + 16
	}
	n += anySize(p.Metadata.RequesterMetadata, 0) + anySize(p.ModelParameters, 0) + 512
	return n
}

// anySize estimates the bytes a decoded JSON value holds.
func anySize(v any, depth int) int {
	if depth > 16 {
		return 64
	}
	switch v := v.(type) {
	case string:
		return len(v) + 16
	case map[string]any:
		n := 48
		for k, e := range v {
			n += len(k) + 16 + anySize(e, depth+1)
		}
		return n
	case []any:
		n := 24
		for _, e := range v {
			n += anySize(e, depth+1)
		}
		return n
	case json.RawMessage:
		return len(v) + 24
	default:
		return 16
	}
}

// Failed reports whether p describes a failed request.
func (p *Payload) Failed() bool { return p.Status != "success" }

// Publisher takes payloads off the request path: Publish must not block
// (a full queue drops, and counts the drop). Wants says, before a payload
// is built, whether any sink takes a request that ended so; a publisher
// that wants nothing costs a call nothing more.
type Publisher interface {
	Wants(failed bool) bool
	Publish(p *Payload)
}
