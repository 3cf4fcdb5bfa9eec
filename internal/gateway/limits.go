package gateway

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/ratelimit"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/tokens"
)

// Limits admit calls under the rate limits: admit takes a call's place
// under every limit that applies, or refuses it with a 429 (a nil ticket:
// none applies); done gives the place back with the tokens the call used.
type Limits interface {
	admit(c *call, t *provider.Target) (*ratelimit.Ticket, error)
	done(tk *ratelimit.Ticket, used int64)
}

// RateLimits are the Limits of a gateway with a limiter: each key's,
// user's, team's and end user's own limits, and the gateway's besides.
type RateLimits struct {
	Limiter *ratelimit.Limiter
	// GlobalParallel bounds requests in flight gateway-wide (0: none).
	GlobalParallel int64
	// Buckets are agentgateway localRateLimit token buckets.
	Buckets []config.LocalRateLimit
	// OnRefused is told of each refusal, for metrics.
	OnRefused func(d *ratelimit.Denied)
}

// bucketNames are "localRateLimit[i]", built once.
var bucketNames = func() []string {
	n := make([]string, 32)
	for i := range n {
		n[i] = bucketName(i)
	}
	return n
}()

// bucketName is the rule name of the i-th localRateLimit: part of its
// counters' key, so each bucket has its own.
func bucketName(i int) string { return "localRateLimit[" + strconv.Itoa(i) + "]" }

// window adds the rules of an entity's own limits: rpm_limit, tpm_limit
// and max_parallel_requests, those it sets.
func window(scope ratelimit.Scope, label string, l *store.Limits, tk *ratelimit.Draft) {
	if l.RPMLimit != nil {
		tk.Add(ratelimit.Rule{Scope: scope, Kind: ratelimit.Requests, Limit: *l.RPMLimit, Window: time.Minute, Name: "rpm_limit", Label: label})
	}
	if l.TPMLimit != nil {
		tk.Add(ratelimit.Rule{Scope: scope, Kind: ratelimit.Tokens, Limit: *l.TPMLimit, Window: time.Minute, Name: "tpm_limit", Label: label})
	}
	if l.MaxParallelRequests != nil {
		tk.Add(ratelimit.Rule{Scope: scope, Kind: ratelimit.Parallel, Limit: *l.MaxParallelRequests, Name: "max_parallel_requests", Label: label})
	}
}

// rules fills tk with every limit the request is subject to.
func (l *RateLimits) rules(p *auth.Principal, req *request, e *store.EndUser, model string, tk *ratelimit.Draft) {
	if l.GlobalParallel > 0 {
		tk.Add(ratelimit.Rule{Scope: ratelimit.Scope{Entity: store.KindGlobal}, Kind: ratelimit.Parallel, Limit: l.GlobalParallel,
			Name: "global_max_parallel_requests"})
	}
	if k := p.Key; k != nil {
		label := k.KeyName
		if k.KeyAlias != nil && *k.KeyAlias != "" {
			label = *k.KeyAlias
		}
		window(ratelimit.Scope{Entity: store.KindKey, ID: k.TokenHash}, label, &k.Limits, tk)
		rpm, hasRPM := k.ModelRPMLimit[model]
		tpm, hasTPM := k.ModelTPMLimit[model]
		if hasRPM || hasTPM {
			scope := ratelimit.Scope{Entity: store.KindKeyModel, ID: k.TokenHash + "/" + model}
			if hasRPM {
				tk.Add(ratelimit.Rule{Scope: scope, Kind: ratelimit.Requests, Limit: rpm, Window: time.Minute, Name: "model_rpm_limit", Label: label})
			}
			if hasTPM {
				tk.Add(ratelimit.Rule{Scope: scope, Kind: ratelimit.Tokens, Limit: tpm, Window: time.Minute, Name: "model_tpm_limit", Label: label})
			}
		}
	}
	if u := p.User; u != nil {
		window(ratelimit.Scope{Entity: store.KindUser, ID: u.UserID}, u.UserID, &u.Limits, tk)
	}
	if t := p.Team; t != nil {
		label := t.TeamID
		if t.TeamAlias != "" {
			label = t.TeamAlias
		}
		window(ratelimit.Scope{Entity: store.KindTeam, ID: t.TeamID}, label, &t.Limits, tk)
		if b := p.MemberBudget; b != nil {
			window(ratelimit.Scope{Entity: store.KindTeamMember, ID: t.TeamID + "/" + p.Key.UserID}, label+"/"+p.Key.UserID, &b.Limits, tk)
		}
	}
	if o, b := p.Org, p.OrgBudget; o != nil && b != nil {
		window(ratelimit.Scope{Entity: store.KindOrganization, ID: o.OrganizationID}, o.OrganizationID, &b.Limits, tk)
	}
	if e != nil {
		window(ratelimit.Scope{Entity: store.KindEndUser, ID: e.UserID}, e.UserID, &e.Limits, tk)
	}
	for i, b := range l.Buckets {
		scope, label, ok := bucketScope(b.Scope, p, req)
		if !ok {
			continue
		}
		kind := ratelimit.TokenBucket
		if b.Type == "requests" {
			kind = ratelimit.RequestBucket
		}
		var name string
		if i < len(bucketNames) {
			name = bucketNames[i]
		} else {
			name = bucketName(i) // past the names built once
		}
		tk.Add(ratelimit.Rule{Scope: scope, Kind: kind, Limit: b.MaxTokens, Fill: b.TokensPerFill, Window: b.FillInterval, Name: name, Label: label})
	}
}

