package gateway

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/pricing"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/ratelimit"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/usage"
)

// Meter books what calls cost: before each attempt it holds what the call
// may cost on every budget that applies, or refuses it.
type Meter interface {
	reserve(c *call, t *provider.Target, op provider.Op, model string, body []byte) (hold, error)
}

// sharedHolds reports whether m places its holds on Redis.
func sharedHolds(m Meter) bool {
	b, ok := m.(*Books)
	return ok && b.Holder != nil
}

// hold is one attempt's reservation on the budgets.
type hold interface {
	// settle books what res produced - its cost, or a row without cost for
	// an unusable answer - or releases the hold when it produced nothing,
	// and returns the cost booked. Settling twice does nothing.
	settle(res *result) float64
	// capTokens is the output per completion the request must be capped
	// to (0: as asked).
	capTokens() int64
	// unpriced names the upstream model when the deployment had no price.
	unpriced() string
	// headers sets the cost headers of an answer settled at cost.
	headers(h http.Header, cost float64)
	// streamHeaders sets what a stream's headers can say before it is
	// priced: the key's spend so far (as LiteLLM sends it on every answer).
	streamHeaders(h http.Header)
}

// Books is the Meter of a gateway with budgets: it reserves on every budget
// that applies before a request is forwarded, settles the real cost after,
// and queues the spend-log row.
type Books struct {
	Book   *ledger.Book
	Writer *ledger.Writer
	Snap   *auth.Snapshot
	// GlobalBudget is litellm_settings.max_budget; GlobalSpent what the
	// store has recorded so far. MaxEndUserBudget applies to end users
	// without a budget of their own.
	GlobalBudget     *float64
	GlobalSpent      float64
	MaxEndUserBudget *float64
	// OnSoftBudget is told, once per crossing, of an account whose spend
	// passed its soft budget.
	OnSoftBudget func(*ledger.Account)
	// Holder places the holds: in process when nil, or shared on Redis.
	Holder ledger.Holder
	// Mode says how a request's budgets are enforced: strict holds the
	// worst case and never overspends; default (nil) holds a realistic
	// estimate, at most what remains (docs/spend-and-limits.md).
	Mode    func(accounts []*ledger.Account) ledger.Enforcement
	outputs outputs
	served  servedPrices
	// RefuseUnpriced refuses a budgeted request to a deployment whose price
	// nobody knows (general_settings.unpriced_models: refuse); otherwise it
	// is served at cost 0 and says so in x-tollgate-unpriced.
	RefuseUnpriced bool
	// NoErrorRows: a failed request's row without cost (failRow, and an
	// unusable answer's) is not written (general_settings.
	// disable_error_logs); rows with spend always are.
	NoErrorRows bool
	// Log gets the alarm for usage an upstream reported out of bounds
	// (slog.Default when nil).
	Log *slog.Logger
	// OnUsageAdjusted, when set, is told of each answer whose usage was
	// "clamped" or "estimated", with the deployment's provider.
	OnUsageAdjusted func(provider, adjustment string)
}

// imageTokenCeiling bounds the prompt tokens one image can cost: OpenAI's
// tiled models top out near 1,450 (gpt-5.2 bills 1.2 times that), its
// patch models near 3,800 (gpt-4.1-nano: 1,536 patches × 2.46), Anthropic
// near 1,600, Together's vision models at 6,404 (2 × 2 tiles of 1,601).
// gpt-4o-mini bills an image as 2,833 tokens plus 5,667 per 512px tile, up
// to 8 tiles: miniImageTokenCeiling.
const (
	imageTokenCeiling     = 6404
	miniImageTokenCeiling = 2833 + 8*5667
)

// imageCeiling is the most one image can cost on model (the deployment's
// base_model when it names one, else its model).
func imageCeiling(model string) int64 {
	if strings.Contains(model, "gpt-4o-mini") {
		return miniImageTokenCeiling
	}
	return imageTokenCeiling
}

// toolPromptCeiling bounds the prompt tokens a provider adds on its own when
// a request carries tools (Anthropic's tool-use system prompt is a few
// hundred tokens, its computer-use tool over a thousand), beyond the bytes
// of the tool definitions themselves.
const toolPromptCeiling = 2048

// referenceCeiling bounds the prompt of a request that refers to content by
// reference (a file id or URL, a document) on a model whose context window
// the price table does not know.
const referenceCeiling = 200_000

