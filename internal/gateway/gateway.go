// Package gateway serves the inference endpoints: it decodes the little of a
// request it needs, admits it, routes it to a deployment, forwards it and
// streams the answer back, reading usage on the way.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/guardrail"
	"github.com/tollgate/tollgate/internal/hooks"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/reqctx"
	"github.com/tollgate/tollgate/internal/router"
	"github.com/tollgate/tollgate/internal/tokens"
)

// Options are the gateway's settings that are not per deployment.
type Options struct {
	MaxBodyBytes   int64         // request bodies above this get 413
	DefaultTimeout time.Duration // for deployments that set no timeout
	Logger         *slog.Logger
	Meter          Meter          // nil: nothing is booked (the proxy alone)
	Limits         Limits         // nil: no rate limits
	Observer       Observer       // nil: calls are neither logged nor counted
	Routing        config.Routing // retries, fallbacks
	Health         *router.Health // nil: no cooldowns
	// Tracer, when set, makes every call a span with child spans per
	// attempt (trace.go); nil: no tracing, at no cost.
	Tracer trace.Tracer
	// TraceContent: an exporter of Tracer takes the calls' content (the
	// langfuse exporter; otel when OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT
	// is true), so the request span carries it, as the content settings
	// allow (capture.go).
	TraceContent bool
	// LangfuseDefaultTags is litellm_settings.langfuse_default_tags: the
	// payload metadata fields whose "field:value" join the request span's
	// langfuse.trace.tags (spanmeta.go).
	LangfuseDefaultTags []string

	// Version is the gateway's version, sent as x-litellm-version.
	Version string

	// MaxResponseBytes bounds a whole upstream answer (larger: 502) and,
	// when under 8 MiB, one stream event; 0 reads whole answers unbounded.
	MaxResponseBytes int64

	// ResponseIDSecret seals the Responses API ids the gateway hands out
	// (responses.go); nil: a random one, good for this process only.
	ResponseIDSecret []byte

	// Cache is the response cache (cache.go); nil: none.
	Cache *Cache

	// Content says whether messages and answers are kept for the spend
	// rows and the callbacks (capture.go); the zero value keeps none.
	Content ContentLogging

	// Guardrails are the configured guardrails (guard.go); nil: none.
	Guardrails *guardrail.Set
}

// Gateway holds the live routing table and serves inference requests.
type Gateway struct {
	opts    Options
	routing atomic.Pointer[config.Routing]
	auth    *auth.Authenticator
	router  atomic.Pointer[router.Router]
	log     *slog.Logger
	version []string // the x-litellm-version value; nil: not sent
	content contentPolicy
	// ownLangfuseWarned: the keys and teams whose own Langfuse project
	// (metadata.logging) was warned about (spanmeta.go).
	ownLangfuseWarned sync.Map
}

// New returns a Gateway routing with rt.
func New(opts Options, a *auth.Authenticator, rt *router.Router) *Gateway {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 16 << 20
	}
	if opts.DefaultTimeout <= 0 {
		opts.DefaultTimeout = 10 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if len(opts.ResponseIDSecret) == 0 {
		opts.ResponseIDSecret = newResponseSecret()
	}
	g := &Gateway{opts: opts, auth: a, log: opts.Logger, content: newContentPolicy(opts.Content, opts.Observer, opts.Tracer != nil && opts.TraceContent)}
	if opts.Version != "" {
		g.version = []string{opts.Version} // shared by every response, never written into
	}
	g.router.Store(rt)
	g.routing.Store(&opts.Routing)
	return g
}

// SetRouter swaps the routing table; requests in flight keep the one they started with.
func (g *Gateway) SetRouter(rt *router.Router) { g.router.Store(rt) }

// SetRouting swaps the retry and fallback policy (a config reload).
func (g *Gateway) SetRouting(r config.Routing) { g.routing.Store(&r) }

// Router returns the live routing table.
func (g *Gateway) Router() *router.Router { return g.router.Load() }

