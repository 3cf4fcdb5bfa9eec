package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/provider"
)

// Pass serves the pass-through routes: a provider's native API under
// /openai/*, /anthropic/*, /gemini/*, /cohere/*, /bedrock/* (signed,
// passbedrock.go) and /vertex_ai/* (an OAuth2 token, passvertex.go) with
// the gateway's credentials, and
// general_settings.pass_through_endpoints (passcustom.go). The client
// authenticates with a virtual key, in whichever header its SDK sends it;
// the call is then governed as a chat call is (model access, rate limits,
// budgets) and charged from the usage the provider reports.
type Pass struct {
	g      *Gateway
	opts   PassOptions
	custom atomic.Pointer[[]*customEndpoint]
}

// PassOptions are what the pass-through routes need of the server.
type PassOptions struct {
	// Clients are the upstream connection pools.
	Clients *provider.Clients
	// Deployments are the configured deployments: a provider's first one
	// with an api_key lends its credentials (and api_base) to the
	// provider's pass-through route.
	Deployments func() []config.Deployment
	// Getenv reads the environment (os.Getenv when nil): the credentials
	// of a provider no deployment configures.
	Getenv func(string) string
	// DefaultVertex is default_vertex_config (nil when unset): the
	// credentials of /vertex_ai/* calls no deployment's match.
	DefaultVertex func() *config.DefaultVertexConfig
}

// NewPass returns the pass-through routes of g.
func (g *Gateway) NewPass(opts PassOptions) *Pass {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.Deployments == nil {
		opts.Deployments = func() []config.Deployment { return nil }
	}
	if opts.DefaultVertex == nil {
		opts.DefaultVertex = func() *config.DefaultVertexConfig { return nil }
	}
	p := &Pass{g: g, opts: opts}
	p.custom.Store(new([]*customEndpoint))
	return p
}

// native is a provider whose API a pass-through route forwards.
type native struct {
	name            string // the provider, as model_list names it
	envKey, envBase string // LiteLLM's environment variables for it
	base            string // its public API
	auth            func(h http.Header, key string)
	// v1: sub-paths are below /v1 (a client whose base URL is
	// …/openai asks for /chat/completions, one with …/openai/v1 for
	// /v1/chat/completions: both reach /v1/chat/completions).
	v1 bool
	// meter reads the usage of one JSON document of the provider's:
	// a whole answer or a stream event's data.
	meter func(m *nativeMeter, data []byte)
	// defaults are headers the provider requires, set when the client
	// sent none.
	defaults http.Header
}

func bearer(h http.Header, key string) { h.Set("Authorization", "Bearer "+key) }

var natives = []*native{
	{name: "openai", envKey: "OPENAI_API_KEY", envBase: "OPENAI_API_BASE", base: "https://api.openai.com", auth: bearer, v1: true, meter: (*nativeMeter).openAI},
	{name: "anthropic", envKey: "ANTHROPIC_API_KEY", envBase: "ANTHROPIC_API_BASE", base: "https://api.anthropic.com",
		auth: func(h http.Header, key string) { h.Set("x-api-key", key) }, meter: (*nativeMeter).anthropic,
		defaults: http.Header{"Anthropic-Version": {"2023-06-01"}}},
	{name: "gemini", envKey: "GEMINI_API_KEY", envBase: "GEMINI_API_BASE", base: "https://generativelanguage.googleapis.com",
		auth: func(h http.Header, key string) { h.Set("x-goog-api-key", key) }, meter: (*nativeMeter).gemini},
	{name: "cohere", envKey: "COHERE_API_KEY", envBase: "COHERE_API_BASE", base: "https://api.cohere.com", auth: bearer, meter: (*nativeMeter).cohere},
}

// passMethods are the methods a provider route forwards (HEAD goes with GET).
var passMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// Register mounts the provider routes: any method, any sub-path. The
// Azure-style routes under /openai/deployments/ are more specific patterns
// and keep going to the gateway's own handlers.
func (p *Pass) Register(mux Mux) {
	for _, n := range natives {
		h := apierror.Handler(p.g.log, func(w http.ResponseWriter, r *http.Request) error { return p.serveNative(w, r, n) })
		for _, m := range passMethods {
			mux.Handle(m+" /"+n.name+"/{rest...}", h)
		}
	}
	bedrock := apierror.Handler(p.g.log, p.serveBedrock)
	vertex := apierror.Handler(p.g.log, p.serveVertex)
	for _, m := range passMethods {
		mux.Handle(m+" /bedrock/{rest...}", bedrock)
		mux.Handle(m+" /vertex_ai/{rest...}", vertex)
	}
}

