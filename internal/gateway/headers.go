package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/store"
)

// Response headers. Each value Tollgate reports under its own name
// (x-tollgate-*) is reported under LiteLLM's name too (x-litellm-*, the names
// LiteLLM's proxy sets), so that scripts written against LiteLLM read them.
// A value LiteLLM would leave out (a key without a tpm limit, a deployment
// without a region) is left out. Keys are written in canonical form by map
// assignment, and the two names of one value share one []string: a header
// costs one small allocation, not a canonicalisation and two.
const (
	hdrCallID       = "X-Tollgate-Call-Id"
	hdrModelID      = "X-Tollgate-Model-Id"
	hdrRetries      = "X-Tollgate-Attempted-Retries"
	hdrFallbacks    = "X-Tollgate-Attempted-Fallbacks"
	hdrCost         = "X-Tollgate-Response-Cost"
	hdrKeySpend     = "X-Tollgate-Key-Spend"
	hdrOutputCapped = "X-Tollgate-Output-Capped"
	hdrUnpriced     = "X-Tollgate-Unpriced"
	llmCallID       = "X-Litellm-Call-Id"
	llmModelID      = "X-Litellm-Model-Id"
	llmAPIBase      = "X-Litellm-Model-Api-Base"
	llmRegion       = "X-Litellm-Model-Region"
	llmModelGroup   = "X-Litellm-Model-Group"
	llmVersion      = "X-Litellm-Version"
	llmRetries      = "X-Litellm-Attempted-Retries"
	llmFallbacks    = "X-Litellm-Attempted-Fallbacks"
	llmCost         = "X-Litellm-Response-Cost"
	llmKeySpend     = "X-Litellm-Key-Spend"
	llmKeyMaxBudget = "X-Litellm-Key-Max-Budget"
	llmKeyTPMLimit  = "X-Litellm-Key-Tpm-Limit"
	llmKeyRPMLimit  = "X-Litellm-Key-Rpm-Limit"
	llmDuration     = "X-Litellm-Response-Duration-Ms"
	llmOverhead     = "X-Litellm-Overhead-Duration-Ms"
)

// setBoth sets one value under Tollgate's name and LiteLLM's.
func setBoth(h http.Header, tollgate, litellm, v string) {
	s := []string{v}
	h[tollgate], h[litellm] = s, s
}

// The slots of call.hv, one per header value a call sets.
const (
	hvCallID = iota
	hvModelID
	hvAPIBase
	hvRegion
	hvModelGroup
	hvDuration
	hvOverhead
	hvTPM
	hvRPM
	hvMaxBudget
	hvCount
)

// one is v as a header value in the call's slot i: a slice of length and
// capacity 1 over c.hv, so an Add to the header reallocates rather than
// writing into the next slot. A slot is written again only when its header
// is set again (a retry's attempt headers), so no header reads another's.
func (c *call) one(i int, v string) []string {
	c.hv[i] = v
	return c.hv[i : i+1 : i+1]
}

// small are the header values of the counts 0 to 9 (retries, fallbacks),
// shared by every response: nothing writes into a header's slice in place.
var small = func() (s [10][]string) {
	for i := range s {
		s[i] = []string{strconv.Itoa(i)}
	}
	return s
}()

func countValue(n int) []string {
	if n >= 0 && n < len(small) {
		return small[n]
	}
	return []string{strconv.Itoa(n)}
}

// callHeaders are set once the call is routed: its id, the gateway's
// version, and the limits of the caller's key.
func (c *call) callHeaders(h http.Header) {
	id := c.one(hvCallID, c.id)
	h[hdrCallID], h[llmCallID] = id, id
	if v := c.g.version; v != nil {
		h[llmVersion] = v
	}
	if k := c.p.Key; k != nil {
		c.keyLimitHeaders(h, k)
	}
}

