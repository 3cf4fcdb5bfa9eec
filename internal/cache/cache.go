// Package cache is the response cache: an exact-match store of whole
// answers under a key derived from everything in a request that changes
// the answer. Its backends are an in-process LRU bounded by bytes (Local)
// and Redis (Redis). A backend that fails is a miss, never an error for
// the request: the caller counts it and goes to the upstream.
package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"time"
)

// Entry is one stored answer: the bytes the client was sent (a JSON body,
// or a whole SSE stream in the client's format) and what the answer cost
// when it was produced, so that a hit can say what it saved.
type Entry struct {
	Stored      time.Time
	ContentType string
	Body        []byte
	// Deployment and Provider produced the answer.
	Deployment, Provider string
	// PromptTokens and CompletionTokens are the answer's usage; Cost what
	// it was booked at (the deployment's price).
	PromptTokens, CompletionTokens int64
	Cost                           float64
}

// Size is what the entry takes in a cache, roughly: its body and strings.
func (e *Entry) Size() int64 {
	return int64(len(e.Body) + len(e.ContentType) + len(e.Deployment) + len(e.Provider) + 64)
}

// header is an Entry's fields but the body, as encoded.
type header struct {
	Stored      int64   `json:"s"`
	ContentType string  `json:"t"`
	Deployment  string  `json:"d,omitempty"`
	Provider    string  `json:"p,omitempty"`
	Prompt      int64   `json:"pt,omitempty"`
	Completion  int64   `json:"ct,omitempty"`
	Cost        float64 `json:"c,omitempty"`
}

// Encode writes e as a 4-byte header length, the header as JSON, then the
// body as it is (no base64).
func (e *Entry) Encode() []byte {
	h, _ := json.Marshal(header{Stored: e.Stored.UnixMicro(), ContentType: e.ContentType, Deployment: e.Deployment,
		Provider: e.Provider, Prompt: e.PromptTokens, Completion: e.CompletionTokens, Cost: e.Cost})
	out := make([]byte, 4, 4+len(h)+len(e.Body))
	binary.BigEndian.PutUint32(out, uint32(len(h)))
	out = append(out, h...)
	return append(out, e.Body...)
}

// errCorrupt is a stored value that does not decode.
var errCorrupt = errors.New("cache: stored entry does not decode")

// Decode reads what Encode wrote.
func Decode(b []byte) (*Entry, error) {
	if len(b) < 4 {
		return nil, errCorrupt
	}
	n := int(binary.BigEndian.Uint32(b))
	if n > len(b)-4 {
		return nil, errCorrupt
	}
	var h header
	if err := json.Unmarshal(b[4:4+n], &h); err != nil {
		return nil, errCorrupt
	}
	return &Entry{Stored: time.UnixMicro(h.Stored), ContentType: h.ContentType, Body: b[4+n:], Deployment: h.Deployment,
		Provider: h.Provider, PromptTokens: h.Prompt, CompletionTokens: h.Completion, Cost: h.Cost}, nil
}

// Backend stores entries by key.
type Backend interface {
	// Get returns the entry under key, nil when there is none (or it
	// expired).
	Get(ctx context.Context, key string) (*Entry, error)
	// Set stores e under key for ttl.
	Set(ctx context.Context, key string, e *Entry, ttl time.Duration) error
	// Delete removes the entries under keys.
	Delete(ctx context.Context, keys ...string) error
	// Flush removes every entry.
	Flush(ctx context.Context) error
	// Ping reports whether the backend answers.
	Ping(ctx context.Context) error
	// Name is the backend's cache_params.type: local or redis.
	Name() string
}

// KeyParts are what a cache key is made of.
type KeyParts struct {
	CallType string // LiteLLM's call type (acompletion, anthropic_messages, ...)
	Model    string // the model group the request resolved to
	// Scope is whose answers the key reaches: a team, a key, or the
	// operator's shared namespace.
	Scope string
	// Namespace is the request's own (cache.namespace), within Scope.
	Namespace string
	Body      []byte // the request body as sent (a JSON object)
}

// Ignored are body members that do not change the answer, or are the
// gateway's own: they are left out of the key.
var Ignored = map[string]bool{
	"model": true, "user": true, "metadata": true, "litellm_metadata": true, "cache": true, "tags": true,
	"no-log": true, "turn_off_message_logging": true, "litellm_session_id": true, "litellm_trace_id": true,
	"safety_identifier": true,
}

// Key is the hex sha256 of the parts, with the body normalised: members in
// sorted order, no whitespace, numbers as written, members in Ignored
// left out. A body that is not a JSON object is hashed as it is.
func Key(p KeyParts) string {
	h := sha256.New()
	for _, s := range []string{"tollgate-cache-v1", p.CallType, p.Model, p.Scope, p.Namespace} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	h.Write(Normalize(p.Body))
	return hex.EncodeToString(h.Sum(nil))
}

// Normalize is body as canonical JSON without the Ignored members: sorted
// keys (encoding/json sorts maps), no insignificant whitespace, numbers
// kept as written.
func Normalize(body []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return body
	}
	for k := range m {
		if Ignored[k] {
			delete(m, k)
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		return body
	}
	return out
}

// ttlMillis is d in whole milliseconds, at least 1.
func ttlMillis(d time.Duration) int64 {
	return max(1, int64(math.Ceil(float64(d)/float64(time.Millisecond))))
}
