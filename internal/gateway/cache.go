package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/cache"
	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/metrics"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/router"
	"github.com/tollgate/tollgate/internal/store"
)

// Cache is the response cache's settings (litellm_settings.cache and
// cache_params; docs/caching.md).
type Cache struct {
	Backend cache.Backend
	TTL     time.Duration // default lifetime of an entry
	// Namespace, when set, is shared by every key and team; without it
	// answers are kept per team (or per key without a team).
	Namespace string
	// CallTypes are LiteLLM's call types cached; nil: every one served.
	CallTypes map[string]bool
	// DefaultOff caches only requests that ask (cache: {"use-cache": true}).
	DefaultOff bool
	// MaxEntryBytes: answers larger are not stored.
	MaxEntryBytes int64
	// MaxTTL bounds the ttl a request's cache.ttl may set
	// (cache_params.max_ttl; 0: no bound).
	MaxTTL time.Duration
	// ChargeHits books a hit at its answer's stored cost; else hits are free.
	ChargeHits bool
	Metrics    *metrics.Metrics // nil: not counted
	// Semantic, when set, finds answers to similar prompts too (semantic.go).
	Semantic *Semantic
}

// Response headers of a cached call. x-litellm-cache-key is LiteLLM's;
// the hit header is Tollgate's.
const (
	hdrCacheKey = "X-Litellm-Cache-Key"
	hdrCacheHit = "X-Tollgate-Cache-Hit"
	// hdrCacheSimilarity is a semantic hit's cosine similarity.
	hdrCacheSimilarity = "X-Tollgate-Cache-Similarity"
)

// cacheCallTypes maps the operations the cache serves to the LiteLLM call
// types that name them in supported_call_types (sync and async alike).
var cacheCallTypes = map[provider.Op][2]string{
	provider.OpChat:        {"completion", "acompletion"},
	provider.OpCompletions: {"text_completion", "atext_completion"},
	provider.OpEmbeddings:  {"embedding", "aembedding"},
	provider.OpMessages:    {"anthropic_messages", "anthropic_messages"},
	provider.OpRerank:      {"rerank", "arerank"},
}

// cacheControls are a request's cache settings: LiteLLM's cache member
// (no-cache, no-store, ttl, s-maxage, namespace, use-cache), the
// Cache-Control header, and the key's and team's metadata.cache.
type cacheControls struct {
	noCache, noStore bool   // do not read the cache; do not store the answer
	useCache         bool   // opt in under mode default_off
	ttl              int64  // seconds the answer is kept; 0: the default
	sMaxAge          int64  // seconds: older entries are not served; -1: any age
	namespace        string // within the caller's scope
}

// cacheState is a call's cache: its key, controls, and the recorder of
// the answer to store.
type cacheState struct {
	key string
	ctl cacheControls
	rec *answerRecorder
	hit *cache.Entry
	// served is the key of the entry a hit served: the call's own, or a
	// semantic neighbour's (never stored under).
	served string
	// label is the bounded model_group label of the cache metrics.
	label string
	// sem is the prompt's embedding and partition, to index the answer
	// under once stored; similarity that of a semantic hit.
	sem        *semanticPrompt
	similarity float64
}

// readCacheControls reads the body's cache member (and the Cache-Control
// header) before the gateway's members are stripped. A cache member that
// is not an object of the documented fields is a 400.
func (c *call) readCacheControls() error {
	cc := c.g.opts.Cache
	if cc == nil {
		// No cache: the controls do nothing, and a key limited in them
		// is still refused the ones it may not set, as LiteLLM does.
		if raw := c.req.obj.Get("cache"); raw != nil {
			var m map[string]any // declared here: Unmarshal's pointer moves it to the heap
			if json.Unmarshal(raw, &m) == nil {
				return c.allowedCacheControls(m)
			}
		}
		return nil
	}
	ctl := cacheControls{sMaxAge: -1}
	for _, md := range c.operatorCacheSettings() {
		if err := ctl.merge(md, "metadata.cache"); err != nil {
			return err
		}
	}
	for _, d := range strings.Split(c.r.Header.Get("Cache-Control"), ",") {
		d = strings.ToLower(strings.TrimSpace(d))
		switch {
		case d == "no-cache":
			ctl.noCache = true
		case d == "no-store":
			ctl.noStore = true
		case strings.HasPrefix(d, "s-maxage="):
			if n, err := strconv.ParseInt(d[len("s-maxage="):], 10, 64); err == nil && n >= 0 {
				ctl.sMaxAge = n
			}
		}
	}
	if raw := c.req.obj.Get("cache"); raw != nil && string(raw) != "null" {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return apierror.BadRequest("cache", "cache must be an object of no-cache, no-store, ttl, s-maxage, namespace and use-cache")
		}
		if err := c.allowedCacheControls(m); err != nil {
			return err
		}
		if err := ctl.merge(m, "cache"); err != nil {
			return err
		}
	}
	c.cache = &cacheState{ctl: ctl}
	return nil
}