// Mux is where routes are registered (*http.ServeMux, or the server's
// recorder of patterns).
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Register mounts the inference routes on mux.
func (g *Gateway) Register(mux Mux) {
	for _, prefix := range []string{"/v1", ""} {
		mux.Handle("POST "+prefix+"/chat/completions", g.handler(provider.OpChat))
		mux.Handle("POST "+prefix+"/completions", g.handler(provider.OpCompletions))
		mux.Handle("POST "+prefix+"/embeddings", g.handler(provider.OpEmbeddings))
		mux.Handle("GET "+prefix+"/models", apierror.Handler(g.log, g.models))
		mux.Handle("POST "+prefix+"/moderations", g.handler(provider.OpModerations))
		mux.Handle("POST "+prefix+"/rerank", g.handler(provider.OpRerank))
		g.registerResponses(mux, prefix)
	}
	mux.Handle("POST /v2/rerank", g.handler(provider.OpRerank)) // Cohere's v2 path
	mux.Handle("GET /model_group/info", apierror.Handler(g.log, g.modelGroupInfo))
	mux.Handle("GET /guardrails/list", apierror.Handler(g.log, g.listGuardrails))
	// Anthropic's Messages API, for Claude Code and the Anthropic SDKs.
	mux.Handle("POST /v1/messages", apierror.AnthropicHandler(g.log, func(w http.ResponseWriter, r *http.Request) error {
		return g.serve(w, r, provider.OpMessages)
	}))
	mux.Handle("POST /v1/messages/count_tokens", apierror.AnthropicHandler(g.log, g.countTokens))
	// Azure-style clients put the model in the path.
	mux.Handle("POST /openai/deployments/{model}/chat/completions", g.handler(provider.OpChat))
	mux.Handle("POST /openai/deployments/{model}/completions", g.handler(provider.OpCompletions))
	mux.Handle("POST /openai/deployments/{model}/embeddings", g.handler(provider.OpEmbeddings))
	g.registerMedia(mux)
}

// errResponded: the handler already wrote its response.
var errResponded = apierror.ErrResponded

func (g *Gateway) handler(op provider.Op) http.Handler {
	return apierror.Handler(g.log, func(w http.ResponseWriter, r *http.Request) error {
		return g.serve(w, r, op)
	})
}

func (g *Gateway) authenticate(r *http.Request) (*auth.Principal, error) {
	p, err := g.auth.Authenticate(r)
	if errors.Is(err, auth.ErrUnverifiable) || errors.Is(err, hooks.ErrUnavailable) {
		return nil, apierror.Unavailable(err, "%v", err)
	}
	if hd, ok := errors.AsType[*auth.ErrHookDenied](err); ok && hd.Status != 0 { // AsType: errors.As's target moved to the heap on every request
		return nil, apierror.WithStatus(hd.Status, "%s", hd.Message)
	}
	if err != nil {
		return nil, apierror.Unauthorized("%v", err)
	}
	return p, nil
}

// timeoutFor is the bound on waiting for the upstream: the whole exchange for
// a plain request, the first byte and every gap between chunks for a stream.
func (g *Gateway) timeoutFor(t *provider.Target, stream bool) time.Duration {
	d := t.D.Timeout
	if stream {
		d = t.D.EffectiveStreamTimeout()
	}
	if d <= 0 {
		d = g.opts.DefaultTimeout
	}
	return d
}

// watchdog cancels a context when it is not fed within its interval.
//
// Feeding it is a clock read and a store, not a timer reset: a stream feeds
// it for every line it reads (two per event), and time.Timer.Reset, which
// takes the timer's lock and moves it in the timer heap each time, was a
// visible part of the stream path's CPU. The timer is armed once; when it
// fires it looks at when it was last fed and, if that was within the
// interval, re-arms itself for the rest of it. It expires exactly as a
// timer reset on every feed would: no sooner than the interval after the
// last feed.
type watchdog struct {
	timer   atomic.Pointer[time.Timer]
	every   time.Duration
	fed     atomic.Int64 // when it was last fed, on watchdogClock
	stopped atomic.Bool
	expired atomic.Bool
	ctx     *reqctx.Ctx        // what it cancels: its attempt's context,
	cancel  context.CancelFunc // or this (newWatchdog)
}

