package gateway

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/ratelimit"
	"github.com/tollgate/tollgate/internal/router"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/translate"
)

// call is one inference request on its way through the gateway: who asked
// and for what, its place under the rate limits, the deployment it is on,
// the budget hold of the attempt in flight, and what came back. serve runs
// it from top to bottom; finish is where every call ends.
type call struct {
	g     *Gateway
	w     http.ResponseWriter
	r     *http.Request
	op    provider.Op
	id    string
	start time.Time

	p     *auth.Principal
	req   *request
	rt    *router.Router // the routing table the call started with
	model string         // the model group the request resolved to
	// group is the model group of the last attempt, the one that answered
	// (after a fallback, the fallback's), as the spend row names it.
	group string
	// endUser is the request's end user as an operator configured her (or
	// as her first request made her); nil when the request names none or
	// she is not known yet. Found once: limits, budgets, routing and labels
	// all read it.
	endUser *store.EndUser
	ticket  *ratelimit.Ticket // its place under the rate limits; nil: none apply
	// pending: the ticket is not decided yet; the first budget hold
	// decides it in the same Redis script (fused, Books.place).
	pending bool
	target  *provider.Target // the deployment of the last attempt
	hold    hold             // the budget hold of the attempt in flight
	res     result           // what the last attempt produced
	cost    float64          // what the call was booked
	// hv backs the one-value slices of the headers the call sets on its
	// response (headers.go): one array in the call instead of an
	// allocation per header.
	hv [hvCount]string

	retries, fellBack int
	rs                *responsesCall // a Responses request's stored-response state; nil: none
	tr                *callTrace     // the call's spans; nil: not traced (trace.go)
	meta              callMeta       // tags and the request's metadata, for the logs
	cap               *capture       // what the call asked and answered; nil: not kept (capture.go)
	cache             *cacheState    // the call's response cache; nil: not cached (cache.go)
	guard             *callGuard     // the call's guardrails; nil: none run (guard.go)
	// err is what ended the call, when not an answer (finish sets it);
	// upstreamErr the body of an upstream failure passed on to the client.
	err         error
	upstreamErr []byte
	// released is the hold of the last attempt that reached an upstream
	// and was released with no row; rowed: an attempt queued a spend row.
	// A call that ends in failure with released set and rowed not writes
	// its failure row from released (failRow).
	released *charge
	rowed    bool
	// landing is the charge whose settle was sent before its answer was
	// written and is landed after it (writeWhole, land).
	landing *charge
	// done marks the steps of finish that ran, so that a finish run
	// again after a panic (serve's deferred one) repeats none of them.
	done struct{ content, observed bool }
}

// serve is the request path: authenticate, decode, route, admit, attempt
// (with retries and fallbacks), finish.
func (g *Gateway) serve(w http.ResponseWriter, r *http.Request, op provider.Op) error {
	c := &call{g: g, w: w, r: r, op: op, start: time.Now()}
	if err := c.authenticate(); err != nil {
		return err
	}
	// Every request past authentication is traced, refused at decode or not.
	c.startTrace()
	if err := c.decode(); err != nil {
		if c.tr != nil {
			c.err = err
			c.endTrace(apierror.From(err).Status)
		}
		return err
	}
	// From here on every request is logged and counted once, refused or not.
	c.id = newCallID()
	c.startCapture()
	finished := false
	defer func() {
		if !finished {
			// A panic on the way (net/http recovers it): the hold and
			// the ticket still end, and the call is still observed.
			c.finish(errPanicked)
		}
	}()
	grp, err := c.route()
	if err == nil {
		err = c.guardSelect() // the call's guardrails: an unknown name is a 400
	}
	if err == nil {
		err = c.tracedAdmit(grp)
	}
	if err == nil && (c.guard != nil || c.cache != nil) {
		// Guardrails and the response cache act before any budget hold,
		// so a ticket left pending for the first hold (fused on Redis) is
		// decided here on its own: a call over its rate limits runs no
		// guardrail and is served nothing from the cache.
		err = c.admitPending()
	}
	if err == nil {
		// pre_call guardrails, after admission so that a call the rate
		// limits refuse costs no external guardrail call: a block holds
		// and sends nothing, and its ticket is given back with no tokens.
		err = c.guardInput()
	}
	if err == nil {
		var hit bool
		if hit, err = c.fromCache(grp); err == nil && !hit {
			err = c.attempts(grp)
		}
	}
	c.finish(err)
	finished = true
	c.storeAnswer(err)
	if err == nil {
		return errResponded // the answer is written
	}
	return err
}