// promptBound is an upper bound on the prompt tokens of body for model:
// every BPE or SentencePiece token covers at least one byte, so the body's
// length bounds its text; each image adds at most imageCeiling, tools at
// most toolPromptCeiling. A document or a file given by reference (by id or
// URL) can fill the model's context window (maxInput; referenceCeiling when
// unknown), which then bounds the prompt instead.
func promptBound(body []byte, model string, maxInput int64) int64 {
	var images, refs int64
	tools := false
	// One pass over the members that matter, with or without spaces around
	// the colon (Python clients send them spaced).
	for i := 0; ; {
		j := bytes.IndexByte(body[i:], '"')
		if j < 0 {
			break
		}
		i += j + 1
		rest := body[i:]
		if len(rest) < 5 {
			break
		}
		var key string
		switch rest[0] {
		case 't':
			key = pick(rest, `type"`, `tools"`)
		case 'i':
			key = pick(rest, `image_url"`)
		case 'f':
			key = pick(rest, `file_id"`, `file_url"`, `file_uri"`)
		}
		if key == "" {
			continue
		}
		v := bytes.TrimLeft(rest[len(key):], " \t\r\n")
		if len(v) == 0 || v[0] != ':' {
			continue // a string value, not a member name
		}
		i += len(key)
		switch key {
		case `type"`:
			v = bytes.TrimLeft(v[1:], " \t\r\n")
			switch {
			case bytes.HasPrefix(v, []byte(`"image"`)):
				images++
			case bytes.HasPrefix(v, []byte(`"document"`)), bytes.HasPrefix(v, []byte(`"file"`)), bytes.HasPrefix(v, []byte(`"input_file"`)):
				refs++
			}
		case `tools"`:
			tools = true
		case `image_url"`:
			images++
		default:
			refs++
		}
	}
	n := int64(len(body)) + images*imageCeiling(model)
	if tools {
		n += toolPromptCeiling
	}
	if refs > 0 {
		if maxInput <= 0 {
			maxInput = referenceCeiling
		}
		n = max(n, maxInput)
	}
	return n
}

// pick is the first of keys that b starts with, or "".
func pick(b []byte, keys ...string) string {
	for _, k := range keys {
		if len(b) >= len(k) && string(b[:len(k)]) == k {
			return k
		}
	}
	return ""
}

// bytesPerToken is promptEstimate's calibrated rate. The BPE vocabularies
// of current models (cl100k, o200k, Claude's) average about four bytes of
// English text per token, fewer for code, other scripts and JSON
// punctuation; three keeps the estimate at or above the true count for
// most prompts, and settlement corrects it either way.
const bytesPerToken = 3

// promptEstimate is a realistic prompt-token count for default-mode holds,
// from promptBound's bound on a body of bodyLen bytes: the body's text at
// bytesPerToken, images and other fixed extras of the bound kept whole.
func promptEstimate(bound, bodyLen int64) int64 {
	return bound - bodyLen + bodyLen/bytesPerToken
}

// accounts are the budgets a request is charged to, most shared first.
func (m *Books) accounts(p *auth.Principal, endUser string, e *store.EndUser, model string) []*ledger.Account {
	accts := make([]*ledger.Account, 0, 7)
	global := ledger.Spec{Spent: m.GlobalSpent, Budget: m.GlobalBudget}
	if u, ok := m.Snap.User(auth.ProxyBudgetUser); ok { // its max_budget, edited through /user/update
		global.Budget = u.MaxBudget
	}
	accts = append(accts, m.Book.Account(store.KindGlobal, "global", global))
	if o, b := p.Org, p.OrgBudget; o != nil && b != nil {
		spec := ledger.SpecOf(o.Spend, b.Limits, b.SoftBudget)
		if o.BudgetResetAt != nil { // the organization's own once its period has rolled over
			spec.ResetAt = o.BudgetResetAt
		}
		accts = append(accts, m.Book.Account(store.KindOrganization, o.OrganizationID, spec))
	}
	if t := p.Team; t != nil {
		accts = append(accts, m.Book.Account(store.KindTeam, t.TeamID, ledger.SpecOf(t.Spend, t.Limits, nil)))
	}
	if u := p.User; u != nil {
		accts = append(accts, m.Book.Account(store.KindUser, u.UserID, ledger.SpecOf(u.Spend, u.Limits, u.SoftBudget)))
	}
	if b := p.MemberBudget; b != nil { // spend seeded from budget_spend at start; no period of its own
		accts = append(accts, m.Book.Account(store.KindTeamMember, store.MemberBudgetID(p.Team.TeamID, p.Key.UserID), ledger.Spec{Budget: b.MaxBudget, Soft: b.SoftBudget}))
	}
	if endUser != "" {
		spec := ledger.Spec{Budget: m.MaxEndUserBudget}
		if e != nil {
			spec = ledger.SpecOf(e.Spend, e.Limits, nil)
			if e.MaxBudget == nil {
				spec.Budget = m.MaxEndUserBudget
			}
		}
		accts = append(accts, m.Book.Account(store.KindEndUser, endUser, spec))
	}
	if k := p.Key; k != nil {
		// A regenerated key's budgets are the accounts of the hash it had
		// first (store.Key.Account): what is held, settling or queued under
		// an old hash counts against them.
		spec, acct := ledger.SpecOf(k.Spend, k.Limits, k.SoftBudget), k.Account()
		if acct != k.TokenHash {
			spec.Name = k.TokenHash
		}
		accts = append(accts, m.Book.Account(store.KindKey, acct, spec))
		if b, ok := k.ModelMaxBudget[model]; ok {
			accts = append(accts, m.Book.Account(store.KindKeyModel, acct+"/"+model, ledger.Spec{Spent: k.ModelSpend[model], Budget: &b}))
		}
	}
	return accts
}