// attempt is one upstream attempt: its context, a child of the request's,
// and the watchdog that cancels it, in one object. When the request's
// context is the lean server's (a *reqctx.Ctx) the attempt registers in
// its slots, and the lean upstream client in the attempt's: no channel,
// children map, cancel closure or afterFuncCtx is made for either.
type attempt struct {
	ctx reqctx.Ctx
	wd  watchdog
}

// newAttempt starts an attempt under parent whose watchdog expires after
// every without a feed.
func newAttempt(parent context.Context, every time.Duration) *attempt {
	a := &attempt{}
	a.ctx.Init(parent)
	a.wd.ctx = &a.ctx
	a.wd.start(every)
	return a
}

// end stops the watchdog and cancels the attempt's context.
func (a *attempt) end() {
	a.wd.stop()
	a.ctx.Cancel()
}

// watchdogEpoch is the origin of watchdogClock, a monotonic clock in
// nanoseconds.
var watchdogEpoch = time.Now()

func watchdogClock() int64 { return int64(time.Since(watchdogEpoch)) }

func newWatchdog(every time.Duration, cancel context.CancelFunc) *watchdog {
	w := &watchdog{cancel: cancel}
	w.start(every)
	return w
}

// start arms the watchdog; it expires cancelling ctx, or calling cancel.
func (w *watchdog) start(every time.Duration) {
	w.every = every
	w.fed.Store(watchdogClock())
	w.timer.Store(time.AfterFunc(every, w.fire))
}

// fire runs when the timer goes off: it expires the watchdog if it was not
// fed for a whole interval, else re-arms the timer for what remains of the
// interval since the last feed.
func (w *watchdog) fire() {
	if w.stopped.Load() {
		return
	}
	idle := time.Duration(watchdogClock() - w.fed.Load())
	if t := w.timer.Load(); t != nil && idle < w.every {
		t.Reset(w.every - idle)
		return
	}
	w.expired.Store(true)
	if w.ctx != nil {
		w.ctx.Cancel()
	} else {
		w.cancel()
	}
}

func (w *watchdog) feed() { w.fed.Store(watchdogClock()) }

func (w *watchdog) stop() {
	w.stopped.Store(true)
	if t := w.timer.Load(); t != nil {
		t.Stop()
	}
}

// countTokens answers /v1/messages/count_tokens locally: the system prompt,
// messages and tool definitions counted with the model's tokenizer.
func (g *Gateway) countTokens(w http.ResponseWriter, r *http.Request) error {
	if _, err := g.authenticate(r); err != nil {
		return err
	}
	body, err := readBody(w, r, g.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	var req struct {
		Model    string          `json:"model"`
		System   json.RawMessage `json:"system"`
		Messages json.RawMessage `json:"messages"`
		Tools    json.RawMessage `json:"tools"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return apierror.BadRequest("", "body must be a JSON object: %v", err)
	}
	if req.Model == "" || len(req.Messages) == 0 {
		return apierror.BadRequest("messages", "model and messages are required")
	}
	n := tokens.Messages(req.Model, req.Messages) - 3 // Anthropic counts no reply priming
	if len(req.System) > 0 && string(req.System) != "null" {
		n += tokens.Messages(req.Model, []byte(`[{"role":"system","content":`+string(req.System)+`}]`)) - 3
	}
	if len(req.Tools) > 0 && string(req.Tools) != "null" {
		n += tokens.Text(req.Model, string(req.Tools))
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = fmt.Fprintf(w, `{"input_tokens":%d}`+"\n", max(n, 1))
	return err
}
