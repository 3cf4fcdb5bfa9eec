// Package ratelimit admits requests against request and token limits:
// LiteLLM's rpm/tpm limits and parallel-request slots, and agentgateway's
// token buckets. Every limit a request is subject to is checked and taken in
// one atomic step, in process or — with Redis — in one Lua script shared by
// every replica. When Redis is unreachable each replica falls back to its own
// counters and returns to the shared ones when Redis answers again.
package ratelimit

import (
	"fmt"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// Kind is what a rule counts.
type Kind uint8

// The kinds of rule.
const (
	// Requests counts requests in a sliding window (rpm_limit).
	Requests Kind = iota
	// Tokens counts tokens in a sliding window (tpm_limit): a request is
	// admitted while the window is under its limit (or, with a prompt
	// estimate, while the estimate fits) and charged its real usage after.
	Tokens
	// Parallel counts requests in flight (max_parallel_requests).
	Parallel
	// RequestBucket is a token bucket that each request draws one from.
	RequestBucket
	// TokenBucket is a token bucket drawn down by the tokens requests use;
	// it may go into debt, which later fills repay first.
	TokenBucket
)

// Counts tokens reports whether the rule is charged tokens rather than requests.

func (k Kind) isBucket() bool { return k == RequestBucket || k == TokenBucket }

// Scope is who a rule applies to.
type Scope struct {
	Entity store.Kind // key, user, team, end_user, key_model, team_member, organization, global
	ID     string
}

// Rule is one limit on one scope.
type Rule struct {
	Scope Scope
	Kind  Kind
	Limit int64 // per window; a bucket's capacity; parallel slots
	// Window is a sliding window's length, or a bucket's fill interval.
	Window time.Duration
	Fill   int64 // tokens a bucket gains per Window
	// Name is the setting the rule comes from (rpm_limit, localRateLimit[0], ...).
	Name string
	// Label is how messages name the scope's entity (a key's alias or
	// sk-...ABCD, a team's alias); "" means its ID.
	Label string
}

// inlineRules is how many rules a ticket holds in itself: a governed
// request's key, user and team limits fit (a key's rpm, tpm and parallel
// limits are three). A ticket takes any number of rules; those past
// inlineRules move its rules to the heap.
const inlineRules = 6

// State is a rule's standing after a decision.
type State struct {
	Remaining int64         // requests or tokens left (may be < 0 for a bucket in debt)
	Reset     time.Duration // until the limit is fully available again (windows: until the oldest use expires)
}

// Ticket is one request's admission: the caller fills Rules and Est, Admit
// fills States, and Done settles it. It holds any number of rules: up to
// inlineRules in its own storage (an admission in process then allocates
// nothing), more on the heap. rules, States, ents and gens are slices of
// length n into that storage, so a Ticket must not be copied once it has
// rules (a copy would share the original's); reset one with
// *t = Ticket{}. go vet's copylocks check reports a copy (noCopy).
type Ticket struct {
	_      noCopy
	rules  []Rule
	n      int
	States []State // one per rule, filled by an admission
	// Est is the prompt-token estimate charged to token rules at admission
	// (0 without tokenize).
	Est      int64
	lease    string    // Redis parallel-slot lease; "" when admitted locally
	at       time.Time // admission time (local): corrections hit the admission's slot
	atMS     int64     // admission time on the Redis clock, in milliseconds
	shared   bool      // admitted by Redis
	allotted bool      // admitted on this replica's allotments (Allotter)
	ents     []*entry
	gens     []*gen
	done     bool
	admitted bool

	ruleBuf  [inlineRules]Rule
	stateBuf [inlineRules]State
	entBuf   [inlineRules]*entry
	genBuf   [inlineRules]*gen
}

// noCopy makes go vet (copylocks) report a copied Ticket: its slices
// point into its own storage.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}

// Add appends a rule (one with a negative limit, unlimited, is left out).
// Every rule added is decided: there is no bound on their number.
func (t *Ticket) Add(r Rule) {
	if r.Limit < 0 {
		return
	}
	switch {
	case t.n == 0:
		t.rules, t.States, t.ents, t.gens = t.ruleBuf[:0], t.stateBuf[:0], t.entBuf[:0], t.genBuf[:0]
	case t.n == cap(t.rules):
		t.grow()
	}
	t.rules = append(t.rules, r)
	t.States = append(t.States, State{})
	t.ents = append(t.ents, nil)
	t.gens = append(t.gens, nil)
	t.n++
}

// grow moves the ticket's rules to the heap, with room for as many again
// (at least 24: a fully limited hierarchy's 21 rules and a few buckets, in
// one step).
func (t *Ticket) grow() {
	c := max(2*t.n, 4*inlineRules)
	t.rules = append(make([]Rule, 0, c), t.rules...)
	t.States = append(make([]State, 0, c), t.States...)
	t.ents = append(make([]*entry, 0, c), t.ents...)
	t.gens = append(make([]*gen, 0, c), t.gens...)
}

// Rules are the ticket's rules.
func (t *Ticket) Rules() []Rule { return t.rules[:t.n] }

// Tight reports whether the room this ticket's settlement gives back is
// room that a like request right after it needs: a parallel rule with no
// slot left, or a token rule with less left than the prompt estimate it
// charged (corrected only by Done). Such a ticket's request is settled
// before its answer is written (gateway: call.writeWhole), so that the
// client's next request, on any replica, does not find its own limit
// still taken.
func (t *Ticket) Tight() bool {
	for i := range t.n {
		switch t.rules[i].Kind {
		case Parallel:
			if t.States[i].Remaining <= 0 {
				return true
			}
		case Tokens, TokenBucket:
			if t.Est > 0 && t.States[i].Remaining < t.Est {
				return true
			}
		}
	}
	return false
}

// Shared reports whether the admission was decided on Redis.
func (t *Ticket) Shared() bool { return t.shared }

// Denied is a refusal: which rule, how much it had used, and when to retry.
type Denied struct {
	Rule       Rule
	Used       int64
	RetryAfter time.Duration
	// Never: the request alone needs more than the limit allows (its
	// prompt estimate exceeds the window or bucket); retrying cannot help.
	Never bool
	Need  int64
}

func (d *Denied) Error() string {
	r := d.Rule
	var what string
	switch r.Kind {
	case Requests:
		what = fmt.Sprintf("%d requests per %s (%s), used %d", r.Limit, per(r.Window), r.Name, d.Used)
	case Tokens:
		what = fmt.Sprintf("%d tokens per %s (%s), used %d", r.Limit, per(r.Window), r.Name, d.Used)
	case Parallel:
		what = fmt.Sprintf("%d parallel requests (%s), in flight %d", r.Limit, r.Name, d.Used)
	case RequestBucket:
		what = fmt.Sprintf("a bucket of %d requests refilling %d every %s (%s), left %d", r.Limit, r.Fill, r.Window, r.Name, r.Limit-d.Used)
	case TokenBucket:
		what = fmt.Sprintf("a bucket of %d tokens refilling %d every %s (%s), left %d", r.Limit, r.Fill, r.Window, r.Name, r.Limit-d.Used)
	}
	if d.Never {
		return fmt.Sprintf("rate limit exceeded for %s: this request's estimated %d tokens exceed %s", r.Scope.describe(r.Label), d.Need, what)
	}
	return fmt.Sprintf("rate limit exceeded for %s: %s; retry in %s", r.Scope.describe(r.Label), what, d.RetryAfter.Round(time.Second).String())
}

// describe names a scope for people: "key my-alias", "team core-infra",
// "key sk-...ABCD on gpt-4", "the gateway".
func (s Scope) describe(label string) string {
	id := s.ID
	if label != "" {
		id = label
	}
	switch s.Entity {
	case store.KindGlobal, "":
		return "the gateway"
	case store.KindEndUser:
		return "end user " + id
	case store.KindKeyModel:
		model := s.ID
		if i := strings.LastIndexByte(model, '/'); i >= 0 {
			model = model[i+1:]
		}
		if label == "" {
			id = "(unnamed)"
		}
		return "key " + id + " on " + model
	}
	return string(s.Entity) + " " + id
}

func per(d time.Duration) string {
	switch d {
	case time.Minute:
		return "minute"
	case time.Hour:
		return "hour"
	case 24 * time.Hour:
		return "day"
	}
	return d.String()
}

// slots is the number of sub-windows a sliding window is kept in. A use is
// remembered for between 60 and 61 slots' time, so no window-length interval
// ever holds more than the limit; capacity returns up to 1/60 of the window
// late.
const slots = 60

// slotLen is the length of one sub-window of w.
func slotLen(w time.Duration) time.Duration {
	return max(w/slots, time.Millisecond)
}