// outputBound is the most output a request can be billed for: max_tokens
// (else the model's maximum output, else pricing.DefaultMaxOutput) for
// every completion the upstream generates (n, best_of, a batch of prompts).
// Tools add nothing: a tool call's arguments are output within max_tokens.
func outputBound(p pricing.Price, req *request) int64 {
	if req.noOutput {
		return 0
	}
	per := req.maxTokens
	if per <= 0 {
		per = p.MaxOutputTokens
	}
	if per <= 0 {
		per = pricing.DefaultMaxOutput
	}
	return satMul(per, max(req.outputs, 1))
}

// estimate is what the one uncovered request of a budget holds in default
// mode (its worst case did not fit): its prompt counted at a calibrated
// rate (promptEstimate) and its output as max_tokens when the request sets
// it, else the longest of the deployment's recent answers, for every
// completion it asks for - never more than the worst case; before any
// answer is known, the worst case. ReserveFlex then holds at most what
// remains.
func (m *Books) estimate(price pricing.Price, req *request, bound, bodyLen int64, deployment, model string, worst ledger.Amount) ledger.Amount {
	per := req.maxTokens
	if per <= 0 {
		learned, ok := m.outputs.estimate(deployment, model)
		if !ok {
			return worst
		}
		per = learned
	}
	out := satMul(per, max(req.outputs, 1))
	return min(ledger.USD(price.WorstCase(promptEstimate(bound, bodyLen), out)), worst)
}

// perSecondHold is how long a request to a deployment priced per second
// holds that price for when the deployment sets no timeout.
const perSecondHold = time.Minute

// coldOutput is the output a capped hold pays for per completion on a
// deployment whose answers have not been seen yet (and without max_tokens).
const coldOutput = 1024

// minCappedOutput is the least output per completion a capped request is
// given, unless its estimate is shorter: below it the request is refused
// (retry when the requests in flight end) rather than answered with a stub.
const minCappedOutput = 16

// capAmount is what a capped request holds in default mode, and its
// output per completion: the prompt estimate, and max_tokens, else the
// learned estimate, else coldOutput, for every completion. Its output is
// then capped to what the hold pays for after the prompt estimate.
func (m *Books) capAmount(price pricing.Price, req *request, prompt int64, deployment, model string, worst ledger.Amount) (ledger.Amount, int64) {
	per := req.maxTokens
	if per <= 0 {
		learned, ok := m.outputs.estimate(deployment, model)
		if !ok {
			learned = coldOutput
		}
		per = learned
	}
	return min(ledger.USD(price.WorstCase(prompt, satMul(per, max(req.outputs, 1)))), worst), per
}

// canCap reports whether op generates output whose length a request can
// bound, by the member capOutput writes: max_tokens (Cohere's too),
// max_output_tokens in the Responses API, Gemini's
// generationConfig.maxOutputTokens, Converse's inferenceConfig.maxTokens.
func canCap(op provider.Op) bool {
	switch op {
	case provider.OpChat, provider.OpCompletions, provider.OpMessages, provider.OpResponses,
		provider.OpGenerateContent, provider.OpCohereChat, provider.OpConverse:
		return true
	}
	return false
}

// charge is one request's hold on its budgets.
type charge struct {
	hv    [2]string // the header values it sets (charge.one)
	m     *Books
	res   ledger.Hold
	key   *ledger.Account
	price pricing.Price
	// unpricedModel is the upstream model when no price was known at
	// admission; the model the upstream says it served may still price it
	// at settle.
	unpricedModel string
	target        *provider.Target
	upstream      string // the model the upstream was asked for
	outputs       int64  // completions asked for (n, best_of, prompts in a batch)
	log           store.SpendLog
	prompt        int64 // estimate used when a stream reports no usage
	settled       bool
	rowed         bool    // a spend row was queued (enqueue)
	forwarded     bool    // the request was sent to the upstream
	cost          float64 // what settle booked
	// What the hold allowed: usage beyond these bounds is clamped to them,
	// and the cost to worst.
	promptMax, outputMax int64
	searchUnitsMax       int64
	worst                ledger.Amount
	// timeHold is the part of worst that pays for a per-second price and
	// a price per call (fixed).
	timeHold ledger.Amount
	// capN, when set, is the output per completion the request is capped
	// to: its worst case did not fit the budget while another request that
	// may overshoot was in flight (default mode).
	capN int64
	// media: an image or audio call, booked by what its answer reports
	// (media.go) within the images asked for (mediaImages) and the seconds
	// its upload can hold (mediaSeconds); 0: no bound.
	media        bool
	mediaImages  int64
	mediaSeconds float64
	// fixed is a price per call on top of the tokens' (a pass-through
	// endpoint's cost_per_request).
	fixed ledger.Amount
	// content, when set, holds the spend rows until the call's finish
	// puts its messages and response on them.
	content *capture
	// last, when set, is the call's rate-limit ticket, settled with this
	// hold (book); lim is its limiter.
	last *ratelimit.Ticket
	lim  *ratelimit.Limiter
	// later: settle only sends the settle, and the caller lands it once
	// the answer is written (call.writeWhole); pend is the settle sent.
	later bool
	pend  ledger.Settling
}

