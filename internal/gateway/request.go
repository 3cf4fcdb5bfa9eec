package gateway

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/provider"
)

// request is what the gateway needs to know of an inference request. The
// body itself is forwarded as is, except for the members the gateway owns.
type request struct {
	obj       jsonbody.Object
	model     string
	stream    bool
	maxTokens int64
	// outputs is how many completions the upstream generates and bills:
	// n (and best_of on /completions) for each prompt of a batch. The
	// worst case holds maxTokens for every one of them.
	outputs int64
	user    string
	// clientUsage: the client asked for the usage chunk of a stream itself.
	clientUsage bool
	// noOutput: the operation generates no tokens (rerank, moderation),
	// so a hold pays for none.
	noOutput bool
	// searchUnits are the billed units a rerank's documents make, and
	// searchUnitsMax the most they can make (rerankBody).
	searchUnits, searchUnitsMax int64
	// promptMax, when set, raises the prompt bound the hold and settle use
	// above the body's bytes (a rerank reads its query once per document).
	promptMax int64
	// media is what an image or audio request is priced by (media.go);
	// nil for the other operations.
	media *media
	// fixed is a price per call on top of its tokens' (a pass-through
	// endpoint's cost_per_request), in dollars.
	fixed float64
}

// readBody reads at most limit bytes of r's body.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, apierror.TooLarge(limit)
	}
	body, err := readSized(http.MaxBytesReader(w, r.Body, limit), r.ContentLength)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, apierror.TooLarge(limit)
		}
		var e *apierror.Error // the body deadline (408)
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, apierror.BadRequest("", "could not read request body: %v", err)
	}
	return body, nil
}

// presizeMax bounds the buffer readSized makes before any byte arrived: a
// client declaring a large body and sending little holds little.
const presizeMax = 256 << 10

// readSized reads r to its end. When the length is declared (a request's
// Content-Length, which net/http never lets the body exceed) the buffer is
// made at that size plus one byte (to see the end without growing) in one
// allocation, instead of io.ReadAll's 512 bytes grown by append: a
// 300-byte body took 512 B, a 40 KB one ≈ 100 KB over nine allocations.
// Above presizeMax the buffer starts there and grows as bytes arrive.
func readSized(r io.Reader, declared int64) ([]byte, error) {
	if declared < 0 {
		return io.ReadAll(r)
	}
	buf := make([]byte, 0, min(declared, presizeMax)+1)
	for {
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // past what was made: grow
		}
	}
}

// decode checks body and extracts the members the gateway acts on. A body
// that is only invalid because of trailing commas or # comments (as in
// LiteLLM's curl examples) is accepted in its cleaned form.
func decode(body []byte, pathModel string) (*request, error) {
	req := &request{}
	if err := req.obj.Reset(body); err != nil {
		relaxed, changed := jsonbody.Relax(body)
		if !changed || req.obj.Reset(relaxed) != nil {
			return nil, apierror.BadRequest("", "%v", err)
		}
	}
	o := &req.obj
	req.model = pathModel
	if req.model == "" {
		if !o.Has("model") || o.IsNull("model") {
			return nil, apierror.BadRequest("model", "you must provide a model parameter")
		}
		m, ok := o.String("model")
		if !ok || m == "" {
			return nil, apierror.BadRequest("model", "model must be a non-empty string")
		}
		req.model = m
	}
	if !o.IsNull("stream") {
		s, ok := o.Bool("stream")
		if !ok {
			return nil, apierror.BadRequest("stream", "stream must be a boolean")
		}
		req.stream = s
	}
	for _, k := range []string{"max_completion_tokens", "max_tokens"} {
		if o.IsNull(k) {
			continue
		}
		n, ok := o.Int(k)
		if !ok || n < 0 {
			return nil, apierror.BadRequest(k, "%s must be a non-negative integer", k)
		}
		req.maxTokens = n
		break
	}
	req.outputs = 1
	for _, k := range []string{"n", "best_of"} {
		if o.IsNull(k) {
			continue
		}
		n, ok := o.Int(k)
		if !ok || n < 1 {
			return nil, apierror.BadRequest(k, "%s must be a positive integer", k)
		}
		req.outputs = max(req.outputs, n) // best_of ≥ n: best_of are generated
	}
	req.outputs = satMul(req.outputs, prompts(o.Get("prompt")))
	if !o.IsNull("user") {
		u, ok := o.String("user")
		if !ok {
			return nil, apierror.BadRequest("user", "user must be a string")
		}
		req.user = u
	}
	if so := o.Get("stream_options"); so != nil && string(so) != "null" {
		var opts struct {
			IncludeUsage *bool `json:"include_usage"`
		}
		if json.Unmarshal(so, &opts) != nil {
			return nil, apierror.BadRequest("stream_options", "stream_options must be an object")
		}
		req.clientUsage = opts.IncludeUsage != nil && *opts.IncludeUsage
	}
	return req, nil
}

