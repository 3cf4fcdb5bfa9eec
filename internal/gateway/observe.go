package gateway

import (
	"log/slog"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/jsonlog"
	"github.com/tollgate/tollgate/internal/metrics"
	"github.com/tollgate/tollgate/internal/store"
)

// Observer is told what calls do: every call once when it ends, and the
// retries, fallbacks and budget refusals on the way.
type Observer interface {
	finished(c *call, status int)
	retried(group string)
	fellBack(from, to string)
	budgetRefused(kind store.Kind)
}

// Telemetry is the Observer that writes the request log line and the
// Prometheus metrics.
type Telemetry struct {
	Log     *slog.Logger     // the request log line; none when nil
	Metrics *metrics.Metrics // none when nil
	// Callbacks takes a payload of every call its sinks want (LiteLLM's
	// success_callback, failure_callback, callbacks); none when nil.
	Callbacks callback.Publisher
	served    nameSet // model names a wildcard group served, as metric labels
	tags      nameSet // client-chosen request tags that are metric labels
	ownTags   nameSet // operator-set request tags (key, team, deployment) that are labels
}

func (o *Telemetry) retried(group string) {
	if o.Metrics != nil {
		o.Metrics.Retried(group)
	}
}

func (o *Telemetry) fellBack(from, to string) {
	if o.Metrics != nil {
		o.Metrics.FellBack(from, to)
	}
}

func (o *Telemetry) budgetRefused(kind store.Kind) {
	if o.Metrics != nil {
		o.Metrics.BudgetRefused(kind)
	}
}

// finished writes the call's log line and metrics.
func (o *Telemetry) finished(c *call, status int) {
	p, req, res, t := c.p, c.req, &c.res, c.target
	total := time.Since(c.start)
	overhead := max(total-res.upstream, 0)
	var deployment, prov string
	if t != nil {
		deployment, prov = t.D.ID, t.D.Provider
	}
	if o.Log != nil {
		o.logLine(c, status, total, overhead, deployment, prov)
	}
	if cb := o.Callbacks; cb != nil && cb.Wants(status >= 400 || status == 0) {
		cb.Publish(c.payload(status))
	}
	if m := o.Metrics; m != nil {
		mr := metrics.Request{
			Operation: c.op.String(), Provider: prov,
			Status: status, PromptTokens: res.usage.Prompt, CompletionTokens: res.usage.Completion, HasUsage: res.hasUsage,
			Duration: total, TTFT: res.ttfb, Overhead: overhead, Stream: req.stream, Cost: c.cost,
		}
		o.labels(&mr, c.rt, p, req.model, req.user, c.endUser, t, status)
		mr.Tags = o.tagLabels(c.meta.tags, c.meta.own, status)
		m.ObserveRequest(&mr)
	}
}

// The request line's keys, encoded once (jsonlog.NewKey).
var (
	keyCallID           = jsonlog.NewKey("call_id")
	keyOp               = jsonlog.NewKey("op")
	keyKeyHash          = jsonlog.NewKey("key_hash")
	keyKeyAlias         = jsonlog.NewKey("key_alias")
	keyUser             = jsonlog.NewKey("user")
	keyTeam             = jsonlog.NewKey("team")
	keyEndUser          = jsonlog.NewKey("end_user")
	keyModelGroup       = jsonlog.NewKey("model_group")
	keyDeployment       = jsonlog.NewKey("deployment")
	keyProvider         = jsonlog.NewKey("provider")
	keyStream           = jsonlog.NewKey("stream")
	keyStatus           = jsonlog.NewKey("status")
	keyPromptTokens     = jsonlog.NewKey("prompt_tokens")
	keyCompletionTokens = jsonlog.NewKey("completion_tokens")
	keyUsageReported    = jsonlog.NewKey("usage_reported")
	keyCost             = jsonlog.NewKey("cost")
	keyLatency          = jsonlog.NewKey("latency")
	keyOverhead         = jsonlog.NewKey("overhead")
	keyCacheHit         = jsonlog.NewKey("cache_hit")
	keyGuardrails       = jsonlog.NewKey("guardrails")
)