func (c *call) keyLimitHeaders(h http.Header, k *store.Key) {
	if k.TPMLimit != nil {
		h[llmKeyTPMLimit] = c.one(hvTPM, cachedInt(*k.TPMLimit))
	}
	if k.RPMLimit != nil {
		h[llmKeyRPMLimit] = c.one(hvRPM, cachedInt(*k.RPMLimit))
	}
	if k.MaxBudget != nil {
		h[llmKeyMaxBudget] = c.one(hvMaxBudget, cachedBudget(*k.MaxBudget))
	}
}

// attemptHeaders name the deployment of an attempt and the retries and
// fallbacks so far.
func (c *call) attemptHeaders(h http.Header, t *provider.Target, group string) {
	id := c.one(hvModelID, t.D.ID)
	h[hdrModelID], h[llmModelID] = id, id
	if base := t.D.APIBase; base != "" {
		h[llmAPIBase] = c.one(hvAPIBase, provider.ShownBase(base)) // a URL may carry credentials
	} else {
		delete(h, llmAPIBase)
	}
	if t.D.Region != "" {
		h[llmRegion] = c.one(hvRegion, t.D.Region)
	} else {
		delete(h, llmRegion)
	}
	h[llmModelGroup] = c.one(hvModelGroup, group)
	r, f := countValue(c.retries), countValue(c.fellBack)
	h[hdrRetries], h[llmRetries] = r, r
	h[hdrFallbacks], h[llmFallbacks] = f, f
}

// durationHeaders are set just before the answer's headers are written:
// the time since the request arrived, and what of it was not spent waiting
// on the upstream.
func (c *call) durationHeaders(h http.Header, upstream time.Duration) {
	total := time.Since(c.start)
	h[llmDuration] = c.one(hvDuration, strconv.FormatInt(total.Milliseconds(), 10))
	h[llmOverhead] = c.one(hvOverhead, strconv.FormatInt(max(total-upstream, 0).Milliseconds(), 10))
}

// answerID is the id of a stream's first event (or of a whole answer): the
// first "id" member holding a string, which is the chunk's own id in
// OpenAI's chunks (chatcmpl-..., first member) and the message's in
// Anthropic's message_start (msg_...). It scans the bytes rather than
// decoding them: the stream path allocates only the id. ok is false when the
// event carries no JSON data (a comment, a keep-alive): look at the next.
func answerID(event []byte) (id string, ok bool) {
	data := event
	if _, after, found := bytes.Cut(event, []byte("data:")); found {
		data, _, _ = bytes.Cut(after, []byte{'\n'})
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return "", false
	}
	for rest := data; ; {
		i := bytes.Index(rest, []byte(`"id"`))
		if i < 0 {
			return "", true
		}
		rest = bytes.TrimLeft(rest[i+4:], " \t\r\n")
		if len(rest) == 0 || rest[0] != ':' {
			continue // "id" as a value, not a member name
		}
		rest = bytes.TrimLeft(rest[1:], " \t\r\n")
		if len(rest) == 0 || rest[0] != '"' {
			continue
		}
		end := 1
		for end < len(rest) && rest[end] != '"' {
			if rest[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(rest) {
			return "", true
		}
		if bytes.IndexByte(rest[1:end], '\\') >= 0 {
			var s string
			_ = json.Unmarshal(rest[:end+1], &s)
			return s, true
		}
		return string(rest[1:end]), true
	}
}

// callTypes are LiteLLM's names of the operations, for the spend log.
var callTypes = [...]string{
	provider.OpChat:             "acompletion",
	provider.OpCompletions:      "atext_completion",
	provider.OpEmbeddings:       "aembedding",
	provider.OpMessages:         "anthropic_messages",
	provider.OpResponses:        "aresponses",
	provider.OpImageGenerations: "aimage_generation",
	provider.OpImageEdits:       "aimage_edit",
	provider.OpImageVariations:  "aimage_variation",
	provider.OpTranscriptions:   "atranscription",
	provider.OpTranslations:     "atranslation",
	provider.OpSpeech:           "aspeech",
	provider.OpModerations:      "amoderation",
	provider.OpRerank:           "arerank",
	provider.OpPassThrough:      "pass_through_endpoint",
}

func callType(op provider.Op) string {
	if int(op) < len(callTypes) {
		return callTypes[op]
	}
	return op.String()
}