func (c *charge) capTokens() int64 { return c.capN }
func (c *charge) unpriced() string { return c.unpricedModel }

// reserve holds what the request may cost on every budget that applies -
// its worst case in strict mode; in default mode its worst case while that
// fits, else an estimate, the request's output capped to it unless it is
// the budget's one uncovered request (ledger.ReserveFlex, charge.capTokens;
// docs/spend-and-limits.md) - or refuses it with the 400 budget_exceeded
// error LiteLLM clients expect.
func (m *Books) reserve(cl *call, t *provider.Target, op provider.Op, model string, body []byte) (hold, error) {
	ctx, p, req := cl.r.Context(), cl.p, cl.req
	accts := m.accounts(p, req.user, cl.endUser, model)
	upstream := t.UpstreamModel(model)
	price, priced := t.PriceFor(upstream)
	if !priced && m.RefuseUnpriced && budgeted(accts) {
		return nil, apierror.BadRequest("model", "model %q (deployment %s) has no known price, and general_settings.unpriced_models is refuse: a budgeted key may not call it; the operator can set input_cost_per_token and output_cost_per_token or model_info.base_model", req.model, t.D.ID)
	}
	mode := ledger.EnforceDefault
	if m.Mode != nil {
		mode = m.Mode(accts)
	}
	// A deployment priced only by the model its answers name (step 5 of
	// the lookup) holds at the price its last answer had; before any
	// answer, strict cannot hold a worst case and refuses a budgeted
	// request, and default holds all that remains (one such request at a
	// time, like any hold cut short).
	asked := price
	unknown := false
	if !priced {
		if sp, ok := m.served.price(t.D.ID, upstream); ok {
			asked = sp
		} else if budgeted(accts) {
			if mode == ledger.EnforceStrict {
				return nil, apierror.BadRequest("model", "model %q (deployment %s) is priced only by the model its answers name, and none has been seen yet; budget_enforcement is strict, so a budgeted request must hold a known worst case: the operator can set model_info.base_model or input_cost_per_token and output_cost_per_token", req.model, t.D.ID)
			}
			unknown = true
		}
	}
	var bound, out int64
	var tokenWorst ledger.Amount
	var mediaImages int64
	var mediaSeconds float64
	if md := req.media; md != nil {
		// Images and audio are priced by their own units (media.go); what
		// their answers report is booked within the images asked for and
		// the seconds the upload can hold.
		name := cmp.Or(t.D.BaseModel, upstream)
		asked = md.priced(asked, t.D, name)
		tokenWorst = ledger.USD(md.worst(asked, max(req.outputs, 1)))
		switch {
		case isImage(md.op):
			mediaImages = max(req.outputs, 1)
		case isAudioIn(md.op):
			mediaSeconds = md.secondsBound()
		}
	} else {
		bound = max(promptBound(body, cmp.Or(t.D.BaseModel, upstream), asked.MaxInputTokens), req.promptMax, historyBound(cl, op, asked.MaxInputTokens))
		out = outputBound(asked, req)
		// A rerank also pays per search unit: the most its documents can
		// make. An operation that generates nothing pays for its prompt
		// alone.
		usageWorst := float64(req.searchUnitsMax) * asked.InputPerQuery
		if req.noOutput {
			usageWorst += float64(bound) * max(asked.InputPerToken, asked.CacheCreationPerToken)
		} else {
			usageWorst += asked.WorstCase(bound, out)
		}
		tokenWorst = ledger.USD(usageWorst)
	}
	// A deployment priced per second holds its price for its timeout (a
	// minute when it sets none) on top of its tokens' worst case; the time
	// an answer really takes is charged in full at settle.
	// A price per call (a pass-through endpoint's cost_per_request) is held
	// whole with it, and charged whole at settle.
	fixed := ledger.USD(req.fixed)
	timeHold := ledger.USD(asked.TimeCost(cmp.Or(t.D.Timeout, perSecondHold))) + fixed
	worst := tokenWorst + timeHold
	holder := m.Holder
	if holder == nil {
		holder = ledger.Local{}
	}
	var res ledger.Hold
	var err error
	var capPer int64          // a capped hold's output per completion
	var capHold ledger.Amount // and what it asked to hold
	var q ledger.Ask
	switch {
	case mode == ledger.EnforceStrict:
		q = ledger.AskStrict(worst)
	case unknown:
		q = ledger.AskUpTo(tightestBudget(accts))
	default:
		f := ledger.Flex{Worst: worst, Estimate: worst, Capped: worst}
		if req.media == nil {
			f.Estimate = m.estimate(asked, req, bound, int64(len(body)), t.D.ID, upstream, tokenWorst) + timeHold
		}
		if canCap(op) {
			capHold, capPer = m.capAmount(asked, req, promptEstimate(bound, int64(len(body))), t.D.ID, upstream, tokenWorst)
			capHold += timeHold
		}
		if canCap(op) {
			f.Capped = capHold
		}
		q = ledger.AskFlex(f)
	}
	res, err = m.place(ctx, cl, holder, accts, q)
	if _, ok := errors.AsType[*apierror.Error](err); ok { // AsType: no allocation when err is nil, as errors.As's target was
		return nil, err // a rate limit's 429 (place)
	}
	var capTokens int64
	if err == nil && res.Capped() {
		// Its worst case did not fit and another request that may cost
		// more than it holds is in flight: this one's output is capped to
		// what its hold pays for after the prompt estimate.
		capTokens = capPer
		if res.Held() < capHold { // cut to what remained
			capTokens = asked.OutputsWithin(promptEstimate(bound, int64(len(body))), (res.Held()-timeHold).Dollars()) / max(req.outputs, 1)
		}
		promptCost := ledger.USD(float64(promptEstimate(bound, int64(len(body)))) * max(asked.InputPerToken, asked.CacheCreationPerToken))
		refuse := !canCap(op) || res.Held()-timeHold < promptCost // an output cap cannot bound it
		switch {
		case refuse:
		case asked.OutputPerToken <= 0:
			capTokens = 0 // output is free: the prompt, which the hold covers, is all it costs
		default:
			refuse = capTokens < max(min(capPer, minCappedOutput), 1)
		}
		if refuse {
			res.Release() // the ticket, if taken with it, stays the call's (finish gives it back)
			ex := tightest(accts)
			ex.Need, ex.Detail = worst, "the rest of this budget is held by requests in flight; retry when they end"
			err = ex
		}
	}
	if _, ok := errors.AsType[*ledger.UnavailableError](err); ok {
		// Redis trouble, not a spent budget: 503 with Retry-After, which
		// SDKs retry (docs/spend-and-limits.md, "Redis trouble").
		e := apierror.Unavailable(err, "%v", err)
		e.Code, e.RetryAfter = "budget_unavailable", time.Second
		return nil, e
	}
	if err != nil {
		e := apierror.BudgetExceeded("%v", err)
		if ex := (*ledger.ExceededError)(nil); mode == ledger.EnforceStrict && req.maxTokens <= 0 && req.media == nil && errors.As(err, &ex) && ex.Spent+ex.Reserved < ex.Budget {
			// Strict holds the worst case: say how to make it smaller.
			e.Message += fmt.Sprintf("; budget_enforcement is strict, so a request holds its worst case (every output token it could ask for): set max_tokens (max_output_tokens in the Responses API) to make it fit (up to %d output tokens fit what remains)",
				asked.OutputsWithin(bound, (ex.Budget-ex.Spent-ex.Reserved-timeHold).Dollars()))
		}
		e.Cause = err
		return nil, e
	}
	c := &charge{m: m, res: res, price: asked, target: t, upstream: upstream, prompt: int64(len(body)) / 4,
		promptMax: bound, outputMax: out, searchUnitsMax: req.searchUnitsMax, worst: worst, outputs: max(req.outputs, 1), capN: capTokens, timeHold: timeHold,
		media: req.media != nil, mediaImages: mediaImages, mediaSeconds: mediaSeconds, fixed: fixed}
	if capTokens > 0 {
		// Settlement holds the upstream to the cap it was given.
		c.outputMax = satMul(capTokens, c.outputs)
		c.worst = min(worst, ledger.USD(asked.WorstCase(bound, c.outputMax))+timeHold)
	}
	if !priced {
		c.unpricedModel = upstream
	}
	if p.Key != nil {
		c.key = accts[len(accts)-1]
		if _, ok := p.Key.ModelMaxBudget[model]; ok {
			c.key = accts[len(accts)-2]
		}
	}
	chargedTo(&c.log, p, model)
	c.log.RequestID, c.log.EndUser, c.log.ModelGroup, c.log.CallType = cl.id, req.user, model, callType(cl.op)
	c.log.Deployment, c.log.Provider, c.log.StartedAt = t.D.ID, t.D.Provider, cl.start
	c.log.RequestTags, c.log.Metadata = cl.meta.tags, cl.meta.metadata
	if cl.cap != nil && cl.cap.spend {
		c.content = cl.cap // its rows wait for the content (finishContent)
	}
	return c, nil
}

