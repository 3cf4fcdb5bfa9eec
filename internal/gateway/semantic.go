package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tollgate/tollgate/internal/cache"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/usage"
)

// Semantic is the semantic cache: an embedding deployment embeds a chat
// prompt, and an answer stored for a prior prompt at least Threshold
// similar (cosine), with every other request field equal, is served.
type Semantic struct {
	Model     string  // the model group that embeds (redis_semantic_cache_embedding_model)
	Threshold float64 // similarity_threshold
	Index     *cache.Index
}

// semanticPrompt is a prompt's embedding and its partition: the key of
// the request without its prompt.
type semanticPrompt struct {
	part string
	vec  []float32
}

// semanticLookup embeds the prompt of a chat or Messages request and
// finds the entry of the most similar prior prompt above the threshold,
// with its key and similarity; nil when there is none, the request has no
// prompt, or embedding fails (counted as a cache error, never the
// request's). The call's own key is left as it is: a neighbour's key only
// serves, and the call's answer is stored under its own.
func (c *call) semanticLookup() (*cache.Entry, string, float64) {
	cc, st := c.g.opts.Cache, c.cache
	sem := cc.Semantic
	if sem == nil || (c.op != provider.OpChat && c.op != provider.OpMessages) {
		return nil, "", 0
	}
	prompt := c.req.obj.Get("messages")
	if prompt == nil {
		return nil, "", 0
	}
	if sys := c.req.obj.Get("system"); sys != nil {
		prompt = append(append(append([]byte(nil), sys...), '\n'), prompt...)
	}
	vec, err := c.embed(sem.Model, prompt)
	if err != nil {
		c.g.log.Debug("semantic cache: the prompt was not embedded", "model", sem.Model, "err", err)
		if cc.Metrics != nil {
			cc.Metrics.CacheError("semantic", "embed")
		}
		return nil, "", 0
	}
	part := cache.Key(cache.KeyParts{CallType: callType(c.op), Model: c.model, Scope: c.cacheScope(),
		Namespace: st.ctl.namespace, Body: c.req.obj.Without("messages", "system")})
	st.sem = &semanticPrompt{part: part, vec: vec}
	key, sim, ok := sem.Index.Nearest(part, vec, sem.Threshold)
	if !ok {
		return nil, "", 0
	}
	e, err := cc.Backend.Get(c.r.Context(), key)
	if err != nil || e == nil {
		return nil, "", 0
	}
	return e, key, sim
}

// embed asks a deployment of model for the embedding of text, as an
// OpenAI embeddings request (OpenAI-compatible deployments).
func (c *call) embed(model string, text []byte) ([]float32, error) {
	grp, ok := c.rt.Group(model)
	if !ok {
		return nil, fmt.Errorf("no model group %q", model)
	}
	t, _ := grp.Pick(nil)
	if t == nil {
		return nil, errors.New("no deployment to embed with")
	}
	upstream := t.UpstreamModel(model)
	body, _ := json.Marshal(map[string]any{"model": upstream, "input": string(text)})
	ctx, cancel := context.WithTimeout(c.r.Context(), 5*time.Second)
	defer cancel()
	req, err := t.NewRequest(ctx, provider.OpEmbeddings, upstream, body, "application/json", false)
	if err != nil {
		return nil, err
	}
	resp, err := t.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("the embedding deployment answered %d", resp.StatusCode)
	}
	var out struct {
		Data []struct {
			Embedding []float32 `json:"embedding"`
		} `json:"data"`
		Usage *struct {
			PromptTokens int64 `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(data, &out); err != nil || len(out.Data) == 0 || len(out.Data[0].Embedding) == 0 {
		return nil, errors.New("the embedding answer holds no embedding")
	}
	tokens := int64(len(text)) / bytesPerToken // no usage reported: the gateway's estimate
	if out.Usage != nil && out.Usage.PromptTokens > 0 {
		tokens = out.Usage.PromptTokens
	}
	c.bookEmbedding(t, model, upstream, tokens)
	return out.Data[0].Embedding, nil
}

// bookEmbedding books the semantic cache's embedding of the prompt to the
// caller, as LiteLLM does (it embeds through the router with the caller's
// user_api_key): a spend row of call type aembedding on the embedding
// model group, at the embedding deployment's price, on every budget the
// caller's requests count against.
func (c *call) bookEmbedding(t *provider.Target, group, upstream string, tokens int64) {
	books, _ := c.g.opts.Meter.(*Books)
	if books == nil {
		return
	}
	u := usage.Usage{Prompt: tokens}
	cost := 0.0
	if p, ok := t.PriceFor(upstream); ok {
		cost = p.Cost(u)
	}
	books.BookUnheld(c.p, store.SpendLog{RequestID: c.id + "-semantic-embedding", CallType: "aembedding", EndUser: c.req.user,
		ModelGroup: group, Deployment: t.D.ID, Provider: t.D.Provider, PromptTokens: tokens, Cost: cost,
		Status: http.StatusOK, StartedAt: time.Now(), RequestTags: c.meta.tags, Metadata: c.meta.metadata})
}
