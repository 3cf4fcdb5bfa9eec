// Package usage is token usage: one type in OpenAI's convention, the usage
// member of an OpenAI answer (read and written with one struct) and of an
// Anthropic answer, with the normalisation between the two conventions.
package usage

import (
	"strconv"

	"github.com/tollgate/tollgate/internal/jsonbody"
)

// Usage is token usage in OpenAI's convention: Prompt counts every prompt
// token, the cache reads (Cached) and cache creation (CacheCreation)
// included; Completion counts every output token, Reasoning included.
// Counts are kept as reported, negative ones too: whoever books them bounds
// them.
type Usage struct {
	Prompt, Completion, Cached, CacheCreation, Reasoning int64

	// SearchUnits are the billed units of a rerank call (Cohere's
	// search_units: a query over up to 100 documents or chunks).
	SearchUnits int64

	// Media units (images and audio), priced apart from text tokens.
	Media
}

// Media counts what image and audio calls are billed by besides text
// tokens. Images are those billed per image or per pixel (ImagePixels is
// each one's width × height); an image model that reports token usage
// counts its images in ImagePromptTokens and ImageCompletionTokens instead,
// which are the parts of Prompt and Completion that are image tokens, as
// AudioPromptTokens is the part of Prompt that is audio. Characters are
// those of text spoken; AudioSeconds the length of audio heard.
type Media struct {
	Images, ImagePixels                                         int64
	ImagePromptTokens, ImageCompletionTokens, AudioPromptTokens int64
	Characters                                                  int64
	AudioSeconds                                                float64
}

// OpenAI is the usage member of an OpenAI answer or stream chunk, as read
// and as written.
type OpenAI struct {
	PromptTokens            int64              `json:"prompt_tokens"`
	CompletionTokens        int64              `json:"completion_tokens"`
	TotalTokens             Derived            `json:"total_tokens"`
	PromptTokensDetails     *PromptDetails     `json:"prompt_tokens_details,omitempty"`
	CompletionTokensDetails *CompletionDetails `json:"completion_tokens_details,omitempty"`
}

// PromptDetails is OpenAI's prompt_tokens_details.
type PromptDetails struct {
	CachedTokens int64 `json:"cached_tokens"`
}

// CompletionDetails is OpenAI's completion_tokens_details.
type CompletionDetails struct {
	ReasoningTokens int64 `json:"reasoning_tokens"`
}

// Derived is a count computed from the others (total_tokens): written as a
// number, never read, so that what an upstream sends there cannot spoil the
// counts that are.
type Derived int64

// UnmarshalJSON ignores the value.
func (*Derived) UnmarshalJSON([]byte) error { return nil }

// Usage is o in the common type.
func (o OpenAI) Usage() Usage {
	u := Usage{Prompt: o.PromptTokens, Completion: o.CompletionTokens}
	if d := o.PromptTokensDetails; d != nil {
		u.Cached = d.CachedTokens
	}
	if d := o.CompletionTokensDetails; d != nil {
		u.Reasoning = d.ReasoningTokens
	}
	return u
}

// OpenAI is u as an OpenAI usage member: total_tokens is Prompt plus
// Completion, and each details object is present only when its count is
// positive. Cache creation has no place in it; it is counted in Prompt.
func (u Usage) OpenAI() *OpenAI {
	o := &OpenAI{PromptTokens: u.Prompt, CompletionTokens: u.Completion, TotalTokens: Derived(u.Prompt + u.Completion)}
	if u.Cached > 0 {
		o.PromptTokensDetails = &PromptDetails{CachedTokens: u.Cached}
	}
	if u.Reasoning > 0 {
		o.CompletionTokensDetails = &CompletionDetails{ReasoningTokens: u.Reasoning}
	}
	return o
}

// Parse reads an OpenAI usage member. It reports false when raw is not a
// JSON object (missing, null) or its counts are not integers.
//
// It gives what json.Unmarshal into OpenAI gives (TestParseMatchesDecoder,
// FuzzParseMatchesDecoder), without reflection: members matched to fields
// under Unicode case folding, escapes in names decoded, the last of a
// repeated member winning, null leaving a count as it was and clearing a
// details object, a repeated details object merging into the earlier one,
// and any count that is not an integer in int64's range failing the whole.
func Parse(raw []byte) (Usage, bool) {
	if len(raw) == 0 || raw[0] != '{' || !jsonbody.Valid(raw) {
		return Usage{}, false
	}
	return parseValid(raw)
}