// credentialHeaders carry a client's key; they never go upstream.
var credentialHeaders = []string{"Authorization", "X-Api-Key", "Api-Key", "X-Goog-Api-Key", "X-Litellm-Api-Key"}

// passKey is the virtual key a pass-through client sent: LiteLLM's
// x-litellm-api-key, Authorization: Bearer (OpenAI, Cohere), x-api-key
// (Anthropic), api-key (Azure), x-goog-api-key or ?key= (Gemini).
func passKey(r *http.Request) string {
	if k := auth.ExtractKey(r); k != "" {
		return k
	}
	if v := r.Header.Get("X-Goog-Api-Key"); v != "" {
		return strings.TrimSpace(v)
	}
	return r.URL.Query().Get("key")
}

// authenticate resolves the pass-through client's key as the gateway's
// other routes do, whichever header it came in.
func (p *Pass) authenticate(r *http.Request) (*auth.Principal, error) {
	ar := r.Clone(r.Context())
	for _, h := range credentialHeaders {
		ar.Header.Del(h)
	}
	if k := passKey(r); k != "" {
		ar.Header.Set("Authorization", "Bearer "+k)
	}
	return p.g.authenticate(ar)
}

// withoutKeyParam is a raw query without its key parameters (Gemini
// clients' ?key=), the rest kept byte for byte. A name is compared
// decoded, as passKey reads it: k%65y= is a key too.
func withoutKeyParam(raw string) string {
	if raw == "" {
		return raw
	}
	parts := strings.Split(raw, "&")
	kept := parts[:0]
	for _, s := range parts {
		name, _, _ := strings.Cut(s, "=")
		if decoded, err := url.QueryUnescape(name); err != nil || decoded != "key" {
			kept = append(kept, s)
		}
	}
	return strings.Join(kept, "&")
}

// upstreamHeader is what of the client's headers goes upstream: all but
// its credentials (Proxy-Authorization and cookies too), hop-by-hop
// headers and Accept-Encoding (the answer is read for its usage, so it
// must come back uncompressed).
func upstreamHeader(in http.Header) http.Header {
	out := make(http.Header, len(in))
	for k, v := range in {
		if hopHeaders[k] || k == "Host" || k == "Accept-Encoding" || k == "Cookie" || k == "Proxy-Authorization" || strings.HasPrefix(k, "X-Tollgate-") {
			continue
		}
		out[k] = v
	}
	for _, h := range credentialHeaders {
		delete(out, h)
	}
	return out
}

// target is the provider's upstream with the gateway's credentials: the
// first configured deployment of the provider that has an api_key (its
// api_base, else the provider's public API), else the environment
// variables LiteLLM reads (OPENAI_API_KEY, OPENAI_API_BASE, ...).
func (p *Pass) target(n *native) (*provider.Target, error) {
	key, base := "", ""
	var timeout time.Duration
	for _, d := range p.opts.Deployments() {
		if d.Provider == n.name && d.APIKey != "" {
			key, base, timeout = d.APIKey, d.APIBase, d.Timeout
			break
		}
	}
	if key == "" {
		key, base = p.opts.Getenv(n.envKey), p.opts.Getenv(n.envBase)
	}
	if key == "" {
		e := apierror.NotFound("", "/%s/* has no credentials: configure a model_list deployment of provider %s with an api_key, or set %s", n.name, n.name, n.envKey)
		e.Status, e.Type, e.Code = http.StatusNotImplemented, "api_error", "pass_through_not_configured"
		return nil, e
	}
	if base == "" {
		base = n.base
	}
	// The client names the version in its path: a base that ends in one
	// (https://api.openai.com/v1, as deployments write it) loses it.
	base = strings.TrimRight(base, "/")
	for _, v := range []string{"/v1", "/v1beta"} {
		base = strings.TrimSuffix(base, v)
	}
	h := http.Header{}
	n.auth(h, key)
	d := &config.Deployment{ID: "pass-through/" + n.name, ModelName: n.name + "/*", Model: "*", Provider: n.name, APIBase: base, Timeout: timeout}
	return provider.PassTarget(d, base, h, p.opts.Clients), nil
}