// place asks holder for q. A call whose rate-limit ticket is still pending
// (call.fusable) has it decided here: with the hold, in one Redis script,
// when the hold goes to Redis; else on its own. A refusal by the rate
// limits is their 429 (an *apierror.Error) and leaves no budget held. A
// refusal by a budget takes no rate-limit place in the fused script; a
// ticket decided on its own stays taken, and finish gives it back.
func (m *Books) place(ctx context.Context, cl *call, holder ledger.Holder, accts []*ledger.Account, q ledger.Ask) (ledger.Hold, error) {
	if !cl.pending {
		return ledger.Place(ctx, holder, accts, q)
	}
	rl := cl.g.opts.Limits.(*RateLimits)
	sh, ok := holder.(ledger.GatedHolder)
	g := rl.Limiter.Gate(cl.ticket)
	if !ok || g == nil {
		if err := cl.admitPending(); err != nil {
			return nil, err
		}
		return ledger.Place(ctx, holder, accts, q)
	}
	res, decided, err := sh.ReserveGated(ctx, accts, q, g)
	if !decided {
		// No budget on Redis, a hold decided in process against this
		// replica's allotments (ledger.Allotted), or Redis did not answer:
		// the limits decide on their own (on Redis, or in process while it is away or, after
		// a script whose answer never came, at once).
		var aerr error
		if g.WasLost() {
			cl.pending = false
			if d := rl.Limiter.AdmitLocal(cl.ticket); d != nil {
				cl.ticket, aerr = nil, rl.refusal(d)
			} else {
				limitHeaders(cl.w.Header(), cl.ticket)
			}
		} else {
			aerr = cl.admitPending()
		}
		if aerr != nil {
			if res != nil {
				res.Release()
			}
			return nil, aerr
		}
		return res, err
	}
	cl.pending = false
	if d, ok := errors.AsType[*ratelimit.Denied](err); ok {
		cl.ticket = nil // refused: nothing was taken
		return nil, rl.refusal(d)
	}
	limitHeaders(cl.w.Header(), cl.ticket)
	if err != nil && !cl.ticket.Taken() {
		// The hold was refused, so the admission was not taken. One the
		// script took whose hold then failed (a malformed reply) stays
		// the call's: finish gives it back (its parallel slot freed and
		// no longer renewed, once).
		cl.ticket = nil
	}
	return res, err
}

