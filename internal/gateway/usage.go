package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"

	"github.com/tollgate/tollgate/internal/jsonbody"
)

// usage is token usage in OpenAI's convention: prompt includes cached.
type usage struct {
	prompt, completion, cached, cacheCreation, reasoning int64
}

type openAIUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails *struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

func parseUsage(raw []byte) (usage, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return usage{}, false
	}
	var u openAIUsage
	if json.Unmarshal(raw, &u) != nil {
		return usage{}, false
	}
	out := usage{prompt: u.PromptTokens, completion: u.CompletionTokens}
	if u.PromptTokensDetails != nil {
		out.cached = u.PromptTokensDetails.CachedTokens
	}
	if u.CompletionTokensDetails != nil {
		out.reasoning = u.CompletionTokensDetails.ReasoningTokens
	}
	return out, true
}

// usageFromBody reads the usage member of a JSON response.
func usageFromBody(body []byte) (usage, bool) {
	var o jsonbody.Object
	if o.Reset(body) != nil {
		return usage{}, false
	}
	return parseUsage(o.Get("usage"))
}

// usageFromChunk reads usage from one stream chunk and reports whether the
// chunk carries nothing else (OpenAI's final chunk has "choices": []).
func usageFromChunk(data []byte) (u usage, onlyUsage, ok bool) {
	var o jsonbody.Object
	if o.Reset(data) != nil {
		return usage{}, false, false
	}
	u, ok = parseUsage(o.Get("usage"))
	choices := o.Get("choices")
	onlyUsage = ok && (choices == nil || string(choices) == "[]")
	return u, onlyUsage, ok
}

// modelOf is the "model" member of a JSON answer or chunk: the model the
// upstream says it served.
func modelOf(body []byte) string {
	var o jsonbody.Object
	if o.Reset(body) != nil {
		return ""
	}
	m, _ := o.String("model")
	return m
}

// newCallID returns a random request id, unique across replicas.
func newCallID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