// prompts is how many prompts a /completions prompt holds: a batch (an
// array of strings, or of token arrays) gets n completions for each.
func prompts(raw []byte) int64 {
	if len(raw) < 2 || raw[0] != '[' {
		return 1
	}
	var batch []json.RawMessage
	if json.Unmarshal(raw, &batch) != nil || len(batch) == 0 {
		return 1
	}
	if first := batch[0]; len(first) == 0 || (first[0] != '"' && first[0] != '[') {
		return 1 // one prompt given as token ids
	}
	return int64(len(batch))
}

// satMul is a*b for non-negative numbers, saturating instead of overflowing.
func satMul(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}

// upstreamBody is the body to forward: the client's, with the model set to
// the deployment's and, for streams, usage requested from the upstream so
// that the answer can be metered.
func (req *request) upstreamBody(model string, askUsage bool) []byte {
	if md := req.media; md != nil && md.form != nil {
		return md.form.encode(model)
	}
	body := req.obj.With("model", quote(model))
	if !askUsage || req.clientUsage {
		return body
	}
	var o jsonbody.Object
	if o.Reset(body) != nil {
		return body
	}
	so := o.Get("stream_options")
	if so == nil || string(so) == "null" {
		return o.With("stream_options", []byte(`{"include_usage":true}`))
	}
	var inner jsonbody.Object
	if inner.Reset(so) != nil {
		return body
	}
	return o.With("stream_options", inner.With("include_usage", []byte("true")))
}

// capOutput caps the output of an upstream body for op to n tokens per
// completion: the member the body already sets (max_completion_tokens,
// max_tokens) is lowered; a body without one gets max_tokens, or for
// OpenAI's own chat API max_completion_tokens (its reasoning models refuse
// max_tokens).
func capOutput(body []byte, op provider.Op, providerName string, n int64) []byte {
	var o jsonbody.Object
	if o.Reset(body) != nil {
		return body
	}
	switch op {
	case provider.OpGenerateContent:
		return capNested(&o, "generationConfig", "maxOutputTokens", n)
	case provider.OpConverse:
		return capNested(&o, "inferenceConfig", "maxTokens", n)
	}
	key := "max_tokens"
	switch {
	case op == provider.OpMessages, op == provider.OpCohereChat:
	case op == provider.OpResponses:
		key = "max_output_tokens"
	case o.Has("max_completion_tokens") && !o.IsNull("max_completion_tokens"):
		key = "max_completion_tokens"
	case o.Has("max_tokens") && !o.IsNull("max_tokens"):
	case op == provider.OpChat && providerName == "openai":
		key = "max_completion_tokens"
	}
	if cur, ok := o.Int(key); ok && cur > 0 && cur <= n {
		return body
	}
	return o.With(key, strconv.AppendInt(nil, n, 10))
}

// thinkingBudget is an Anthropic body's thinking.budget_tokens (0 when it
// asks for no extended thinking): max_tokens must stay above it.
func thinkingBudget(body []byte) int64 {
	var o jsonbody.Object
	if o.Reset(body) != nil {
		return 0
	}
	raw := o.Get("thinking")
	if len(raw) == 0 || raw[0] != '{' {
		return 0
	}
	var t jsonbody.Object
	if t.Reset(raw) != nil {
		return 0
	}
	n, _ := t.Int("budget_tokens")
	return n
}

func quote(s string) []byte {
	if isPlain(s) {
		b := make([]byte, 0, len(s)+2)
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	return jsonbody.Quote(s)
}

// isPlain reports whether s needs no escaping inside a JSON string.
func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

// anthropicUser takes the end user of an Anthropic request from
// metadata.user_id.
func (req *request) anthropicUser() {
	if req.user != "" {
		return
	}
	var md struct {
		UserID string `json:"user_id"`
	}
	if raw := req.obj.Get("metadata"); raw != nil && json.Unmarshal(raw, &md) == nil {
		req.user = md.UserID
	}
}

// capNested caps a body's member.key (generateContent's
// generationConfig.maxOutputTokens, Converse's inferenceConfig.maxTokens)
// to n.
func capNested(o *jsonbody.Object, member, key string, n int64) []byte {
	var gc jsonbody.Object
	raw := o.Get(member)
	if len(raw) == 0 || raw[0] != '{' || gc.Reset(raw) != nil {
		_ = gc.Reset([]byte("{}"))
	}
	if cur, ok := gc.Int(key); ok && cur > 0 && cur <= n {
		return o.Body()
	}
	return o.With(member, gc.With(key, strconv.AppendInt(nil, n, 10)))
}