// bucketScope is whose bucket a localRateLimit is for this request; a
// request with no such entity (no team, say) is not subject to it.
func bucketScope(scope string, p *auth.Principal, req *request) (ratelimit.Scope, string, bool) {
	switch scope {
	case "key":
		if p.KeyHash == "" {
			return ratelimit.Scope{}, "", false
		}
		label := ""
		if p.Key != nil {
			label = p.Key.KeyName
		}
		return ratelimit.Scope{Entity: store.KindKey, ID: p.KeyHash}, label, true
	case "user":
		id := ""
		switch {
		case p.Key != nil:
			id = p.Key.UserID
		case p.Static != nil:
			id, _ = p.Static.Metadata["user"].(string)
		}
		return ratelimit.Scope{Entity: store.KindUser, ID: id}, id, id != ""
	case "team":
		if p.Key == nil || p.Key.TeamID == "" {
			return ratelimit.Scope{}, "", false
		}
		return ratelimit.Scope{Entity: store.KindTeam, ID: p.Key.TeamID}, p.Key.TeamID, true
	case "end_user":
		return ratelimit.Scope{Entity: store.KindEndUser, ID: req.user}, req.user, req.user != ""
	}
	return ratelimit.Scope{Entity: store.KindGlobal}, "", true
}

// estimate is the prompt-token count charged at admission: counted with
// the model's tokenizer when the deployment sets tokenize, else 0 (token
// limits then admit while any budget is left and charge the usage after).
func estimate(t *provider.Target, req *request, model string) int64 {
	if !t.D.Tokenize {
		return 0
	}
	return countPrompt(req, model)
}

// countPrompt counts a request's prompt tokens with model's tokenizer: the
// messages (and an Anthropic system prompt), else the prompt or input (and
// the Responses API's instructions).
func countPrompt(req *request, model string) int64 {
	if m := req.obj.Get("messages"); m != nil {
		n := tokens.Messages(model, m)
		if sys := req.obj.Get("system"); sys != nil && string(sys) != "null" {
			if s, ok := req.obj.String("system"); ok {
				n += tokens.Text(model, s)
			} else {
				n += tokens.Text(model, string(sys))
			}
		}
		return n
	}
	var n int64
	if s, ok := req.obj.String("instructions"); ok { // the Responses API's system prompt
		n = tokens.Text(model, s)
	}
	for _, k := range []string{"prompt", "input"} {
		if s, ok := req.obj.String(k); ok {
			return n + tokens.Text(model, s)
		}
		if raw := req.obj.Get(k); raw != nil {
			return n + int64(len(raw)) // token arrays, batches, input items: one token per byte bounds them
		}
	}
	return n
}

// drafts recycle the drafts a request's rules are gathered in
// (ratelimit.Draft, about 2.3 KB): a request no limit applies to (a
// gateway without keys, a key without limits) allocates nothing for them,
// and a rate-limited one allocates only its ticket, sized to its rules (a
// key's rpm, tpm and parallel limits: 512 bytes, where a ticket with room
// for six rules inline was 944). The ticket goes to the limiter and is
// never recycled: a Redis settlement may read it after the request
// returns. A draft is reset (its rules' strings dropped) before it goes
// back.
var drafts = sync.Pool{New: func() any { return new(ratelimit.Draft) }}