// ParseValid is Parse for raw that the caller has already found to be valid
// JSON (a member of a validated answer): it skips the validation.
func ParseValid(raw []byte) (Usage, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return Usage{}, false
	}
	return parseValid(raw)
}

func parseValid(raw []byte) (Usage, bool) {
	var (
		u                Usage
		c                jsonbody.Cursor
		hasCached, hasRs bool // the details pointers of OpenAI, non-nil
	)
	c.StartValid(raw)
	for {
		k, v, more := c.Next()
		if !more {
			break
		}
		var ok bool
		switch {
		case jsonbody.KeyFold(k, "prompt_tokens"):
			ok = intInto(v, &u.Prompt)
		case jsonbody.KeyFold(k, "completion_tokens"):
			ok = intInto(v, &u.Completion)
		case jsonbody.KeyFold(k, "total_tokens"):
			ok = true // Derived: never read
		case jsonbody.KeyFold(k, "prompt_tokens_details"):
			ok = detailsInto(v, "cached_tokens", &u.Cached, &hasCached)
		case jsonbody.KeyFold(k, "completion_tokens_details"):
			ok = detailsInto(v, "reasoning_tokens", &u.Reasoning, &hasRs)
		default:
			ok = true
		}
		if !ok {
			return Usage{}, false
		}
	}
	if !hasCached {
		u.Cached = 0
	}
	if !hasRs {
		u.Reasoning = 0
	}
	return u, true
}

// detailsInto decodes v into a details object held in *n and *present as
// encoding/json decodes into a *PromptDetails: null clears it, an object
// fills the one there (a new one when there is none), anything else fails.
func detailsInto(v []byte, field string, n *int64, present *bool) bool {
	switch v[0] {
	case 'n':
		*n, *present = 0, false
		return true
	case '{':
	default:
		return false
	}
	if !*present {
		*n, *present = 0, true
	}
	var c jsonbody.Cursor
	c.StartValid(v)
	for {
		k, w, more := c.Next()
		if !more {
			return true
		}
		if jsonbody.KeyFold(k, field) && !intInto(w, n) {
			return false
		}
	}
}

// intInto decodes a valid JSON value into *n as encoding/json decodes into
// an int64: null leaves it, an integer literal in range sets it, anything
// else (a fraction, an exponent, a string, a bool, an object, an array, an
// integer out of range) fails.
func intInto(v []byte, n *int64) bool {
	if v[0] == 'n' {
		return true
	}
	neg := v[0] == '-'
	d := v
	if neg {
		d = v[1:]
	}
	if len(d) == 0 {
		return false
	}
	var x uint64
	for _, ch := range d {
		if ch < '0' || ch > '9' {
			return false // '.', 'e', or not a number at all
		}
		if x > (1<<63)/10 {
			return false
		}
		x = x*10 + uint64(ch-'0')
		if x > 1<<63 {
			return false
		}
	}
	switch {
	case neg:
		*n = int64(-x) // x == 1<<63 gives math.MinInt64
	case x > 1<<63-1:
		return false
	default:
		*n = int64(x)
	}
	return true
}

// Anthropic is the usage member of an Anthropic message or stream event.
// Its input_tokens exclude the cache reads and cache creation.
type Anthropic struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
}

// Usage normalises a to OpenAI's convention: the cache reads and creation
// join the prompt.
func (a Anthropic) Usage() Usage {
	return Usage{Prompt: a.InputTokens + a.CacheReadInputTokens + a.CacheCreationInputTokens, Completion: a.OutputTokens,
		Cached: a.CacheReadInputTokens, CacheCreation: a.CacheCreationInputTokens}
}

// Anthropic is u in Anthropic's convention: input_tokens is the prompt
// without the cache reads and creation, never below zero. Reasoning has no
// place in it; it is counted in the output.
func (u Usage) Anthropic() Anthropic {
	return Anthropic{InputTokens: max(u.Prompt-u.Cached-u.CacheCreation, 0), OutputTokens: u.Completion,
		CacheReadInputTokens: u.Cached, CacheCreationInputTokens: u.CacheCreation}
}

// AppendOpenAI appends the "usage" member of an OpenAI answer for prompt
// and completion tokens, without encoding a struct: what the demo model and
// the mock upstream write on every answer.
func AppendOpenAI(b []byte, prompt, completion int64) []byte {
	b = append(b, `"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, prompt, 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, completion, 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, prompt+completion, 10)
	return append(b, '}')
}
