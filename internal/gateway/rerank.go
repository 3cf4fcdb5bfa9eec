package gateway

import (
	"encoding/json"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/usage"
)

// Rerank (/v1/rerank, Cohere's body: model, query, documents, top_n) and
// moderations (/v1/moderations: input, an optional model) are passed through
// to any deployment that serves them; this file is what is particular to
// them: checking the body, bounding and reading a rerank's billed units, and
// the moderation model used when a request names none.

// searchUnitDocs is how many documents (or chunks of one) a rerank search
// unit covers, and searchChunkTokens how long a chunk is: Cohere bills a
// query over up to 100 of them as one unit and splits longer documents.
const (
	searchUnitDocs    = 100
	searchChunkTokens = 500
)

// pairTokens is what a cross-encoder adds to each query-document pair it
// reads besides their text (the [CLS] and [SEP] tokens around them).
const pairTokens = 4

// rerankBody checks a rerank body and sets what it is billed: search units
// for its documents (req.searchUnits), and at most (req.searchUnitsMax)
// when every document is split into chunks - a token is at least a byte, so
// the body's length bounds the chunks. A reranker priced per token (vLLM's
// and other cross-encoders) reads the query once per document, so its
// prompt is bounded by the query's bytes times the documents plus theirs
// (req.promptMax). A rerank generates no output.
func (req *request) rerankBody() error {
	o := &req.obj
	q, ok := o.String("query")
	if !ok || q == "" {
		return apierror.BadRequest("query", "query must be a non-empty string")
	}
	raw := o.Get("documents")
	var docs []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &docs) != nil || len(docs) == 0 || !stringsOrObjects(docs) {
		return apierror.BadRequest("documents", "documents must be a non-empty array of strings or objects")
	}
	if !o.IsNull("top_n") {
		if n, ok := o.Int("top_n"); !ok || n < 1 {
			return apierror.BadRequest("top_n", "top_n must be a positive integer")
		}
	}
	n := int64(len(docs))
	req.searchUnits = (n + searchUnitDocs - 1) / searchUnitDocs
	chunks := n + int64(len(o.Body()))/searchChunkTokens
	req.searchUnitsMax = (chunks + searchUnitDocs - 1) / searchUnitDocs
	req.promptMax = satMul(int64(len(q))+pairTokens, n) + int64(len(raw))
	req.noOutput = true
	return nil
}

// stringsOrObjects reports whether every element of a is a string or an
// object.
func stringsOrObjects(a []json.RawMessage) bool {
	for _, e := range a {
		if len(e) == 0 || (e[0] != '"' && e[0] != '{') {
			return false
		}
	}
	return true
}

// moderationBody checks a moderation body: input is a string, or a
// non-empty array of strings or of content parts (objects).
func (req *request) moderationBody() error {
	raw := req.obj.Get("input")
	var parts []json.RawMessage
	switch {
	case len(raw) > 0 && raw[0] == '"':
	case len(raw) > 0 && raw[0] == '[' && json.Unmarshal(raw, &parts) == nil && len(parts) > 0 && stringsOrObjects(parts):
	default:
		return apierror.BadRequest("input", "input must be a string, or a non-empty array of strings or of content parts")
	}
	req.noOutput = true
	return nil
}

// rerankUsage reads what a rerank answer was billed: Cohere's
// meta.billed_units (search_units, and input_tokens where it counts them),
// or the usage member of Jina's and vLLM's answers (total_tokens or
// prompt_tokens).
func rerankUsage(body []byte) ([]byte, usage.Usage, error) {
	var a struct {
		Meta struct {
			BilledUnits struct {
				SearchUnits int64 `json:"search_units"`
				InputTokens int64 `json:"input_tokens"`
			} `json:"billed_units"`
		} `json:"meta"`
		Usage struct {
			PromptTokens int64 `json:"prompt_tokens"`
			TotalTokens  int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, usage.Usage{}, err
	}
	u := usage.Usage{SearchUnits: a.Meta.BilledUnits.SearchUnits, Prompt: a.Meta.BilledUnits.InputTokens}
	if u.Prompt == 0 {
		u.Prompt = max(a.Usage.PromptTokens, a.Usage.TotalTokens)
	}
	return body, u, nil
}

// rerankWire passes a rerank through and reads its billed units.
var rerankWire = wire{op: provider.OpRerank, body: passthroughBody, response: rerankUsage}

// defaultModeration is the model group a moderation request without a
// model goes to, as LiteLLM needs none: the first group (in name order)
// whose first deployment serves moderations and is priced as a moderation
// model, that the caller may use.
func (c *call) defaultModeration() string {
	rt := c.g.Router()
	for _, name := range rt.GroupNames() {
		g, ok := rt.Group(name)
		if !ok || len(g.Targets) == 0 {
			continue
		}
		t := g.Targets[0]
		if !t.Serves(provider.OpModerations) || !c.p.MayUse(g.Name, g.AccessGroups) {
			continue
		}
		if p, ok := t.PriceFor(t.UpstreamModel(g.Name)); ok && p.Mode == "moderation" {
			return g.Name
		}
	}
	return ""
}

// hasModel reports whether a JSON body names a model (a body that is not
// JSON is left to decode to refuse).
func hasModel(body []byte) bool {
	var o jsonbody.Object
	return o.Reset(body) != nil || (o.Has("model") && !o.IsNull("model"))
}