// errPanicked ends a call whose path panicked.
var errPanicked = apierror.Internal(errors.New("the request path panicked"))

func (c *call) authenticate() error {
	p, err := c.g.authenticate(c.r)
	c.p = p
	return err
}

func (c *call) decode() error {
	if isMedia(c.op) {
		return c.decodeMedia()
	}
	body, err := readBody(c.w, c.r, c.g.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	model := c.r.PathValue("model")
	if c.op == provider.OpModerations && model == "" && !hasModel(body) {
		if model = c.defaultModeration(); model == "" {
			return apierror.BadRequest("model", "the request names no model, and no moderation model (omni-moderation-latest, text-moderation-*) is configured that this key may use")
		}
	}
	if c.req, err = decode(body, model); err != nil {
		return err
	}
	switch c.op {
	case provider.OpMessages:
		c.req.anthropicUser()
	case provider.OpRerank:
		err = c.req.rerankBody()
	case provider.OpModerations:
		err = c.req.moderationBody()
	}
	if err != nil {
		return err
	}
	if c.op == provider.OpResponses {
		if err := c.decodeResponses(); err != nil {
			return err
		}
	}
	if c.req.user != "" {
		c.endUser = c.g.auth.EndUser(c.r.Context(), c.p, c.req.user)
	}
	if err := c.readMeta(); err != nil {
		return err
	}
	if err := c.readCacheControls(); err != nil {
		return err
	}
	// LiteLLM's metadata and litellm_metadata (tags, generation_name, ...)
	// are the gateway's, not the upstream's: LiteLLM does not forward them,
	// and OpenAI's own chat metadata takes string values only. The
	// Responses and Messages APIs keep theirs: there metadata is the API's
	// own member; litellm_metadata is never an API's, so it never goes.
	// LiteLLM's per-request opt-outs of message logging ("no-log",
	// "turn_off_message_logging"; readMeta noted them) are the gateway's on
	// every route: OpenAI refuses unknown members.
	if err := c.readGuardrails(); err != nil {
		return err
	}
	return c.stripMeta()
}

// stripMeta removes the gateway's members from the body the upstream gets
// (gatewayMembers): metadata unless it is the API's own (Responses,
// Messages), the others always. Only a body that has one is rewritten. A
// form (an upload) loses them as text fields.
func (c *call) stripMeta() error {
	members := gatewayMembers
	if c.op == provider.OpResponses || c.op == provider.OpMessages {
		members = members[1:]
	}
	if md := c.req.media; md != nil && md.form != nil {
		md.form.parts = slices.DeleteFunc(md.form.parts, func(p formPart) bool {
			return !p.file && slices.Contains(members, p.name)
		})
		return nil
	}
	if b := c.req.obj.Without(members...); len(b) != len(c.req.obj.Body()) {
		if err := c.req.obj.Reset(b); err != nil {
			return apierror.Internal(err)
		}
	}
	return nil
}

// gatewayMembers are request members the gateway reads and never forwards
// (the first only where metadata is not the API's own member).
var gatewayMembers = []string{"metadata", "litellm_metadata", "no-log", "turn_off_message_logging", "litellm_session_id", "tags", "cache", "guardrails"}

// region is the end user's allowed_model_region; "" allows any.
func (c *call) region() string {
	if c.endUser == nil {
		return ""
	}
	return c.endUser.AllowedModelRegion
}

// route finds the model group the request names (through the key's and the
// team's aliases) and checks that the caller may use it.
func (c *call) route() (*router.Group, error) {
	c.model = c.p.ResolveModel(c.req.model)
	c.rt = c.g.Router()
	grp, ok := c.rt.Group(c.model)
	if !ok {
		// Only a caller who may use the model learns why it is not served.
		if why, groups := c.rt.Unservable(c.model); why != "" && c.p.MayUse(c.model, groups) {
			e := apierror.NotFound("model", "The model `%s` has no deployment Tollgate can serve: %s.", clip(c.req.model), why)
			e.Code = "model_not_served"
			return nil, e
		}
		e := apierror.NotFound("model", "The model `%s` does not exist or you do not have access to it.", clip(c.req.model))
		e.Code = "model_not_found"
		return nil, e
	}
	if !c.p.MayUse(c.model, grp.AccessGroups) && (c.model == c.req.model || !c.p.MayUse(c.req.model, grp.AccessGroups)) {
		return nil, apierror.Forbidden("this key may not use model %q", clip(c.req.model))
	}
	c.callHeaders(c.w.Header())
	return grp, nil
}

// barred lists g's deployments the call may not use: with the end user's
// allowed_model_region, those of another region_name (or none); with a
// previous response, every deployment but the one that holds it.
func (c *call) barred(g *router.Group) []*provider.Target {
	region := c.region()
	if region == "" && c.rs == nil {
		return nil
	}
	var out []*provider.Target
	for _, t := range g.Targets {
		if (region != "" && t.D.Region != region) || c.pinned(t) {
			out = append(out, t)
		}
	}
	return out
}

// admit takes the call's place under the rate limits, once per request,
// against the model asked for.
func (c *call) admit(grp *router.Group) error {
	l := c.g.opts.Limits
	if l == nil {
		return nil
	}
	first, _ := grp.Pick(nil)
	if first == nil {
		first = grp.Targets[0]
	}
	if rl := c.fusable(); rl != nil {
		// Decided with the first attempt's budget hold, in one Redis
		// script (Books.place); until then nothing is taken.
		c.ticket = rl.ticket(c, first)
		c.pending = c.ticket != nil
		return nil
	}
	tk, err := l.admit(c, first)
	if err != nil {
		return err
	}
	c.ticket = tk
	limitHeaders(c.w.Header(), tk)
	return nil
}

// fusable returns the call's rate limits when its admission can be decided
// with its first budget hold, in one Redis script: both are on Redis, and
// Redis is not known to be down.
func (c *call) fusable() *RateLimits {
	rl, ok := c.g.opts.Limits.(*RateLimits)
	if !ok || rl.Limiter == nil || !rl.Limiter.Shared() || rl.Limiter.Degraded() {
		return nil
	}
	if b, ok := c.g.opts.Meter.(*Books); !ok || b.Holder == nil {
		return nil
	} else if _, ok := b.Holder.(ledger.GatedHolder); !ok {
		return nil
	}
	return rl
}

// admitPending decides a pending ticket on its own: the call is refused or
// ends before a budget hold could decide it (so that a request over a rate
// limit is refused with the 429 it always had), or the hold could not.
func (c *call) admitPending() error {
	if !c.pending {
		return nil
	}
	c.pending = false
	if err := c.g.opts.Limits.(*RateLimits).decide(c, c.ticket); err != nil {
		c.ticket = nil
		return err
	}
	limitHeaders(c.w.Header(), c.ticket)
	return nil
}

// attempts runs the routing policy: up to num_retries more attempts on the
// group's other deployments (with backoff) for 429s, 5xx, timeouts and
// connection errors, then the fallback groups in order; a context-window
// refusal switches to the context_window_fallbacks. Nothing has reached the
// client while an attempt may still be retried: a stream is retried only
// before its first byte. The last failure is what the client sees.
func (c *call) attempts(grp *router.Group) error {
	pol := c.g.routing.Load()
	chain := []*router.Group{grp}
	for _, name := range fallbacksFor(pol.Fallbacks, grp.Name, pol.DefaultFallbacks) {
		if fg, ok := c.rt.Group(name); ok && fg != grp && c.p.MayUse(name, fg.AccessGroups) {
			chain = append(chain, fg)
		}
	}
	if c.rs != nil {
		if err := c.pinTo(grp); err != nil {
			return err
		}
		chain = chain[:1] // a stored response lives on one deployment: no fallback holds it
	}
	if region := c.region(); region != "" && !slices.ContainsFunc(chain, func(g *router.Group) bool { return len(c.barred(g)) < len(g.Targets) }) {
		e := apierror.BadRequest("model", "no deployment of model %q (or its fallbacks) is in region %q, the allowed_model_region of end user %q", clip(c.req.model), region, clip(c.req.user))
		e.Code = "no_deployment_in_region"
		return e
	}
	var (
		last              *failure
		wait              time.Duration
		tried, unservable []*provider.Target
	)
	for gi := 0; gi < len(chain); gi++ {
		cur := chain[gi]
		// Deployments the call may not use (out of the end user's region,
		// or not holding its previous response) are never picked.
		out := c.barred(cur)
		tried, unservable = append(tried[:0], out...), append(unservable[:0], out...)
		model := c.model
		if gi > 0 {
			c.fellBack++
			model = cur.Name
			c.group = model
			if o := c.g.opts.Observer; o != nil {
				o.fellBack(grp.Name, cur.Name)
			}
		}
		for attempt := 0; ; attempt++ {
			t, cool := cur.Pick(tried)
			if t == nil && len(tried) > 0 {
				// Every deployment was tried: retry one that is not cooling
				// down (and can serve the request at all).
				t, cool = cur.Pick(unservable)
			}
			if t == nil {
				if cool > 0 && (wait == 0 || cool < wait) {
					wait = cool
				}
				break
			}
			wr, ok := c.wire(t)
			if !ok {
				c.target = t
				if len(chain) == 1 && len(cur.Targets) == 1 {
					if err := c.admitPending(); err != nil {
						return err
					}
					return apierror.BadRequest("model", "model %q (provider %s) does not serve %s requests", clip(c.req.model), t.D.Provider, c.op)
				}
				tried, unservable = append(tried, t), append(unservable, t)
				continue
			}
			c.startAttempt(t, cur.Name, model)
			done, err := c.attempt(cur, t, &wr, model)
			c.endAttempt(done, err)
			if done {
				return err
			}
			f := err.(*failure)
			last = f
			if f.contextWindow {
				if cw := fallbacksFor(pol.ContextWindowFallbacks, grp.Name, nil); len(cw) > 0 && gi == 0 {
					chain = chain[:1]
					for _, name := range cw {
						if fg, ok := c.rt.Group(name); ok && fg != cur && c.p.MayUse(name, fg.AccessGroups) {
							chain = append(chain, fg)
						}
					}
				}
				break
			}
			if wr.errBody != nil && f.body != nil {
				f.body = wr.errBody(f.status, f.header, f.body)
			}
			if !f.retryable {
				return c.writeFailure(f)
			}
			if attempt >= pol.NumRetries {
				break
			}
			tried = append(tried, t)
			c.retries++
			if o := c.g.opts.Observer; o != nil {
				o.retried(cur.Name)
			}
			if err := sleepCtx(c.r.Context(), backoff(pol.RetryAfter, attempt, f.retryAfter)); err != nil {
				c.res.clientGone = true
				return errClientGone
			}
		}
	}
	if last != nil {
		return c.writeFailure(last)
	}
	e := apierror.RateLimited(wait, "every deployment of model %q is cooling down after failures; retry in %s", clip(c.req.model), wait.Round(time.Second))
	e.Code = "deployments_cooling_down"
	return e
}

// attempt forwards the call to t, a deployment of group cur, asking it for
// model. It returns done when the call is over: answered (err nil), or
// ended by an error that no other attempt can mend (the client left, a
// budget refused it, a body no deployment can take). Otherwise err is the
// *failure that the routing policy may retry, nothing has reached the
// client, and the attempt's hold is settled.
func (c *call) attempt(cur *router.Group, t *provider.Target, wr *wire, model string) (done bool, err error) {
	c.target = t
	c.deploymentTags(t)
	h := c.w.Header()
	upstream := t.UpstreamModel(model)
	askUsage := c.req.stream && (wr.op == provider.OpChat || wr.op == provider.OpCompletions)
	body, err := wr.body(c.req, upstream, askUsage)
	if err != nil {
		if err := c.admitPending(); err != nil {
			return true, err
		}
		return true, apierror.BadRequest(translate.FieldOf(err, "messages"), "%v", err)
	}
	c.attemptHeaders(h, t, model)
	delete(h, hdrOutputCapped)
	delete(h, hdrUnpriced)
	c.res = result{model: upstream}
	if m := c.g.opts.Meter; m != nil {
		st := c.startStep("tollgate.budget_hold", sharedHolds(m))
		hd, err := m.reserve(c, t, wr.op, model, body)
		if err != nil && c.pending {
			// Refused before the hold was asked: a rate limit's 429
			// comes first, as it always has.
			if aerr := c.admitPending(); aerr != nil {
				err = aerr
			}
		}
		c.endStep(st, err)
		if err != nil {
			var exceeded *ledger.ExceededError
			if o := c.g.opts.Observer; o != nil && errors.As(err, &exceeded) {
				o.budgetRefused(exceeded.Kind)
			}
			return true, err
		}
		c.hold = hd
		if n := hd.capTokens(); n > 0 {
			if tb := thinkingBudget(body); tb > 0 && n <= tb {
				// Anthropic refuses max_tokens at or below the thinking
				// budget: a cap that low cannot be sent.
				c.settle()
				return true, apierror.BudgetExceeded("the rest of this budget is held by requests in flight, and the %d output tokens it leaves this request are not above its thinking.budget_tokens (%d): retry when they end", n, tb)
			}
			body = capOutput(body, wr.op, t.D.Provider, n)
			h[hdrOutputCapped] = []string{strconv.FormatInt(n, 10)}
		}
		if m := hd.unpriced(); m != "" {
			c.res.wantServed = true
			h[hdrUnpriced] = []string{m}
		}
	}
	var outcome func(router.Outcome, int64)
	if hl := c.g.opts.Health; hl != nil {
		outcome = hl.Start(cur, t)
	}
	c.forwarding()
	err = c.forward(t, wr, body)
	f, ok := errors.AsType[*failure](err) // no allocation on success, as errors.As's target was
	if !ok {
		if outcome != nil {
			o := router.Succeeded
			if c.res.clientGone {
				o = router.Abandoned
			}
			outcome(o, usedTokens(&c.res, 0))
		}
		return true, err
	}
	c.settle() // nothing reached the client: the hold is released (or an unusable answer booked)
	if outcome != nil {
		o := router.Failed
		if !f.retryable {
			o = router.Succeeded // the deployment answered; the request was at fault
		}
		outcome(o, 0)
	}
	return false, f
}

// settle ends the hold of the attempt in flight: what the upstream produced
// is booked (an unusable answer as a row without cost), and a hold that
// produced nothing is released. A non-streamed answer is settled before it
// is written, so that a client's next request sees the books; everything
// else is settled by finish.
func (c *call) settle() {
	h := c.hold
	if h == nil {
		return
	}
	c.hold = nil // settled once, even if settling panics
	c.guardRow(h)
	c.cost = h.settle(&c.res)
	if ch, ok := h.(*charge); ok {
		if ch.rowed {
			c.rowed, c.released = true, nil
		} else if ch.forwarded {
			c.released = ch
		}
	}
}

// settleLast settles the hold of the call's last attempt (an answer is
// being written, or the call ends): with its rate-limit ticket, in one
// Redis script when both are on Redis (charge.book).
func (c *call) settleLast() {
	if ch, ok := c.hold.(*charge); ok && c.ticket != nil {
		if rl, ok := c.g.opts.Limits.(*RateLimits); ok && rl.Limiter != nil {
			ch.last, ch.lim = c.ticket, rl.Limiter
		}
	}
	c.settle()
}

// land waits for the settle that writeWhole sent before writing the
// answer and books its reply (charge.land); once.
func (c *call) land() {
	if ch := c.landing; ch != nil {
		c.landing = nil
		ch.land()
	}
}

// finish ends the call: the hold settled or released, the rate-limit
// ticket returned with the tokens used, the log line and the metrics.
// Each step runs once: when one panics, serve's deferred finish runs the
// steps not yet run and none twice (one payload per call), and the span
// ends whatever step panicked.
func (c *call) finish(err error) {
	c.settleLast()
	c.land() // before the ticket: a fused settle settles it
	if tk := c.ticket; tk != nil {
		c.ticket = nil // given back once, even if finish runs again after a panic
		c.g.opts.Limits.done(tk, usedTokens(&c.res, tk.Est))
	}
	if c.g.opts.Meter == nil {
		c.priceUnmetered()
	}
	// status is the call's outcome as observed (log line, metrics,
	// callbacks, trace); what was booked is settled above.
	status := c.res.status
	switch {
	case c.res.clientGone:
		status = 499
	case err != nil && !errors.Is(err, errResponded):
		status = apierror.From(err).Status
		c.err = err
	case c.res.brokeOff != nil:
		// The client got a truncated answer: a failure, whatever status
		// its headers said.
		status = max(status, http.StatusBadGateway)
		c.err = c.res.brokeOff
	}
	defer c.endTrace(status) // once (endTrace clears c.tr)
	if ch := c.released; ch != nil && !c.rowed && status >= 400 {
		c.released = nil // once, even if finish runs again after a panic
		ch.failRow(status, c.failureInfo(status))
	}
	if c.cap != nil && !c.done.content {
		c.done.content = true
		if (err == nil || errors.Is(err, errResponded)) && !c.res.clientGone {
			// The answer is written: push its last bytes to the client
			// now, so that it never waits for its content to be masked.
			_ = http.NewResponseController(c.w).Flush()
		}
		c.finishContent(status)
	}
	if o := c.g.opts.Observer; o != nil && !c.done.observed {
		c.done.observed = true
		o.finished(c, status)
	}
}

// priceUnmetered gives a call that no meter books (no store) its cost
// from the price table, for the log, the metrics and the callbacks: the
// usage the upstream reported at the deployment's price. Nothing is
// booked.
func (c *call) priceUnmetered() {
	res, t := &c.res, c.target
	if t == nil || c.cost != 0 || !res.hasUsage || res.unusable || c.req == nil || c.req.media != nil {
		return
	}
	if p, ok := t.PriceFor(res.model); ok {
		c.cost = p.Cost(res.usage) + p.TimeCost(res.upstream)
	}
}

// writeFailure passes an upstream failure on to the client.
func (c *call) writeFailure(f *failure) error {
	if f.err != nil {
		return f.err
	}
	c.res.status = f.status
	c.upstreamErr = f.body
	copyHeader(c.w.Header(), f.header)
	c.w.Header().Set("Content-Length", strconv.Itoa(len(f.body)))
	c.w.WriteHeader(f.status)
	if _, err := c.w.Write(f.body); err != nil {
		c.res.clientGone = true
		return errClientGone
	}
	return errResponded
}
