package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/pricing"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/store"
)

// Meter books what requests cost: it reserves the worst case on every
// budget that applies before a request is forwarded, settles the real cost
// after, and queues the spend-log row.
type Meter struct {
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
	// RefuseUnpriced refuses a budgeted request to a deployment whose price
	// nobody knows (general_settings.unpriced_models: refuse); otherwise it
	// is served at cost 0 and says so in x-tollgate-unpriced.
	RefuseUnpriced bool
}

// imageTokenCeiling bounds the prompt tokens one image can cost on any
// provider's vision models (OpenAI high detail tops out near 1,105 tokens for
// a 2048px image; Anthropic near 1,600).
const imageTokenCeiling = 1600

// promptBound is an upper bound on the prompt tokens of body: every BPE or
// SentencePiece token covers at least one byte, so the body's length bounds
// its text, and each image reference adds at most imageTokenCeiling.
func promptBound(body []byte) int64 {
	images := bytes.Count(body, []byte(`"image_url"`)) + bytes.Count(body, []byte(`"type":"image"`))
	return int64(len(body)) + int64(images)*imageTokenCeiling
}

// bytesPerToken is promptEstimate's calibrated rate. The BPE vocabularies
// of current models (cl100k, o200k, Claude's) average about four bytes of
// English text per token, fewer for code, other scripts and JSON
// punctuation; three keeps the estimate at or above the true count for
// most prompts, and settlement corrects it either way.
const bytesPerToken = 3

// promptEstimate is a realistic prompt-token count for default-mode holds:
// the body's text at bytesPerToken, images and other fixed extras of
// promptBound kept whole.
func promptEstimate(body []byte) int64 {
	n := int64(len(body))
	return promptBound(body) - n + n/bytesPerToken
}

// accounts are the budgets a request is charged to, most shared first.
func (m *Meter) accounts(p *auth.Principal, endUser, model string) []*ledger.Account {
	accts := make([]*ledger.Account, 0, 6)
	accts = append(accts, m.Book.Account(ledger.KindGlobal, "global", ledger.Spec{Spent: m.GlobalSpent, Budget: m.GlobalBudget}))
	if t := p.Team; t != nil {
		accts = append(accts, m.Book.Account(ledger.KindTeam, t.TeamID, ledger.Spec{Spent: t.Spend, Budget: t.MaxBudget, BudgetDuration: t.BudgetDuration, ResetAt: t.BudgetResetAt}))
	}
	if u := p.User; u != nil {
		accts = append(accts, m.Book.Account(ledger.KindUser, u.UserID, ledger.Spec{Spent: u.Spend, Budget: u.MaxBudget, Soft: u.SoftBudget, BudgetDuration: u.BudgetDuration, ResetAt: u.BudgetResetAt}))
	}
	if endUser != "" {
		spec := ledger.Spec{Budget: m.MaxEndUserBudget}
		if e, ok := m.Snap.EndUser(endUser); ok {
			spec = ledger.Spec{Spent: e.Spend, Budget: e.MaxBudget, BudgetDuration: e.BudgetDuration, ResetAt: e.BudgetResetAt}
			if e.MaxBudget == nil {
				spec.Budget = m.MaxEndUserBudget
			}
		}
		accts = append(accts, m.Book.Account(ledger.KindEndUser, endUser, spec))
	}
	if k := p.Key; k != nil {
		accts = append(accts, m.Book.Account(ledger.KindKey, k.TokenHash, ledger.Spec{Spent: k.Spend, Budget: k.MaxBudget, Soft: k.SoftBudget, BudgetDuration: k.BudgetDuration, ResetAt: k.BudgetResetAt}))
		if b, ok := k.ModelMaxBudget[model]; ok {
			accts = append(accts, m.Book.Account(ledger.KindKeyModel, k.TokenHash+"/"+model, ledger.Spec{Spent: k.ModelSpend[model], Budget: &b}))
		}
	}
	return accts
}

// estimate is what a request holds in default mode: its prompt counted at
// a calibrated rate (promptEstimate) and its output as max_tokens when the
// request sets it, else the longest of the deployment's recent answers —
// never more than the worst case; before any answer is known, the worst
// case. ReserveUpTo then holds at most what remains.
func (m *Meter) estimate(price pricing.Price, req *request, body []byte, deployment, model string, worst ledger.Amount) ledger.Amount {
	out := req.maxTokens
	if out <= 0 {
		learned, ok := m.outputs.estimate(deployment, model)
		if !ok {
			return worst
		}
		out = learned
	}
	return min(ledger.USD(price.WorstCase(promptEstimate(body), out)), worst)
}

// charge is one request's hold on its budgets.
type charge struct {
	m     *Meter
	res   ledger.Hold
	key   *ledger.Account
	price pricing.Price
	// unpriced is the upstream model when no price was known at admission;
	// the model the upstream says it served may still price it at settle.
	unpriced string
	target   *provider.Target
	upstream string // the model the upstream was asked for
	log      store.SpendLog
	prompt   int64 // estimate used when the upstream reports no usage
	settled  bool
	cost     float64 // what settle booked
}