// book settles the hold (spend) or releases it, with the call's rate-limit
// ticket in one Redis script when this is the call's last hold and both
// are on Redis (call.settleLast); res gives the tokens the ticket is
// settled with (nil: none). A settle on Redis is queued in the runner's
// ordered stream (every hold this replica sends later runs after it) and,
// unless the charge settles later (c.later: the answer is written first),
// landed at once: its reply read and booked (land).
func (c *charge) book(amount ledger.Amount, spend bool, res *result) {
	c.pend = c.send(amount, spend, res)
	if !c.later {
		c.land()
	}
}

func (c *charge) send(amount ledger.Amount, spend bool, res *result) ledger.Settling {
	if tk := c.last; tk != nil {
		c.last = nil
		used := int64(0)
		if res != nil {
			used = usedTokens(res, tk.Est)
		}
		if g := c.lim.Closing(tk, used); g != nil {
			if s, ok := ledger.SendGated(c.res, amount, spend, g); ok {
				return s
			}
		}
	}
	return ledger.SendSettle(c.res, amount, spend)
}

// land waits for the settle sent (book) and books its reply: Redis's
// spend mirrored, the spend carried or kept in doubt when Redis did not
// answer, soft budgets crossed told. Landing twice does nothing.
func (c *charge) land() {
	for _, a := range c.pend.Wait() {
		if c.m.OnSoftBudget != nil {
			c.m.OnSoftBudget(a)
		}
	}
}

