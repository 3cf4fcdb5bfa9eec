package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tollgate/tollgate/internal/cache"
	"github.com/tollgate/tollgate/internal/provider"
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
// finds the entry of the most similar prior prompt above the threshold;
// nil when there is none, the request has no prompt, or embedding fails
// (counted as a cache error, never the request's).
func (c *call) semanticLookup() *cache.Entry {
	cc, st := c.g.opts.Cache, c.cache
	sem := cc.Semantic
	if sem == nil || (c.op != provider.OpChat && c.op != provider.OpMessages) {
		return nil
	}
	prompt := c.req.obj.Get("messages")
	if prompt == nil {
		return nil
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
		return nil
	}
	part := cache.Key(cache.KeyParts{CallType: callType(c.op), Model: c.model, Scope: c.cacheScope(),
		Namespace: st.ctl.namespace, Body: c.req.obj.Without("messages", "system")})
	st.sem = &semanticPrompt{part: part, vec: vec}
	key, sim, ok := sem.Index.Nearest(part, vec, sem.Threshold)
	if !ok {
		return nil
	}
	e, err := cc.Backend.Get(c.r.Context(), key)
	if err != nil || e == nil {
		return nil
	}
	st.similarity = sim
	c.w.Header().Set(hdrCacheKey, key)
	st.key = key
	return e
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
	}
	if err := json.Unmarshal(data, &out); err != nil || len(out.Data) == 0 || len(out.Data[0].Embedding) == 0 {
		return nil, errors.New("the embedding answer holds no embedding")
	}
	return out.Data[0].Embedding, nil
}
