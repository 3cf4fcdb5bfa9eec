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

// State is a rule's standing after a decision.
type State struct {
	Remaining int64         // requests or tokens left (may be < 0 for a bucket in debt)
	Reset     time.Duration // until the limit is fully available again (windows: until the oldest use expires)
}

// Ticket is one request's admission: the caller fills Rules and Est, Admit
// fills States, and Done settles it. It holds any number of rules. One made
// by Draft.Ticket holds them in the same allocation as itself, sized to
// them (a key's rpm, tpm and parallel limits: 504 bytes, a 512-byte
// block; see sized); one
// filled by Add grows them on the heap. rules, States and al are slices of
// length n into that storage, so a Ticket must not be copied once it has
// rules (a copy would share the original's); reset one with
// *t = Ticket{}. go vet's copylocks check reports a copy (noCopy).
//
// A ticket is never recycled once it has gone to the limiter: a Redis
// settlement, or a lease's release, may read it after the request returns.
type Ticket struct {
	_      noCopy
	rules  []Rule  // (its length is the rule count, n below)
	States []State // one per rule, filled by an admission
	al     []allot // one per rule: its allotment, when admitted on one (Allotter)
	// Est is the prompt-token estimate charged to token rules at admission
	// (0 without tokenize).
	Est      int64
	lease    string // Redis parallel-slot lease; "" when admitted locally
	at       int64  // admission time (local, Unix ns): corrections hit the admission's slot
	atMS     int64  // admission time on the Redis clock, in milliseconds
	shared   bool   // admitted by Redis
	allotted bool   // admitted on this replica's allotments (Allotter)
	done     bool
	admitted bool
}

// allot is a rule's allotment on a ticket admitted on allotments: its
// entry, and for a window the allotment it took from.
type allot struct {
	e *entry
	g *gen
}

// noCopy makes go vet (copylocks) report a copied Ticket: its slices
// point into its own storage.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}

// Add appends a rule (one with a negative limit, unlimited, is left out).
// Every rule added is decided: there is no bound on their number. A ticket
// filled by Add keeps its rules on the heap, apart from itself (three
// allocations as it grows); Draft.Ticket makes one in a single allocation.
func (t *Ticket) Add(r Rule) {
	if r.Limit < 0 {
		return
	}
	if len(t.rules) == cap(t.rules) {
		t.grow(max(2*len(t.rules), 4))
	}
	t.put(r)
}

// put appends r; there is room for it.
func (t *Ticket) put(r Rule) {
	t.rules = append(t.rules, r)
	t.States = append(t.States, State{})
	t.al = append(t.al, allot{})
}

// grow moves the ticket's rules to the heap, with room for c.
func (t *Ticket) grow(c int) {
	t.rules = append(make([]Rule, 0, c), t.rules...)
	t.States = append(make([]State, 0, c), t.States...)
	t.al = append(make([]allot, 0, c), t.al...)
}

// use gives t its rules' storage: r, s and a, of one length.
func (t *Ticket) use(r []Rule, s []State, a []allot) *Ticket {
	t.rules, t.States, t.al = r[:0], s[:0], a[:0]
	return t
}

// Blocks of a ticket and its storage for n rules, one allocation each:
// the ticket's 120 bytes and 128 a rule (a Rule's 96, a State's 16, an
// allot's 16): 248, 376 and 504 bytes for 1 to 3 rules (size classes 256,
// 384, 512), and from 4 rules, with the 8-byte header the allocator puts
// on an object of pointers past 512 bytes, exactly the classes 640, 768,
// 896, 1,024 and 1,152. A ticket points into its own block: the block
// lives as long as the ticket does.
type (
	ticket1 struct {
		t Ticket
		r [1]Rule
		s [1]State
		a [1]allot
	}
	ticket2 struct {
		t Ticket
		r [2]Rule
		s [2]State
		a [2]allot
	}
	ticket3 struct {
		t Ticket
		r [3]Rule
		s [3]State
		a [3]allot
	}
	ticket4 struct {
		t Ticket
		r [4]Rule
		s [4]State
		a [4]allot
	}
	ticket5 struct {
		t Ticket
		r [5]Rule
		s [5]State
		a [5]allot
	}
	ticket6 struct {
		t Ticket
		r [6]Rule
		s [6]State
		a [6]allot
	}
	ticket7 struct {
		t Ticket
		r [7]Rule
		s [7]State
		a [7]allot
	}
	ticket8 struct {
		t Ticket
		r [8]Rule
		s [8]State
		a [8]allot
	}
)