// settle books what res cost: the reported usage, validated against what
// the request's hold allowed; or an estimate when the upstream reported
// none (res.estimated, or a stream that ended without its usage chunk: the
// prompt estimate, and the text received at four bytes a token, at least a
// token per chunk). A request that produced nothing releases its hold; an
// unusable answer is booked as a row with its status and no cost. The
// usage booked replaces res.usage, so that rate limits and the log count
// the same tokens.
func (c *charge) settle(res *result) (cost float64) {
	if c == nil || c.settled {
		return 0
	}
	if res.unusable {
		c.fail(res)
		return 0
	}
	l := c.log
	u := res.usage
	fromChunks := false
	switch {
	case res.hasUsage:
		l.ReportedPromptTokens, l.ReportedCompletionTokens = u.Prompt, u.Completion
	case res.estimated:
		l.UsageEstimated = true
	case res.chunks > 0:
		// A stream without usage: the prompt estimate, and a token per four
		// bytes of the text it carried, at least one per chunk.
		u = usage.Usage{Prompt: c.prompt, Completion: max(int64(res.chunks), (res.text+3)/4)}
		l.UsageEstimated, fromChunks = true, true
	default:
		c.release(res)
		return 0
	}
	c.settled = true
	if c.unpricedModel != "" && !c.media {
		if p, ok := c.target.ServedPrice(res.served); ok {
			c.m.served.learn(c.target.D.ID, c.upstream, p)
			// Held at no price: the cap is what this price makes of the
			// hold's bounds.
			c.price, c.unpricedModel = p, ""
			c.worst = ledger.USD(p.WorstCase(c.promptMax, c.outputMax))
		}
	}
	var clamped bool
	if c.media {
		clamped = clampMedia(&u, c.mediaImages, c.mediaSeconds)
	} else {
		clamped = c.clamp(&u)
	}
	// The ledger's precision is the books' precision; a per-second price
	// is charged for the time the upstream took.
	amount := ledger.USD(c.price.Cost(u))
	if tokenWorst := max(c.worst-c.timeHold, 0); amount > tokenWorst && !c.media {
		amount, clamped = tokenWorst, true
	}
	amount += ledger.USD(c.price.TimeCost(res.upstream)) + c.fixed // never clamped: the upstream bills it
	if clamped && res.hasUsage {
		l.UsageClamped = true
		c.m.alarm(&l, res.usage, u, amount)
	}
	if f := c.m.OnUsageAdjusted; f != nil {
		switch {
		case l.UsageClamped:
			f(l.Provider, "clamped")
		case l.UsageEstimated:
			f(l.Provider, "estimated")
		}
	}
	res.usage = u
	if fromChunks {
		// Set only now, past the switch above: the span, the rate limits
		// (usedTokens) and the log read the booked estimate as an
		// estimate.
		res.estimated = true
	}
	if res.hasUsage && !clamped && c.target != nil && !c.media {
		c.m.outputs.observe(c.target.D.ID, c.upstream, u.Completion/c.outputs)
	}
	cost = amount.Dollars()
	c.cost = cost
	c.book(amount, true, res)
	l.PromptTokens, l.CompletionTokens, l.CachedTokens = u.Prompt, u.Completion, u.Cached
	l.Cost, l.Status, l.ResponseID = cost, res.status, res.id
	switch {
	case res.clientGone:
		l.Status = 499
		l.ErrorInformation = &store.ErrorInformation{ErrorCode: "499", ErrorClass: "client_disconnected", LLMProvider: l.Provider,
			ErrorMessage: "the client disconnected before the answer's end; what was produced is booked"}
	case res.brokeOff != nil:
		// Booked as it was produced, but a failure: the client got a
		// truncated answer.
		l.Status = max(l.Status, http.StatusBadGateway)
		l.ErrorInformation = &store.ErrorInformation{ErrorCode: strconv.Itoa(l.Status), ErrorClass: "APIConnectionError", LLMProvider: l.Provider,
			ErrorMessage: clipBytes(apierror.From(res.brokeOff).Message, maxErrorMessage)}
	case l.Status >= 400:
		l.ErrorInformation = &store.ErrorInformation{ErrorCode: strconv.Itoa(l.Status), ErrorClass: errorClass(l.Status, "", "", nil), LLMProvider: l.Provider,
			ErrorMessage: "the upstream's answer failed with status " + strconv.Itoa(l.Status) + "; what it produced is booked"}
	}
	c.enqueue(&l)
	return cost
}

// clamp bounds u by what the hold allowed: no count below zero, the prompt
// within its bound, the output within max_tokens × completions, cached and
// cache-creation tokens within the prompt. It reports whether it changed u.
func (c *charge) clamp(u *usage.Usage) bool {
	before := *u
	bound := func(v *int64, hi int64) { *v = min(max(*v, 0), hi) }
	bound(&u.Prompt, c.promptMax)
	bound(&u.Completion, c.outputMax)
	bound(&u.Cached, u.Prompt)
	bound(&u.CacheCreation, u.Prompt)
	bound(&u.Reasoning, u.Completion)
	bound(&u.SearchUnits, c.searchUnitsMax)
	return *u != before
}