// reserve holds the request's worst-case cost, or refuses it with the 400
// budget_exceeded error LiteLLM clients expect.
func (m *Meter) reserve(ctx context.Context, p *auth.Principal, req *request, t *provider.Target, model, callID string, body []byte, start time.Time) (*charge, error) {
	accts := m.accounts(p, req.user, model)
	upstream := t.UpstreamModel(model)
	price, priced := t.PriceFor(upstream)
	if !priced && m.RefuseUnpriced && budgeted(accts) {
		return nil, apierror.BadRequest("model", "model %q (deployment %s) has no known price, and general_settings.unpriced_models is refuse: a budgeted key may not call it; the operator can set input_cost_per_token and output_cost_per_token or model_info.base_model", req.model, t.D.ID)
	}
	bound := promptBound(body)
	worst := ledger.USD(price.WorstCase(bound, req.maxTokens))
	holder := m.Holder
	if holder == nil {
		holder = ledger.Local{}
	}
	mode := ledger.EnforceDefault
	if m.Mode != nil {
		mode = m.Mode(accts)
	}
	var res ledger.Hold
	var err error
	if mode == ledger.EnforceStrict {
		res, err = holder.Reserve(ctx, accts, worst)
	} else {
		res, err = holder.ReserveUpTo(ctx, accts, m.estimate(price, req, body, t.D.ID, upstream, worst))
	}
	if un := (*ledger.UnavailableError)(nil); errors.As(err, &un) {
		// Redis trouble, not a spent budget: 503 with Retry-After, which
		// SDKs retry (docs/spend-and-limits.md, "Redis trouble").
		e := apierror.Unavailable(err, "%v", err)
		e.Code, e.RetryAfter = "budget_unavailable", time.Second
		return nil, e
	}
	if err != nil {
		e := apierror.BudgetExceeded("%v", err)
		if ex := (*ledger.ExceededError)(nil); mode == ledger.EnforceStrict && req.maxTokens <= 0 && errors.As(err, &ex) && ex.Spent+ex.Reserved < ex.Budget {
			// Strict holds the worst case: say how to make it smaller.
			e.Message += fmt.Sprintf("; budget_enforcement is strict, so a request holds its worst case (every output token it could ask for): set max_tokens to make it fit (up to %d output tokens fit what remains)",
				price.OutputsWithin(bound, (ex.Budget-ex.Spent-ex.Reserved).Dollars()))
		}
		e.Cause = err
		return nil, e
	}
	c := &charge{m: m, res: res, price: price, target: t, upstream: upstream, prompt: int64(len(body)) / 4}
	if !priced {
		c.unpriced = upstream
	}
	if p.Key != nil {
		c.key = accts[len(accts)-1]
		if _, ok := p.Key.ModelMaxBudget[model]; ok {
			c.key = accts[len(accts)-2]
		}
		c.log.KeyHash = p.Key.TokenHash
		c.log.UserID = p.Key.UserID
		c.log.TeamID = p.Key.TeamID
	} else if p.KeyHash != "" && !p.Master {
		c.log.KeyHash = p.KeyHash
	}
	c.log.RequestID, c.log.EndUser, c.log.ModelGroup = callID, req.user, model
	c.log.Deployment, c.log.Provider, c.log.StartedAt = t.D.ID, t.D.Provider, start
	return c, nil
}

// settle books what res cost: the reported usage, or — when a stream broke
// off before its usage chunk — the prompt estimate and one token per content
// chunk received. A request that produced nothing releases its hold.
func (c *charge) settle(res *result) (cost float64) {
	if c == nil || c.settled {
		return 0
	}
	c.settled = true
	// res.usage.prompt counts every prompt token; pricing bills cache
	// creation apart from the rest.
	u := pricing.Usage{PromptTokens: res.usage.prompt - res.usage.cacheCreation, CompletionTokens: res.usage.completion,
		CachedTokens: res.usage.cached, CacheCreationTokens: res.usage.cacheCreation}
	switch {
	case res.hasUsage:
	case res.chunks > 0:
		u = pricing.Usage{PromptTokens: c.prompt, CompletionTokens: int64(res.chunks)}
	default:
		c.res.Release()
		return 0
	}
	if c.unpriced != "" {
		if p, ok := c.target.ServedPrice(res.served); ok {
			c.price, c.unpriced = p, ""
		}
	}
	if res.hasUsage && c.target != nil {
		c.m.outputs.observe(c.target.D.ID, c.upstream, res.usage.completion)
	}
	amount := ledger.USD(c.price.Cost(u)) // the ledger's precision is the books' precision
	cost = amount.Dollars()
	c.cost = cost
	for _, a := range c.res.Settle(amount) {
		if c.m.OnSoftBudget != nil {
			c.m.OnSoftBudget(a)
		}
	}
	l := c.log
	l.PromptTokens, l.CompletionTokens, l.CachedTokens = u.PromptTokens+u.CacheCreationTokens, u.CompletionTokens, u.CachedTokens
	l.Cost, l.Status = cost, res.status
	if res.clientGone {
		l.Status = 499
	}
	l.EndedAt = time.Now()
	l.LatencyMS = l.EndedAt.Sub(l.StartedAt).Milliseconds()
	if c.m.Writer != nil {
		c.m.Writer.Enqueue(l)
	}
	return cost
}

// release drops the hold of a request that never produced an answer.
func (c *charge) release() {
	if c != nil && !c.settled {
		c.settled = true
		c.res.Release()
	}
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

// costHeaders are set on responses whose cost is known before they are sent.
func (c *charge) costHeaders(h map[string][]string, cost float64) {
	h["X-Tollgate-Response-Cost"] = []string{strconv.FormatFloat(cost, 'g', -1, 64)}
	if c.unpriced == "" {
		delete(h, "X-Tollgate-Unpriced") // the served model priced it after all
	}
	if c.key != nil {
		h["X-Tollgate-Key-Spend"] = []string{strconv.FormatFloat(c.key.Spent().Dollars(), 'g', -1, 64)}
	}
}