// serveNative forwards a request under /<provider>/ to the provider.
func (p *Pass) serveNative(w http.ResponseWriter, r *http.Request, n *native) error {
	pr, err := p.authenticate(r)
	if err != nil {
		return err
	}
	t, err := p.target(n)
	if err != nil {
		return err
	}
	h := upstreamHeader(r.Header)
	for k, v := range n.defaults {
		if h.Get(k) == "" {
			h[k] = v
		}
	}
	m := &nativeMeter{read: n.meter}
	return p.run(w, r, pr, t, passCall{path: subPath(r, n.name, n.v1), query: withoutKeyParam(r.URL.RawQuery), header: h, meter: m, governed: true})
}

// passCall is one pass-through request as it goes upstream.
type passCall struct {
	path, query string
	header      http.Header
	meter       *nativeMeter // nil: the answer's usage is not read
	governed    bool         // a virtual key's limits and budgets apply
	fixed       float64      // cost_per_request
	// sign, when set, signs the upstream request (Bedrock's SigV4).
	sign func(req *http.Request, body []byte) error
}

// run is the pass-through request path: read the body, find the model it
// names, check the key may use it, take the call's place under the rate
// limits and its hold on the budgets, forward, relay, settle.
func (p *Pass) run(w http.ResponseWriter, r *http.Request, pr *auth.Principal, t *provider.Target, pc passCall) error {
	g := p.g
	c := &call{g: g, w: w, r: r, op: provider.OpPassThrough, start: time.Now(), p: pr, rt: g.Router()}
	body, err := readBody(w, r, g.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	c.req, err = passRequest(body, pc.path)
	if err != nil {
		return err
	}
	c.req.fixed = pc.fixed
	c.model = c.req.model
	if c.req.user != "" {
		c.endUser = g.auth.EndUser(r.Context(), pr, c.req.user)
	}
	if !pc.governed {
		return p.forward(c, t, pc, body)
	}
	// From here on every call is logged and counted once, refused or not.
	c.id = newCallID()
	finished := false
	defer func() {
		if !finished {
			c.finish(errPanicked)
		}
	}()
	err = mayUse(c)
	if err == nil {
		err = p.admit(c, t, body)
	}
	if err == nil {
		err = p.forward(c, t, pc, body)
	}
	c.finish(err)
	finished = true
	return err
}

// maxModelName bounds the model name a pass-through request may give.
const maxModelName = 256

// mayUse checks that the caller may use the model the request names (any
// call that names none may go): the key's, team's, user's and
// organization's models, with the access groups of a model group of that
// name.
func mayUse(c *call) error {
	if c.model == "" {
		return nil
	}
	if len(c.model) > maxModelName {
		// It would be a spend row's model group and a price lookup.
		return apierror.BadRequest("model", "model name is %d bytes long; at most %d are accepted", len(c.model), maxModelName)
	}
	var groups []string
	if grp, ok := c.rt.Group(c.model); ok {
		groups = grp.AccessGroups
	}
	if !c.p.MayUse(c.model, groups) {
		return apierror.Forbidden("this key may not use model %q", clip(c.model))
	}
	return nil
}

// admit takes the call's place under the rate limits and holds what it may
// cost on every budget that applies, refusing it before the upstream when a
// limit or a budget is spent.
func (p *Pass) admit(c *call, t *provider.Target, body []byte) error {
	if l := c.g.opts.Limits; l != nil {
		tk, err := l.admit(c, t)
		if err != nil {
			return err
		}
		c.ticket = tk
		limitHeaders(c.w.Header(), tk)
	}
	m := c.g.opts.Meter
	if m == nil {
		return nil
	}
	hd, err := m.reserve(c, t, c.op, c.model, body)
	if err != nil {
		var exceeded *ledger.ExceededError
		if o := c.g.opts.Observer; o != nil && errors.As(err, &exceeded) {
			o.budgetRefused(exceeded.Kind)
		}
		return err
	}
	c.hold = hd
	c.target = t
	return nil
}

// passRequest is what the gateway reads of a pass-through body: the model
// (the body's, or the path's when the path names one: Bedrock's
// /model/{modelId}/... and Gemini's models/{model}:action), whether it
// streams, its output bound and its end user. A body that is not JSON is
// forwarded all the same.
//
// Where the path names the model the upstream serves that model whatever
// the body says, so a body naming another is refused: read as the model,
// it would pass model access and be priced for a model never called.
func passRequest(body []byte, path string) (*request, error) {
	req := &request{outputs: 1}
	if rest, ok := strings.CutPrefix(path, "/model/"); ok { // Bedrock: /model/{modelId}/converse
		id, action, _ := strings.Cut(rest, "/")
		req.model, _ = url.PathUnescape(id)
		req.stream = strings.HasSuffix(action, "-stream") // converse-stream, invoke-with-response-stream
	}
	if i := strings.Index(path, "/models/"); i >= 0 {
		rest := path[i+len("/models/"):]
		if model, action, ok := strings.Cut(rest, ":"); ok {
			req.model = model
			req.stream = strings.HasPrefix(action, "stream") // streamGenerateContent, streamRawPredict
		}
	}
	if req.obj.Reset(body) != nil {
		return req, nil
	}
	o := &req.obj
	if m, ok := o.String("model"); ok && m != "" {
		switch {
		case req.model == "":
			req.model = m
		case !samePassModel(req.model, m):
			return nil, apierror.BadRequest("model", "the body names model %q but the path names %q; the path's model is the one called", clip(m), clip(req.model))
		}
	}
	if s, ok := o.Bool("stream"); ok {
		req.stream = s
	}
	for _, k := range []string{"max_completion_tokens", "max_tokens", "max_output_tokens"} {
		if n, ok := o.Int(k); ok && n > 0 {
			req.maxTokens = n
			break
		}
	}
	if gc := o.Get("generationConfig"); len(gc) > 0 && gc[0] == '{' {
		var cfg request
		if cfg.obj.Reset(gc) == nil {
			if n, ok := cfg.obj.Int("maxOutputTokens"); ok && n > 0 {
				req.maxTokens = n
			}
		}
	}
	if u, ok := o.String("user"); ok {
		req.user = u
	} else {
		req.anthropicUser()
	}
	if strings.HasSuffix(path, "/rerank") {
		// Billed per search unit: the hold covers what the documents can
		// make (a body Cohere would refuse is forwarded all the same).
		_ = req.rerankBody()
	}
	return req, nil
}

// samePassModel reports whether a body's model names the path's: Gemini's
// embedContent body repeats it as "models/{model}" (Vertex's with the
// publisher's prefix).
func samePassModel(path, body string) bool {
	if i := strings.LastIndex(body, "models/"); i >= 0 {
		body = body[i+len("models/"):]
	}
	return body == path
}

// forward sends the call upstream and relays the answer: a JSON answer is
// read whole (within max_response_size_mb), its usage settled, then
// written; everything else, server-sent events above all, is copied as it
// arrives and flushed, its usage read on the way.
func (p *Pass) forward(c *call, t *provider.Target, pc passCall, body []byte) error {
	g, res, w, r := c.g, &c.res, c.w, c.r
	c.target = t
	at := newAttempt(r.Context(), g.timeoutFor(t, c.req.stream))
	defer at.end()
	ctx, wd := &at.ctx, &at.wd
	var rb io.Reader
	if len(body) > 0 {
		rb = bytes.NewReader(body)
	}
	ureq, err := t.PassRequest(ctx, r.Method, pc.path, pc.query, pc.header, rb)
	if err == nil && pc.sign != nil {
		err = pc.sign(ureq, body)
	}
	if err != nil {
		return apierror.Internal(err)
	}
	sent := time.Now()
	c.forwarding()
	resp, err := t.Do(ureq)
	res.ttfb = time.Since(c.start)
	if err != nil {
		res.upstream = time.Since(sent)
		if e := c.upstreamError(t, wd, err); !errors.Is(e, errClientGone) {
			return e.(*failure).err
		}
		return errClientGone
	}
	defer resp.Body.Close()
	res.status = resp.StatusCode
	// An error answer is passed on as the provider wrote it, and booked as
	// a row with its status and no cost.
	res.unusable = resp.StatusCode >= 300
	copyHeader(w.Header(), resp.Header)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && resp.StatusCode < 300 {
		return p.relayWhole(c, t, resp, pc.meter, sent)
	}
	if hd := c.hold; hd != nil {
		hd.streamHeaders(w.Header())
	}
	err = p.relayStream(c, resp, wd, pc.meter)
	res.upstream = time.Since(sent)
	pc.meter.into(res)
	if err != nil {
		if res.clientGone || r.Context().Err() != nil {
			res.clientGone = true
			return errClientGone
		}
		g.log.Warn("pass-through answer ended early", "path", r.URL.Path, "err", err, "timeout", wd.expired.Load())
	}
	return errResponded
}

// relayWhole reads a JSON answer whole, books it, and writes it.
func (p *Pass) relayWhole(c *call, t *provider.Target, resp *http.Response, m *nativeMeter, sent time.Time) error {
	res := &c.res
	data, err := readLimited(resp.Body, resp.ContentLength, c.g.opts.MaxResponseBytes)
	res.upstream = time.Since(sent)
	if errors.Is(err, errTooLarge) {
		res.status, res.unusable = http.StatusBadGateway, true
		return tooLargeFailure(t.D.ID, c.g.opts.MaxResponseBytes).err
	}
	if err != nil {
		return apierror.BadGateway(err, "%s broke off its answer", t.D.ID)
	}
	if m != nil {
		m.read(m, data)
	}
	m.into(res)
	if resp.StatusCode >= 300 {
		c.settle() // an error answer: booked as a row with its status
	}
	if err := c.writeWhole(resp.StatusCode, data); err != nil {
		return err
	}
	return errResponded
}

// relayStream copies an answer to the client as it arrives, flushing
// whenever the upstream has nothing more buffered (flushWhenIdle), and
// hands m the JSON documents in it: server-sent events' data, lines of
// newline-delimited JSON, or the payloads of AWS's binary event stream.
func (p *Pass) relayStream(c *call, resp *http.Response, wd *watchdog, m *nativeMeter) error {
	w, res := c.w, &c.res
	rc := http.NewResponseController(w)
	w.WriteHeader(resp.StatusCode)
	if err := rc.Flush(); err != nil {
		res.clientGone = true
		return err
	}
	var lines interface{ feed([]byte) }
	switch limit := eventLimit(c.g.opts.MaxResponseBytes); {
	case m == nil:
	case strings.HasPrefix(resp.Header.Get("Content-Type"), "application/vnd.amazon.eventstream"):
		lines = &eventFrames{limit: limit, m: m}
	default:
		lines = &sseLines{limit: limit, m: m}
	}
	br := bufio.NewReaderSize(resp.Body, 32<<10)
	buf := make([]byte, 32<<10)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			wd.feed()
			if lines != nil {
				lines.feed(buf[:n])
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				res.clientGone = true
				return werr
			}
			if ferr := flushWhenIdle(br, rc); ferr != nil {
				res.clientGone = true
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// sseLines splits a stream into lines and hands the meter each JSON
// document: a server-sent event's data: line, or a line of
// newline-delimited JSON (Cohere's v1 streams); a line over limit is
// skipped, not buffered.
type sseLines struct {
	limit int
	line  []byte
	over  bool
	m     *nativeMeter
}

func (s *sseLines) feed(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		part := b
		if i >= 0 {
			part = b[:i]
		}
		if !s.over {
			if len(s.line)+len(part) > s.limit {
				s.over, s.line = true, s.line[:0]
			} else {
				s.line = append(s.line, part...)
			}
		}
		if i < 0 {
			return
		}
		if !s.over {
			data := bytes.TrimSpace(s.line)
			if d, ok := bytes.CutPrefix(data, []byte("data:")); ok {
				data = bytes.TrimSpace(d)
			}
			if len(data) > 0 && (data[0] == '{' || data[0] == '[') {
				s.m.read(s.m, data)
			}
		}
		s.line, s.over = s.line[:0], false
		b = b[i+1:]
	}
}
