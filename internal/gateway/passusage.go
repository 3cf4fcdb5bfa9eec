package gateway

import (
	"bytes"
	"encoding/json"

	"github.com/tollgate/tollgate/internal/usage"
)

// nativeMeter reads the usage of a pass-through answer in its provider's
// own fields, from a whole answer or event by event.
type nativeMeter struct {
	read   func(m *nativeMeter, data []byte)
	u      usage.Usage
	ok     bool            // u is what the provider reported
	anth   usage.Anthropic // an Anthropic stream's usage so far
	chunks int             // events without usage (for an estimate)
	text   int64           // bytes of generated text they carried
}

// into copies what m read into res. An answer whose usage could not be
// read (a listing, a file, an upstream that sends none) is booked as the
// gateway's estimate: its events' text, or nothing.
func (m *nativeMeter) into(res *result) {
	if m != nil {
		if m.ok {
			res.usage, res.hasUsage = m.u, true
		}
		res.chunks, res.text = m.chunks, m.text
	}
	if !res.hasUsage && res.chunks == 0 {
		res.estimated = true
	}
}

// content counts an event that carries no usage.
func (m *nativeMeter) content(data []byte) {
	m.chunks++
	m.text += generatedBytes(data)
}

// openAI reads OpenAI's usage: chat and completions (prompt_tokens), the
// Responses API (input_tokens, at the top or in response.completed's
// response), embeddings.
func (m *nativeMeter) openAI(data []byte) {
	if c := scanChunk(data); !c.usage {
		m.chunks++
		m.text += c.text
		return
	}
	var v struct {
		Usage    json.RawMessage `json:"usage"`
		Response *struct {
			Usage json.RawMessage `json:"usage"`
		} `json:"response"`
	}
	if json.Unmarshal(data, &v) != nil {
		return
	}
	raw := v.Usage
	if (len(raw) == 0 || string(raw) == "null") && v.Response != nil {
		raw = v.Response.Usage
	}
	if bytes.Contains(raw, []byte(`"prompt_tokens"`)) {
		m.u, m.ok = usage.Parse(raw)
		return
	}
	var r struct {
		InputTokens        int64 `json:"input_tokens"`
		OutputTokens       int64 `json:"output_tokens"`
		InputTokensDetails *struct {
			CachedTokens int64 `json:"cached_tokens"`
		} `json:"input_tokens_details"`
		OutputTokensDetails *struct {
			ReasoningTokens int64 `json:"reasoning_tokens"`
		} `json:"output_tokens_details"`
	}
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &r) != nil {
		return
	}
	m.u, m.ok = usage.Usage{Prompt: r.InputTokens, Completion: r.OutputTokens}, true
	if d := r.InputTokensDetails; d != nil {
		m.u.Cached = d.CachedTokens
	}
	if d := r.OutputTokensDetails; d != nil {
		m.u.Reasoning = d.ReasoningTokens
	}
}

// anthropic reads a message's usage, or a stream's: message_start's
// message.usage, then message_delta's counts over it.
func (m *nativeMeter) anthropic(data []byte) {
	if !bytes.Contains(data, []byte(`"usage"`)) {
		if bytes.Contains(data, []byte(`"content_block_delta"`)) {
			m.content(data)
		}
		return
	}
	var v struct {
		Type    string           `json:"type"`
		Usage   *usage.Anthropic `json:"usage"`
		Message *struct {
			Usage *usage.Anthropic `json:"usage"`
		} `json:"message"`
	}
	if json.Unmarshal(data, &v) != nil {
		return
	}
	switch {
	case v.Message != nil && v.Message.Usage != nil:
		m.anth = *v.Message.Usage
	case v.Usage != nil && v.Type == "message_delta":
		// Its counts are cumulative; the input ones only when it has them.
		u := v.Usage
		m.anth.OutputTokens = u.OutputTokens
		if u.InputTokens > 0 {
			m.anth.InputTokens = u.InputTokens
		}
		if u.CacheReadInputTokens > 0 {
			m.anth.CacheReadInputTokens = u.CacheReadInputTokens
		}
		if u.CacheCreationInputTokens > 0 {
			m.anth.CacheCreationInputTokens = u.CacheCreationInputTokens
		}
	case v.Usage != nil:
		m.anth = *v.Usage
	default:
		return
	}
	m.u, m.ok = m.anth.Usage(), true
}

// gemini reads usageMetadata: a whole answer's, a stream chunk's (each
// carries the counts so far), or the last of a JSON array of chunks.
func (m *nativeMeter) gemini(data []byte) {
	if len(data) > 0 && data[0] == '[' {
		var chunks []json.RawMessage
		if json.Unmarshal(data, &chunks) == nil {
			for _, c := range chunks {
				m.gemini(c)
			}
		}
		return
	}
	if !bytes.Contains(data, []byte(`"usageMetadata"`)) {
		m.content(data)
		return
	}
	var v struct {
		UsageMetadata *struct {
			PromptTokenCount        int64 `json:"promptTokenCount"`
			CandidatesTokenCount    int64 `json:"candidatesTokenCount"`
			ThoughtsTokenCount      int64 `json:"thoughtsTokenCount"`
			CachedContentTokenCount int64 `json:"cachedContentTokenCount"`
		} `json:"usageMetadata"`
	}
	if json.Unmarshal(data, &v) != nil || v.UsageMetadata == nil {
		return
	}
	u := v.UsageMetadata
	// Thinking is billed as output.
	m.u = usage.Usage{Prompt: u.PromptTokenCount, Completion: u.CandidatesTokenCount + u.ThoughtsTokenCount,
		Cached: u.CachedContentTokenCount, Reasoning: u.ThoughtsTokenCount}
	m.ok = true
}

// cohereBilled is Cohere's billed_units.
type cohereBilled struct {
	InputTokens  float64 `json:"input_tokens"`
	OutputTokens float64 `json:"output_tokens"`
	SearchUnits  float64 `json:"search_units"`
}

type cohereUsage struct {
	BilledUnits *cohereBilled `json:"billed_units"`
}

// cohere reads billed_units: v2's usage (and its stream's message-end
// delta.usage), v1's meta (and its stream-end response.meta).
func (m *nativeMeter) cohere(data []byte) {
	if !bytes.Contains(data, []byte(`"billed_units"`)) {
		m.content(data)
		return
	}
	var v struct {
		Usage    *cohereUsage `json:"usage"`
		Meta     *cohereUsage `json:"meta"`
		Response *struct {
			Meta *cohereUsage `json:"meta"`
		} `json:"response"`
		Delta *struct {
			Usage *cohereUsage `json:"usage"`
		} `json:"delta"`
	}
	if json.Unmarshal(data, &v) != nil {
		return
	}
	found := []*cohereUsage{v.Usage, v.Meta}
	if v.Response != nil {
		found = append(found, v.Response.Meta)
	}
	if v.Delta != nil {
		found = append(found, v.Delta.Usage)
	}
	for _, cu := range found {
		if cu != nil && cu.BilledUnits != nil {
			m.u = usage.Usage{Prompt: int64(cu.BilledUnits.InputTokens), Completion: int64(cu.BilledUnits.OutputTokens),
				SearchUnits: int64(cu.BilledUnits.SearchUnits)}
			m.ok = true
			return
		}
	}
}