// alarm logs usage an upstream reported out of bounds and what was booked.
func (m *Books) alarm(l *store.SpendLog, reported, booked usage.Usage, amount ledger.Amount) {
	log := m.Log
	if log == nil {
		log = slog.Default()
	}
	log.Error("upstream usage out of bounds: booked what the request's hold allowed",
		"call_id", l.RequestID, "deployment", l.Deployment, "provider", l.Provider, "model_group", l.ModelGroup,
		"reported_prompt_tokens", reported.Prompt, "reported_completion_tokens", reported.Completion,
		"reported_cached_tokens", reported.Cached, "reported_cache_creation_tokens", reported.CacheCreation,
		"reported_images", reported.Images, "reported_audio_seconds", reported.AudioSeconds,
		"booked_prompt_tokens", booked.Prompt, "booked_completion_tokens", booked.Completion,
		"booked_images", booked.Images, "booked_audio_seconds", booked.AudioSeconds, "booked_cost", amount.Dollars())
}

// fail books an answer that could not be used (a 2xx that is not a valid
// response): the hold is released, and a spend-log row with status and no
// cost records that the upstream was called.
func (c *charge) fail(res *result) {
	if c == nil || c.settled {
		return
	}
	c.release(res)
	if c.m.NoErrorRows {
		c.rowed = true // no row, by the operator's choice: none from finish either
		return
	}
	l := c.log
	l.Status = res.status
	if l.Status >= 400 {
		l.ErrorInformation = &store.ErrorInformation{ErrorCode: strconv.Itoa(l.Status), ErrorClass: errorClass(l.Status, "", "", nil), LLMProvider: l.Provider,
			ErrorMessage: "deployment " + l.Deployment + "'s answer could not be used (status " + strconv.Itoa(l.Status) + ")"}
	}
	c.enqueue(&l)
}

func (c *charge) enqueue(l *store.SpendLog) {
	c.rowed = true
	l.EndedAt = time.Now()
	l.LatencyMS = l.EndedAt.Sub(l.StartedAt).Milliseconds()
	if c.m.Writer != nil {
		if c.content != nil {
			c.content.holdRow(l, c.m.Writer)
			return
		}
		c.m.Writer.Enqueue(*l)
	}
}

// release drops the hold of a request that never produced an answer.
func (c *charge) release(res *result) {
	if c != nil && !c.settled {
		c.settled = true
		c.book(0, false, res)
	}
}

// tightestBudget is just over the smallest budget of accts: a hold of it
// is always cut to what remains, i.e. takes all there is, and counts as
// the one hold cut short that a budget allows at a time.
func tightestBudget(accts []*ledger.Account) ledger.Amount {
	b := ledger.Unlimited
	for _, a := range accts {
		b = min(b, a.Budget())
	}
	return b + 1
}

// tightest is a refusal naming the account of accts with the least left.
func tightest(accts []*ledger.Account) *ledger.ExceededError {
	var pick *ledger.Account
	for _, a := range accts {
		if a.Budget() == ledger.Unlimited {
			continue
		}
		if pick == nil || a.Budget()-a.Spent()-a.Reserved() < pick.Budget()-pick.Spent()-pick.Reserved() {
			pick = a
		}
	}
	if pick == nil {
		pick = accts[len(accts)-1]
	}
	return &ledger.ExceededError{Kind: pick.Kind, ID: pick.ID, Spent: pick.Spent(), Reserved: pick.Reserved(), Budget: pick.Budget(), ResetAt: pick.ResetAt()}
}

// budgeted reports whether any of accts has a budget.
func budgeted(accts []*ledger.Account) bool {
	for _, a := range accts {
		if a.Budget() != ledger.Unlimited {
			return true
		}
	}
	return false
}

// headers are set on responses whose cost is known before they are sent.
func (c *charge) headers(h http.Header, cost float64) {
	v := c.one(chargeCost, strconv.FormatFloat(cost, 'g', -1, 64))
	h[hdrCost], h[llmCost] = v, v
	if c.unpricedModel == "" {
		delete(h, hdrUnpriced) // the served model priced it after all
	}
	c.streamHeaders(h)
}

// streamHeaders sets the key's spend: this replica's view of it, with this
// request's cost while its settle on Redis is not answered yet
// (Settling.Spent).
func (c *charge) streamHeaders(h http.Header) {
	if c.key != nil {
		v := c.one(chargeKeySpend, strconv.FormatFloat(c.pend.Spent(c.key).Dollars(), 'g', -1, 64))
		h[hdrKeySpend], h[llmKeySpend] = v, v
	}
}

// The slots of charge.hv, one per header value a charge sets.
const (
	chargeCost = iota
	chargeKeySpend
)

// one is v as a header value in the charge's slot i, as call.one: a slice
// of length and capacity 1 over c.hv (no allocation of its own), written
// again only when its header is set again.
func (c *charge) one(i int, v string) []string {
	c.hv[i] = v
	return c.hv[i : i+1 : i+1]
}
