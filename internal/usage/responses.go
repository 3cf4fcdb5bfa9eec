package usage

import "encoding/json"

// Responses is the usage member of an OpenAI Responses API answer (and of
// the response in its response.completed event): input and output tokens,
// with the cache reads inside the input and the reasoning inside the output,
// as in chat's convention.
type Responses struct {
	InputTokens         int64   `json:"input_tokens"`
	InputTokensDetails  Cached  `json:"input_tokens_details"`
	OutputTokens        int64   `json:"output_tokens"`
	OutputTokensDetails Reasons `json:"output_tokens_details"`
	TotalTokens         Derived `json:"total_tokens"`
}

// Cached is input_tokens_details.
type Cached struct {
	CachedTokens int64 `json:"cached_tokens"`
}

// Reasons is output_tokens_details.
type Reasons struct {
	ReasoningTokens int64 `json:"reasoning_tokens"`
}

// Usage is r in the common type.
func (r Responses) Usage() Usage {
	return Usage{Prompt: r.InputTokens, Completion: r.OutputTokens,
		Cached: r.InputTokensDetails.CachedTokens, Reasoning: r.OutputTokensDetails.ReasoningTokens}
}

// Responses is u as a Responses API usage member; cache creation has no
// place in it and is counted in the input.
func (u Usage) Responses() Responses {
	return Responses{InputTokens: u.Prompt, OutputTokens: u.Completion, TotalTokens: Derived(u.Prompt + u.Completion),
		InputTokensDetails: Cached{u.Cached}, OutputTokensDetails: Reasons{u.Reasoning}}
}

// ParseResponses reads a Responses API usage member. It reports false when
// raw is not a JSON object or its counts are not integers.
func ParseResponses(raw []byte) (Usage, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return Usage{}, false
	}
	var r Responses
	if json.Unmarshal(raw, &r) != nil {
		return Usage{}, false
	}
	return r.Usage(), true
}