// admit takes the request's place under every limit, or refuses it with a
// 429 that says which limit, how far it is used and when to retry.
func (l *RateLimits) admit(c *call, t *provider.Target) (*ratelimit.Ticket, error) {
	tk := l.ticket(c, t)
	if tk == nil {
		return nil, nil
	}
	if err := l.decide(c, tk); err != nil {
		return nil, err
	}
	return tk, nil
}

// ticket is the request's ticket with every limit it is subject to, not
// yet decided; nil when none applies.
func (l *RateLimits) ticket(c *call, t *provider.Target) *ratelimit.Ticket {
	if l.Limiter == nil {
		return nil
	}
	d := drafts.Get().(*ratelimit.Draft)
	l.rules(c.p, c.req, c.endUser, c.model, d)
	var tk *ratelimit.Ticket
	if len(d.Rules()) > 0 {
		tk = d.Ticket()
	}
	d.Reset()
	drafts.Put(d)
	if tk == nil {
		return nil
	}
	tk.Est = estimate(t, c.req, c.model)
	return tk
}

// decide admits tk on its own (not with a budget hold), or refuses it.
func (l *RateLimits) decide(c *call, tk *ratelimit.Ticket) error {
	if d := l.Limiter.Admit(c.r.Context(), tk); d != nil {
		return l.refusal(d)
	}
	return nil
}

// refusal is the 429 of a refused admission.
func (l *RateLimits) refusal(d *ratelimit.Denied) error {
	if l.OnRefused != nil {
		l.OnRefused(d)
	}
	e := apierror.RateLimited(d.RetryAfter, "%s", d.Error())
	if d.Never {
		e.Code = "request_exceeds_limit"
	}
	e.Header = map[string]string{}
	kind := "requests"
	if d.Rule.Kind == ratelimit.Tokens || d.Rule.Kind == ratelimit.TokenBucket {
		kind = "tokens"
	}
	e.Header["x-ratelimit-limit-"+kind] = strconv.FormatInt(d.Rule.Limit, 10)
	e.Header["x-ratelimit-remaining-"+kind] = strconv.FormatInt(max(d.Rule.Limit-d.Used, 0), 10)
	e.Header["x-ratelimit-reset-"+kind] = formatReset(d.RetryAfter)
	return e
}

// done gives back tk's place with the tokens the call used.
func (l *RateLimits) done(tk *ratelimit.Ticket, used int64) { l.Limiter.Done(tk, used) }

// limitHeaders reports the tightest request and token limits of an
// admitted request, as OpenAI does. The limits are a key's (the same
// request after request: cachedInt); the remaining counts and the resets
// are formatted into one buffer and made one string, whose parts are the
// values: two allocations (that string and the values' slice) for the six
// headers.
func limitHeaders(h http.Header, tk *ratelimit.Ticket) {
	if tk == nil {
		return
	}
	var (
		best  [2]ratelimit.State
		found = [2]int{-1, -1}
	)
	for i := range 2 {
		for j, r := range tk.Rules() {
			isTok := r.Kind == ratelimit.Tokens || r.Kind == ratelimit.TokenBucket
			if r.Kind == ratelimit.Parallel || isTok != (i == 1) {
				continue
			}
			if found[i] < 0 || tk.States[j].Remaining < best[i].Remaining {
				best[i], found[i] = tk.States[j], j
			}
		}
	}
	if found[0] < 0 && found[1] < 0 {
		return
	}
	var (
		buf  [96]byte
		ends [5]int // ends[1+2i] and ends[2+2i]: where kind i's remaining and reset end in b
	)
	b := buf[:0]
	for i := range 2 {
		if found[i] >= 0 {
			b = strconv.AppendInt(b, max(best[i].Remaining, 0), 10)
			ends[1+2*i] = len(b)
			b = appendReset(b, best[i].Reset)
		}
		ends[2+2*i] = len(b)
	}
	all := string(b)
	vals := make([]string, 6) // one backing array for the six values
	for i := range 2 {
		if found[i] < 0 {
			continue
		}
		v := vals[3*i : 3*i+3 : 3*i+3]
		v[0] = cachedInt(tk.Rules()[found[i]].Limit)
		v[1] = all[ends[2*i]:ends[1+2*i]]
		v[2] = all[ends[1+2*i]:ends[2+2*i]]
		// Canonical keys by map assignment (as headers.go does), each value
		// a slice of capacity 1 so that an Add reallocates.
		k := &limitHeaderKeys[i]
		h[k[0]], h[k[1]], h[k[2]] = v[0:1:1], v[1:2:2], v[2:3:3]
	}
}