// allowedCacheControls refuses a request cache member that sets a control
// its key's allowed_cache_controls does not list, with LiteLLM's 403 (an
// empty list allows any, as LiteLLM's). Controls are checked in sorted
// order, so the one named is always the same.
func (c *call) allowedCacheControls(m map[string]any) error {
	k := c.p.Key
	if k == nil || len(k.AllowedCacheControls) == 0 {
		return nil
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !slices.Contains(k.AllowedCacheControls, n) {
			return apierror.Forbidden("Not allowed to set %s as a cache control. Contact admin to change permissions.", clip(n))
		}
	}
	return nil
}

// operatorCacheSettings are the key's and the team's metadata.cache
// objects, as LiteLLM keeps per-key cache settings.
func (c *call) operatorCacheSettings() []map[string]any {
	var out []map[string]any
	if t := c.p.Team; t != nil {
		if m, ok := t.Metadata["cache"].(map[string]any); ok {
			out = append(out, m)
		}
	}
	if k := c.p.Key; k != nil {
		if m, ok := k.Metadata["cache"].(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// merge applies one cache object's fields; param names it in errors.
func (ctl *cacheControls) merge(m map[string]any, param string) error {
	for k, v := range m {
		switch k {
		case "no-cache", "no-store", "use-cache":
			b, ok := v.(bool)
			if !ok {
				return apierror.BadRequest(param, "%s.%s must be true or false", param, k)
			}
			switch k {
			case "no-cache":
				ctl.noCache = ctl.noCache || b
			case "no-store":
				ctl.noStore = ctl.noStore || b
			default:
				ctl.useCache = b
			}
		case "ttl", "s-maxage":
			f, ok := v.(float64)
			if !ok || f < 0 || f > 1<<31 {
				return apierror.BadRequest(param, "%s.%s must be a number of seconds", param, k)
			}
			if k == "ttl" {
				ctl.ttl = int64(f)
			} else {
				ctl.sMaxAge = int64(f)
			}
		case "namespace":
			s, ok := v.(string)
			if !ok || len(s) > 256 {
				return apierror.BadRequest(param, "%s.namespace must be a string of at most 256 bytes", param)
			}
			ctl.namespace = s
		default:
			return apierror.BadRequest(param, "unknown %s field %q (valid: no-cache, no-store, ttl, s-maxage, namespace, use-cache)", param, clip(k))
		}
	}
	return nil
}

// cacheable reports whether the call may be served from and stored in the
// cache at all.
func (c *call) cacheable() bool {
	cc, st := c.g.opts.Cache, c.cache
	if cc == nil || st == nil || c.rs != nil || c.req == nil || c.req.media != nil {
		return false
	}
	names, ok := cacheCallTypes[c.op]
	if !ok || (cc.CallTypes != nil && !cc.CallTypes[names[0]] && !cc.CallTypes[names[1]]) {
		return false
	}
	if cc.DefaultOff && !st.ctl.useCache {
		return false
	}
	if cg := c.guard; cg != nil && (len(cg.restore) > 0 || cg.changed()) {
		// A guardrail masked the prompt: different prompts now read alike
		// (their placeholders), and the answer the client got has its
		// own text restored into it. Neither read nor kept.
		return false
	}
	return !(st.ctl.noCache && st.ctl.noStore)
}

// guardScope is the part of a cache key that names the guardrails the
// call ran: an answer checked by one set is not served to a call that
// runs another.
func (c *call) guardScope() string {
	if c.guard == nil || len(c.guard.run) == 0 {
		return ""
	}
	names := make([]string, len(c.guard.run))
	for i, g := range c.guard.run {
		names[i] = g.Name
	}
	sort.Strings(names)
	return "|guardrails=" + strings.Join(names, ",")
}

// scope is whose answers the call may read: the operator's shared
// namespace, else its team's, else its key's.
func (c *call) cacheScope() string {
	if ns := c.g.opts.Cache.Namespace; ns != "" {
		return "ns:" + ns
	}
	if k := c.p.Key; k != nil && k.TeamID != "" {
		return "team:" + k.TeamID
	}
	return "key:" + c.p.KeyHash
}

// fromCache answers the call from the cache when it holds the answer, and
// reports whether it did. On a miss it arranges for the answer to be
// recorded, so that storeAnswer can keep it. A backend that fails is a
// miss. A call one of whose budgets is spent already is refused here
// (LiteLLM refuses such a key when it authenticates it, whatever its
// cache holds), before the cache is read or the prompt embedded.
// grp is the group the request resolved to: its name (for a wildcard
// group, the pattern) labels the metrics.
func (c *call) fromCache(grp *router.Group) (bool, error) {
	if !c.cacheable() {
		c.cache = nil
		return false, nil
	}
	cc, st := c.g.opts.Cache, c.cache
	label := c.model
	if grp != nil {
		label = grp.Name
	}
	st.label = label
	if books, _ := c.g.opts.Meter.(*Books); books != nil {
		if err := books.spentOut(c.p, c.req.user, c.endUser, c.model); err != nil {
			return false, err
		}
	}
	st.key = cache.Key(cache.KeyParts{CallType: callType(c.op), Model: c.model, Scope: c.cacheScope(),
		Namespace: st.ctl.namespace + c.guardScope(), Body: c.req.obj.Body()})
	h := c.w.Header()
	h.Set(hdrCacheKey, st.key)
	if !st.ctl.noCache {
		e, err := cc.Backend.Get(c.r.Context(), st.key)
		if err != nil {
			c.g.log.Debug("response cache read failed: a miss", "backend", cc.Backend.Name(), "err", err)
			if cc.Metrics != nil {
				cc.Metrics.CacheError(cc.Backend.Name(), "get")
			}
			e = nil
		}
		fresh := func(e *cache.Entry) bool {
			return e != nil && (st.ctl.sMaxAge < 0 || time.Since(e.Stored) <= time.Duration(st.ctl.sMaxAge)*time.Second)
		}
		if fresh(e) && c.serveHit(e, st.key, 0) {
			return true, nil
		}
		// A neighbour's key is used only to serve it: the call's own
		// answer, if it goes upstream, is stored under its own key.
		if e, key, sim := c.semanticLookup(); fresh(e) && c.serveHit(e, key, sim) {
			return true, nil
		}
	}
	if cc.Metrics != nil {
		cc.Metrics.CacheMiss(label)
	}
	if !st.ctl.noStore {
		st.rec = &answerRecorder{ResponseWriter: c.w, limit: cc.MaxEntryBytes}
		c.w = st.rec
	}
	return false, nil
}

// serveHit writes a cached answer: a whole body at once, a stream event by
// event. The hit books a spend row (cost 0 unless charge_hits) and counts
// against the request limits only: the ticket's tokens stay untouched.
// It reports false when the call may not take it (charge_hits and a
// budget spent): the call then goes upstream and is refused there.
func (c *call) serveHit(e *cache.Entry, key string, similarity float64) bool {
	cc, st := c.g.opts.Cache, c.cache
	cost := 0.0
	books, _ := c.g.opts.Meter.(*Books)
	if cc.ChargeHits {
		cost = e.Cost
		if books != nil && cost > 0 {
			if err := books.MayAfford(c.p, c.model); err != nil {
				return false
			}
		}
	}
	st.hit, st.served, st.similarity = e, key, similarity
	c.cost = cost
	c.group = c.model
	c.res.status = http.StatusOK
	c.res.id, _ = answerID(e.Body)
	h := c.w.Header()
	h.Set(hdrCacheKey, key)
	h.Set("Content-Type", e.ContentType)
	h.Set(hdrCacheHit, "true")
	if st.similarity > 0 {
		h.Set(hdrCacheSimilarity, strconv.FormatFloat(st.similarity, 'f', 4, 64))
	}
	setBoth(h, hdrCost, llmCost, strconv.FormatFloat(cost, 'g', -1, 64))
	if books != nil {
		books.BookUnheld(c.p, store.SpendLog{RequestID: c.id, ResponseID: c.res.id, CallType: callType(c.op), EndUser: c.req.user,
			ModelGroup: c.model, Deployment: e.Deployment, Provider: e.Provider, PromptTokens: e.PromptTokens,
			CompletionTokens: e.CompletionTokens, Cost: cost, Status: http.StatusOK, StartedAt: c.start,
			RequestTags: c.meta.tags, Metadata: c.meta.metadata, CacheHit: true, CacheKey: key, SavedCost: max(e.Cost-cost, 0)})
	}
	if cc.Metrics != nil {
		cc.Metrics.CacheHit(st.label, len(e.Body), max(e.Cost-cost, 0))
	}
	if !strings.HasPrefix(e.ContentType, "text/event-stream") {
		h.Set("Content-Length", strconv.Itoa(len(e.Body)))
		c.w.WriteHeader(http.StatusOK)
		if _, err := c.w.Write(e.Body); err != nil {
			c.res.clientGone = true
		}
		return true
	}
	// A stream is replayed event by event, each flushed, as it came.
	rc := http.NewResponseController(c.w)
	c.w.WriteHeader(http.StatusOK)
	for rest := e.Body; len(rest) > 0; {
		ev := rest
		if i := bytes.Index(rest, []byte("\n\n")); i >= 0 {
			ev, rest = rest[:i+2], rest[i+2:]
		} else {
			rest = nil
		}
		if _, err := c.w.Write(ev); err != nil {
			c.res.clientGone = true
			return true
		}
		if err := rc.Flush(); err != nil {
			c.res.clientGone = true
			return true
		}
	}
	return true
}

// storeAnswer keeps the answer the call recorded, once the call is over:
// only a whole 200 (a stream that reached its end), never an error, a
// stream cut short or an answer over max_entry_bytes. A backend that
// fails is counted; the client already has its answer.
func (c *call) storeAnswer(err error) {
	st := c.cache
	if st == nil || st.rec == nil || st.hit != nil {
		return
	}
	rec, cc := st.rec, c.g.opts.Cache
	if rec.over || rec.status != http.StatusOK || c.res.status != http.StatusOK || c.err != nil ||
		(err != nil && !errors.Is(err, errResponded)) || c.res.clientGone || c.res.brokeOff != nil ||
		c.res.unusable || c.upstreamErr != nil || c.target == nil || len(rec.buf) == 0 || c.guard.blockedAny() {
		return
	}
	if len(rec.Header().Values(hdrOutputCapped)) > 0 {
		// The gateway cut the answer's output to what a budget hold paid
		// for: not the answer to the request as asked.
		return
	}
	if c.group != "" && c.group != c.model {
		// A fallback group answered: a caller of the group asked for may
		// not be allowed the fallback's model. Only the group's own
		// answers are kept.
		return
	}
	// A copy: the upstream's value is a substring of its whole header
	// block (the lean client reads all values into one string), which the
	// entry would otherwise keep alive uncounted.
	ct := strings.Clone(rec.Header().Get("Content-Type"))
	if strings.HasPrefix(ct, "text/event-stream") && !c.streamComplete(rec.buf) {
		return
	}
	// The client has the whole answer before the cache is written.
	_ = http.NewResponseController(rec.ResponseWriter).Flush()
	body := make([]byte, len(rec.buf)) // exact size: the local cache counts len
	copy(body, rec.buf)
	e := &cache.Entry{Stored: time.Now(), ContentType: ct, Body: body,
		Deployment: c.target.D.ID, Provider: c.target.D.Provider, Cost: c.cost,
		PromptTokens: c.res.usage.Prompt, CompletionTokens: c.res.usage.Completion}
	if e.Cost == 0 {
		if p, ok := c.target.PriceFor(c.res.model); ok && c.res.hasUsage {
			e.Cost = p.Cost(c.res.usage)
		}
	}
	ttl := cc.TTL
	if st.ctl.ttl > 0 {
		ttl = time.Duration(st.ctl.ttl) * time.Second
	}
	if cc.MaxTTL > 0 && ttl > cc.MaxTTL {
		ttl = cc.MaxTTL
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.r.Context()), time.Second)
	defer cancel()
	if err := cc.Backend.Set(ctx, st.key, e, ttl); err != nil {
		c.g.log.Debug("response cache write failed", "backend", cc.Backend.Name(), "err", err)
		if cc.Metrics != nil {
			cc.Metrics.CacheError(cc.Backend.Name(), "set")
		}
		return
	}
	if cc.Metrics != nil {
		cc.Metrics.CacheStored(len(e.Body))
	}
	if st.sem != nil {
		cc.Semantic.Index.Add(st.sem.part, st.sem.vec, st.key)
	}
}

// streamComplete reports whether a recorded stream ended as a stream
// should: its upstream sent its end (res.ended: [DONE], a finish reason,
// message_stop, ...), the client got the end of its format (data: [DONE],
// or for an OpenAI stream without it a finish reason and usage; Anthropic's
// message_stop), and no error event is in it.
func (c *call) streamComplete(buf []byte) bool {
	if !c.res.ended {
		return false
	}
	for rest := buf; len(rest) > 0; {
		ev := rest
		if i := bytes.Index(rest, []byte("\n\n")); i >= 0 {
			ev, rest = rest[:i], rest[i+2:]
		} else {
			rest = nil
		}
		if bytes.HasPrefix(ev, []byte("event: error")) || bytes.Contains(ev, []byte("\nevent: error")) ||
			bytes.Contains(ev, []byte(`data: {"error"`)) || bytes.Contains(ev, []byte(`"type":"error"`)) {
			return false
		}
	}
	end := bytes.TrimRight(buf, "\r\n ")
	if c.op == provider.OpMessages || bytes.Contains(buf, []byte("event: message_start")) {
		return bytes.Contains(buf, []byte("message_stop"))
	}
	if bytes.HasSuffix(end, []byte("data: [DONE]")) {
		return true
	}
	return c.res.hasUsage && hasFinishReason(buf)
}

// answerRecorder passes a response through and keeps a copy of its body,
// up to limit bytes (past it, none: over).
type answerRecorder struct {
	http.ResponseWriter
	limit  int64
	status int
	buf    []byte
	over   bool
}

func (a *answerRecorder) WriteHeader(status int) {
	if a.status == 0 {
		a.status = status
	}
	a.ResponseWriter.WriteHeader(status)
}

func (a *answerRecorder) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	if !a.over {
		if int64(len(a.buf)+len(p)) > a.limit {
			a.over, a.buf = true, nil
		} else {
			a.buf = append(a.buf, p...)
		}
	}
	return a.ResponseWriter.Write(p)
}

// FlushError lets http.ResponseController flush through the recorder.
func (a *answerRecorder) FlushError() error {
	return http.NewResponseController(a.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController the writer underneath.
func (a *answerRecorder) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// cachePayload fills the logging payload's cache fields (LiteLLM's
// cache_hit, cache_key, saved_cache_cost) for a call the cache saw.
func (c *call) cachePayload(pl *callback.Payload) {
	st := c.cache
	if st == nil || st.key == "" {
		return
	}
	hit := st.hit != nil
	key := st.key
	if hit {
		key = st.served
	}
	pl.CacheHit, pl.CacheKey = &hit, &key
	if hit {
		pl.SavedCacheCost = max(st.hit.Cost-c.cost, 0)
		pl.ModelGroup = &c.model
	}
}