// logLine writes the call's request line. Under the gateway's own JSON
// handler (jsonlog) the line is appended straight into a pooled buffer,
// the same bytes slog would write (TestRequestLineMatchesSlog); under any
// other handler it goes through slog.
func (o *Telemetry) logLine(c *call, status int, total, overhead time.Duration, deployment, prov string) {
	p, req, res := c.p, c.req, &c.res
	keyPrefix := ""
	if len(p.KeyHash) >= 8 {
		keyPrefix = p.KeyHash[:8]
	}
	var alias, user, team string
	if k := p.Key; k != nil {
		if k.KeyAlias != nil {
			alias = *k.KeyAlias
		}
		user, team = k.UserID, k.TeamID
	}
	ctx := c.r.Context()
	if h := jsonlog.Of(o.Log); h != nil {
		if l := h.Begin(ctx, time.Now(), slog.LevelInfo, "request"); l != nil {
			l.String(keyCallID, c.id)
			l.String(keyOp, c.op.String())
			l.String(keyKeyHash, keyPrefix)
			l.String(keyKeyAlias, alias)
			l.String(keyUser, user)
			l.String(keyTeam, team)
			l.String(keyEndUser, clip(req.user))
			l.String(keyModelGroup, clip(req.model))
			l.String(keyDeployment, deployment)
			l.String(keyProvider, prov)
			l.Bool(keyStream, req.stream)
			l.Int64(keyStatus, int64(status))
			l.Int64(keyPromptTokens, res.usage.Prompt)
			l.Int64(keyCompletionTokens, res.usage.Completion)
			l.Bool(keyUsageReported, res.hasUsage)
			l.Float64(keyCost, c.cost)
			l.Duration(keyLatency, total)
			l.Duration(keyOverhead, overhead)
			if c.cache != nil && c.cache.hit != nil {
				l.Bool(keyCacheHit, true)
			}
			if g := c.guardrailsLogged(); g != "" {
				l.String(keyGuardrails, g)
			}
			if h.Write(l) {
				return
			}
		} else {
			return // the handler does not log Info
		}
	}
	o.Log.LogAttrs(ctx, slog.LevelInfo, "request", append([]slog.Attr{
		slog.String("call_id", c.id),
		slog.String("op", c.op.String()),
		slog.String("key_hash", keyPrefix),
		slog.String("key_alias", alias),
		slog.String("user", user),
		slog.String("team", team),
		slog.String("end_user", clip(req.user)),
		slog.String("model_group", clip(req.model)),
		slog.String("deployment", deployment),
		slog.String("provider", prov),
		slog.Bool("stream", req.stream),
		slog.Int("status", status),
		slog.Int64("prompt_tokens", res.usage.Prompt),
		slog.Int64("completion_tokens", res.usage.Completion),
		slog.Bool("usage_reported", res.hasUsage),
		slog.Float64("cost", c.cost),
		slog.Duration("latency", total),
		slog.Duration("overhead", overhead),
	}, c.logExtras()...)...)
}

// logExtras are the request line's attributes of the features a call
// used: whether the response cache answered it, and what each guardrail
// did (names and actions, never the text found). nil for a call that used
// neither, so that the line costs what it did before them.
func (c *call) logExtras() []slog.Attr {
	var out []slog.Attr
	if c.cache != nil && c.cache.hit != nil {
		out = append(out, slog.Bool("cache_hit", true))
	}
	if g := c.guardrailsLogged(); g != "" {
		out = append(out, slog.String("guardrails", g))
	}
	return out
}

// guardrailsLogged is what each guardrail did, "name:action,…"; "" when
// none ran.
func (c *call) guardrailsLogged() string {
	if c.guard == nil || len(c.guard.outcomes) == 0 {
		return ""
	}
	var b strings.Builder
	for i, o := range c.guard.outcomes {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(o.Guardrail)
		b.WriteByte(':')
		b.WriteString(o.Action)
	}
	return b.String()
}