// limitHeaderKeys are OpenAI's rate-limit headers in canonical form, for
// requests and for tokens.
var limitHeaderKeys = [2][3]string{
	{"X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests"},
	{"X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens"},
}

// formatReset writes a duration as OpenAI's reset headers do ("6m0s", "1s").
func formatReset(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return d.Round(time.Millisecond).String()
}

// appendReset appends formatReset(d) to b: d (0 when negative) rounded to
// the millisecond as time.Duration.String writes it ("0s", "250ms",
// "1.5s", "1m0s", "2h3m4.005s"), without the string String allocates.
// TestAppendResetMatchesString holds it to formatReset.
func appendReset(b []byte, d time.Duration) []byte {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Millisecond)
	if d%time.Millisecond != 0 { // Round saturated at the largest Duration
		return append(b, d.String()...)
	}
	ms := int64(d / time.Millisecond)
	switch {
	case ms == 0:
		return append(b, "0s"...)
	case ms < 1000:
		b = strconv.AppendInt(b, ms, 10)
		return append(b, "ms"...)
	}
	s, frac := ms/1000, ms%1000
	if h := s / 3600; h > 0 {
		b = strconv.AppendInt(b, h, 10)
		b = append(b, 'h')
	}
	if s >= 60 {
		b = strconv.AppendInt(b, s/60%60, 10)
		b = append(b, 'm')
	}
	b = strconv.AppendInt(b, s%60, 10)
	if frac != 0 {
		b = append(b, '.', byte('0'+frac/100))
		if frac%100 != 0 {
			b = append(b, byte('0'+frac/10%10))
			if frac%10 != 0 {
				b = append(b, byte('0'+frac%10))
			}
		}
	}
	return append(b, 's')
}

// cachedInt is strconv.FormatInt(n, 10), kept for the last numbers asked
// in a small table: the limits a response reports (a key's tpm, rpm and
// the x-ratelimit-limit-* headers) are the same numbers request after
// request, and formatting them allocated a string each time.
func cachedInt(n int64) string {
	if n >= 0 && n < 100 {
		return strconv.FormatInt(n, 10) // strconv's own constant strings
	}
	return intStrings.get(uint64(n), func() string { return strconv.FormatInt(n, 10) })
}

// cachedBudget is strconv.FormatFloat(v, 'g', -1, 64) (a key's
// max_budget), kept as cachedInt keeps numbers.
func cachedBudget(v float64) string {
	return floatStrings.get(math.Float64bits(v), func() string { return strconv.FormatFloat(v, 'g', -1, 64) })
}

// stringTable keeps 64 entries, each the last value (by its bits) whose
// hash fell there and its string.
type stringTable [64]atomic.Pointer[cachedString]

type cachedString struct {
	bits uint64
	s    string
}

func (t *stringTable) get(bits uint64, format func() string) string {
	e := &t[bits*0x9e3779b97f4a7c15>>58]
	if c := e.Load(); c != nil && c.bits == bits {
		return c.s
	}
	s := format()
	e.Store(&cachedString{bits: bits, s: s})
	return s
}

// intStrings and floatStrings are cachedInt's and cachedBudget's tables.
var intStrings, floatStrings stringTable

// usedTokens is what a finished request used, for token limits: the
// usage booked (reported and clamped, or estimated), or — when a stream
// broke off before its usage — the estimate and one token per chunk.
func usedTokens(res *result, est int64) int64 {
	if res.hasUsage || res.estimated {
		return res.usage.Prompt + res.usage.Completion
	}
	if res.chunks > 0 {
		return est + max(int64(res.chunks), (res.text+3)/4)
	}
	return 0 // nothing was produced
}