// sizedRules is the most rules a ticket holds in its own block; one with
// more is a ticket and its rules' three slices (four allocations).
const sizedRules = 8

// sized is an empty ticket with room for n rules, in one allocation when
// n <= sizedRules.
func sized(n int) *Ticket {
	switch n {
	case 0:
		return new(Ticket)
	case 1:
		b := new(ticket1)
		return b.t.use(b.r[:], b.s[:], b.a[:])
	case 2:
		b := new(ticket2)
		return b.t.use(b.r[:], b.s[:], b.a[:])
	case 3:
		b := new(ticket3)
		return b.t.use(b.r[:], b.s[:], b.a[:])
	case 4:
		b := new(ticket4)
		return b.t.use(b.r[:], b.s[:], b.a[:])
	case 5:
		b := new(ticket5)
		return b.t.use(b.r[:], b.s[:], b.a[:])
	case 6:
		b := new(ticket6)
		return b.t.use(b.r[:], b.s[:], b.a[:])
	case 7:
		b := new(ticket7)
		return b.t.use(b.r[:], b.s[:], b.a[:])
	case 8:
		b := new(ticket8)
		return b.t.use(b.r[:], b.s[:], b.a[:])
	}
	t := new(Ticket)
	t.grow(n)
	return t
}

// draftRules is how many rules a Draft holds in itself: a fully limited
// hierarchy's are 21, and a few buckets.
const draftRules = 24

// Draft gathers a request's rules before its ticket is made (Ticket), so
// that the ticket is sized to them. A caller keeps Drafts to reuse (a
// sync.Pool): a Draft is about 2.3 KB, and holds up to draftRules rules
// without allocating. Like a Ticket it must not be copied (noCopy).
type Draft struct {
	_     noCopy
	rules []Rule
	buf   [draftRules]Rule
}

// Add appends a rule (one with a negative limit, unlimited, is left out),
// as Ticket.Add does.
func (d *Draft) Add(r Rule) {
	if r.Limit < 0 {
		return
	}
	if d.rules == nil {
		d.rules = d.buf[:0]
	}
	d.rules = append(d.rules, r)
}

// Rules are the rules added since the last Reset.
func (d *Draft) Rules() []Rule { return d.rules }

// Ticket is a new ticket with d's rules, in one allocation sized to them
// (up to sizedRules rules); d is unchanged. The ticket is the caller's,
// and d may be reset and reused at once.
func (d *Draft) Ticket() *Ticket {
	n := len(d.rules)
	t := sized(n)
	t.rules = append(t.rules, d.rules...) // one copy; the states and allotments are new, zero
	t.States, t.al = t.States[:n], t.al[:n]
	return t
}

// Reset empties d for its next request. The rules are cleared: a Draft
// kept for reuse must not keep a request's strings (a scope's ID may be a
// slice of the request's principal) alive.
func (d *Draft) Reset() {
	if cap(d.rules) > len(d.buf) {
		clear(d.buf[:]) // the rules added before they moved to the heap
	}
	clear(d.rules)
	d.rules = d.buf[:0]
}

// Rules are the ticket's rules.
func (t *Ticket) Rules() []Rule { return t.rules }

// Tight reports whether the room this ticket's settlement gives back is
// room that a like request right after it needs: a parallel rule with no
// slot left, or a token rule with less left than the prompt estimate it
// charged (corrected only by Done). Such a ticket's request is settled
// before its answer is written (gateway: call.writeWhole), so that the
// client's next request, on any replica, does not find its own limit
// still taken.
func (t *Ticket) Tight() bool {
	for i := range len(t.rules) {
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

// Taken reports whether t holds an admission not given back yet (its
// parallel slot among it): Done gives it back. A ticket refused, or whose
// admission a fused script did not take (Gate.Admitted), holds none; nor
// does nil.
func (t *Ticket) Taken() bool { return t != nil && t.admitted && !t.done }

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
