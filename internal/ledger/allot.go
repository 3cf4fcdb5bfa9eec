package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/lifecycle"
	"github.com/tollgate/tollgate/internal/rscript"
)

// Allotted is a Holder that decides a request's budget holds in process
// against this replica's allotments (docs/allotments.md, step 1: budgets
// only). An allotment is a share of one account's budget that this
// replica holds on Redis under a lease of its own, like any hold: spend +
// holds on Redis still never pass a budget, and a replica decides a
// request locally only when its worst case fits what it holds.
//
// A request whose every budgeted account has an open allotment with room
// for its worst case is held in process (atomics, no Redis call). Any other
// request - an account with no allotment yet, one whose allotment is
// full, one whose remaining budget is too small to allot (a few holds per
// live replica: fresh small keys, the end of a budget), a request of
// unknown price (held up to what remains) - takes Shared's per-request
// hold, unchanged, and a full or new allotment asks the flusher to grow
// it now rather than at the next tick.
//
// Every Every (100 ms) one script for all accounts (allotScript) books the
// spend decided locally since the last flush into 'spent', moves it out of
// the allotment, and resizes the allotment: the recent peak of what local
// requests held in flight, plus about four times the recent peak of what
// this replica asked for on the account in an interval (allotIntervals;
// a peak forgets an eighth of itself an interval), at least one request's
// hold, at most remaining / (2 × alive replicas). A flush's booked spend
// goes tagged (a carry marker, carry.go): a flush whose answer is lost is
// sent again, as is, and applied once. An allotment idle for a few
// intervals shrinks to what requests in flight still hold; Close returns
// every allotment. An allotment whose flush has not been answered for
// localFor decides nothing locally.
type Allotted struct {
	s     *Shared
	every time.Duration
	ttl   time.Duration

	mu  sync.Mutex
	all []*allotment // every allotment, for the flusher

	kick    chan struct{}
	flushMu sync.Mutex // one flush at a time
	seq     int64      // flushes sent (flushMu)
	built   time.Time  // when the last flush was built (flushMu)
	pending *flushCall // a flush whose answer was lost (flushMu)
	closed  atomic.Bool

	// Flushes counts flush scripts sent; Local and Remote count holds
	// decided in process and per request (tests and metrics). TopUps
	// counts allotments a flush's answer made larger than they were (one
	// per account and flush). RefusedWithRoom counts per-request holds
	// Redis refused (strict) or held short of their worst case (default
	// mode's end of a budget) while this replica's own allotment of one of
	// the request's accounts held room no request used: that room is then
	// given back and the request asked once more (reserveWith).
	Flushes, Local, Remote, TopUps, RefusedWithRoom atomic.Int64
}

// Held reports what this replica's allotments hold on Redis now: the
// amount summed over accounts and the count of accounts with an allotment
// (metrics, read at scrape time).
func (x *Allotted) Held() (amount Amount, accounts int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, al := range x.all {
		if n := al.size.Load(); n > 0 {
			amount += Amount(n)
			accounts++
		}
	}
	return amount, accounts
}

// GatedHolder is a Holder that can decide a rate-limit gate with a hold
// (Shared, Allotted): ReserveGated's decided says whether it did.
type GatedHolder interface {
	Holder
	ReserveGated(ctx context.Context, accounts []*Account, q Ask, g Gate) (h Hold, decided bool, err error)
}

var (
	_ GatedHolder = (*Allotted)(nil)
	_ GatedHolder = (*Shared)(nil)
)

// AllotOptions configure an Allotted holder.
type AllotOptions struct {
	// Every is the flush interval (100 ms when 0).
	Every time.Duration
	// LeaseTTL is an allotment's lease on Redis, renewed at every flush
	// (when 0, the Shared holder's LeaseTTL, as a per-request hold's: 15
	// min): a replica that dies returns its allotments then.
	LeaseTTL time.Duration
}

// localFor is how long after its last answered flush an allotment still
// decides requests locally: half its lease, at most allotLocalFor. The
// lease is as long as a per-request hold's (Shared.LeaseTTL, 15 min),
// counted from the last moment a request may be decided against it (it is
// set to ttl + localFor at each flush), so that a request decided against
// an allotment is covered on Redis as long as one held per request at the
// same moment would be (a replica cut off from Redis while a long request
// runs); the local decisions stop much sooner, so that an outage is not
// spent on allotments for minutes.
func (x *Allotted) localFor() time.Duration { return min(x.ttl/2, allotLocalFor) }

// allotLocalFor bounds localFor.
const allotLocalFor = 30 * time.Second

// allotFew is how many holds per live replica a budget must have left for
// an allotment; below it, requests hold per request as without allotments.
const allotFew = 4

// allotIntervals is how many flush intervals of asks an allotment is
// sized for (plus what requests in flight hold): room for a burst of four
// times the recent peak interval's asks before the next flush answers (a
// flush late under load, the arrivals of a pause), which at twice sent
// such bursts' rest to the per-request script, two round trips each
// (docs/performance.md, branches allotbudget and allotpeak). What a
// replica may hold is still at most remaining / (2 × alive replicas), and
// none near a budget's end (allotFew), so the sharing rule and the bounds
// do not move.
const allotIntervals = 4

// allotForget is the share of a recent peak (of asks, of holds in flight)
// forgotten an interval: an eighth, as the rate limiter's parallel
// allotments do (ratelimit.Allotter), so that a burst is remembered for
// a few dozen intervals and an account gone quiet shrinks back.
const allotForget = 8

// allotIdle is how many flush intervals an allotment stays whole without
// requests before it shrinks to what requests in flight hold.
const allotIdle = 5

// NewAllotted returns an Allotted holder over s; Run flushes it.
func NewAllotted(s *Shared, o AllotOptions) *Allotted {
	if o.Every <= 0 {
		o.Every = 100 * time.Millisecond
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = s.LeaseTTL
	}
	return &Allotted{s: s, every: o.Every, ttl: o.LeaseTTL, kick: make(chan struct{}, 1)}
}

// Shared is the per-request holder under x.
func (x *Allotted) Shared() *Shared { return x.s }

// allotment is this replica's share of one account's budget.
type allotment struct {
	a     *Account
	lease string
	// size is the allotment's lease amount on Redis; used is what local
	// holds in flight and spend booked but not yet flushed take of it. A
	// local hold is a compare-and-swap of used under size.
	size, used atomic.Int64
	booked     atomic.Int64 // spend settled locally since the last flush's claim
	asked      atomic.Int64 // hold amounts asked on the account this interval (either path)
	holding    atomic.Int64 // what local holds in flight hold (worst cases)
	peak       atomic.Int64 // the largest holding this interval
	count      atomic.Int64 // requests that asked this interval
	big        atomic.Int64 // largest hold asked this interval
	open       atomic.Bool  // the last flush granted an allotment: decide locally
	until      atomic.Int64 // Shared.clock: local decisions stop then (lease renewal overdue)
	closedNow  atomic.Bool  // the last flush refused one (remaining too small): no kicks
	drain      atomic.Bool  // a request was refused on Redis while this held room: return it
	// budget is the budget the last answered flush sized the allotment
	// on: a lower one (an operator's edit, heard before the next flush)
	// decides nothing locally until a flush on it answers, or requests
	// after the edit would pass it against room sized on the old one.
	budget atomic.Int64
	// flusher's own
	idle    int
	lastBig int64
	// recent peaks: the largest of recent intervals' asks (scaled to an
	// interval) and of holding, allotForget-th forgotten an interval.
	askHigh, holdHigh int64
	marked            string // the marker of the last flush that booked spend here
}

// allotOf returns a's allotment, made on first use.
func (x *Allotted) allotOf(a *Account) *allotment {
	if al := a.remote().allot.Load(); al != nil {
		return al
	}
	// Named 'al.': a sweep that drops it marks the account for a reseed.
	al := &allotment{a: a, lease: "al." + newLease()}
	if !a.remote().allot.CompareAndSwap(nil, al) {
		return a.remote().allot.Load()
	}
	x.mu.Lock()
	x.all = append(x.all, al)
	x.mu.Unlock()
	return al
}

// CarryUnheld is Shared.CarryUnheld.
func (x *Allotted) CarryUnheld(accounts []*Account) { x.s.CarryUnheld(accounts) }

// Reserve holds amount or refuses (strict).
func (x *Allotted) Reserve(ctx context.Context, accounts []*Account, amount Amount) (Hold, error) {
	h, _, err := x.reserveWith(ctx, accounts, ask{mode: holdStrict, amount: max(amount, 0)}, nil)
	return h, err
}

// ReserveUpTo holds up to amount (default enforcement, unknown price):
// always per request.
func (x *Allotted) ReserveUpTo(ctx context.Context, accounts []*Account, amount Amount) (Hold, error) {
	h, _, err := x.reserveWith(ctx, accounts, ask{mode: holdUpTo, amount: max(amount, 0)}, nil)
	return h, err
}

// ReserveFlex holds f: locally when the worst case fits the allotments.
func (x *Allotted) ReserveFlex(ctx context.Context, accounts []*Account, f Flex) (Hold, error) {
	h, _, err := x.reserveWith(ctx, accounts, ask{mode: holdFlex, amount: max(f.Worst, 0), flex: f}, nil)
	return h, err
}

// ReserveGated is Shared.ReserveGated: a hold decided locally does not
// decide g (decided is false), and the caller admits g on its own, with
// the rate limiter's own script.
func (x *Allotted) ReserveGated(ctx context.Context, accounts []*Account, q Ask, g Gate) (Hold, bool, error) {
	return x.reserveWith(ctx, accounts, q.q, g)
}

func (x *Allotted) reserveWith(ctx context.Context, accounts []*Account, q ask, g Gate) (Hold, bool, error) {
	if h := x.local(accounts, q); h != nil {
		x.Local.Add(1)
		return h, false, nil
	}
	x.Remote.Add(1)
	h, decided, err := x.s.reserveWith(ctx, accounts, q, g)
	var ex *ExceededError
	refused := err != nil && errors.As(err, &ex)
	if refused && x.roomHeld(accounts) {
		x.RefusedWithRoom.Add(1)
	}
	switch {
	case refused && x.giveBack(ctx, accounts):
		// Refused while this replica's own allotments held room unused
		// (Redis counts them as holds): that room is returned, and the
		// request asked once more, so that it is refused only as it
		// would be without allotments. (A refused hold took no gate.)
		x.Remote.Add(1)
		return x.s.reserveWith(ctx, accounts, q, g)
	case err == nil && g == nil && (h.Held() < q.amount || h.Capped()) && !x.s.r.Degraded() && x.roomHeld(accounts):
		// Held short or capped (default mode's end of a budget) while
		// this replica's own allotments held room unused: dropped, the
		// room returned, asked once more. Not with a gate decided in the
		// same script: its admission is taken.
		x.RefusedWithRoom.Add(1)
		h.Release()
		x.giveBack(ctx, accounts)
		x.Remote.Add(1)
		return x.s.reserveWith(ctx, accounts, q, g)
	}
	return h, decided, err
}

// roomHeld reports whether an allotment of accounts holds room no
// request uses.
func (x *Allotted) roomHeld(accounts []*Account) bool {
	for _, a := range accounts {
		if a.remote().allot.Load().spare() {
			return true
		}
	}
	return false
}

// spare reports whether al (nil: no allotment) holds room no request uses.
func (al *allotment) spare() bool { return al != nil && al.size.Load() > al.used.Load() }

// giveBack returns the unused room of accounts' allotments to Redis now
// (a flush that shrinks them to what requests in flight hold). It reports
// whether there was room to return and the flush answered. Not while
// Redis is known to be down: the request is decided offline, and a flush
// would only make it wait.
func (x *Allotted) giveBack(ctx context.Context, accounts []*Account) bool {
	if x.s.r.Degraded() {
		return false
	}
	room := false
	for _, a := range accounts {
		if al := a.remote().allot.Load(); al.spare() {
			al.drain.Store(true)
			room = true
		}
	}
	if !room {
		return false
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), x.s.holdWait)
	defer cancel()
	return x.Flush(fctx, false) == nil
}

// local holds q in process against the allotments of accounts' budgeted
// accounts, or returns nil (per request). It notes what was asked, for
// the allotments' sizes.
func (x *Allotted) local(accounts []*Account, q ask) *allotHold {
	var buf [8]*allotment
	als := buf[:0]
	for _, a := range accounts {
		if a.Budget() != Unlimited {
			als = append(als, x.allotOf(a))
		}
	}
	if len(als) == 0 || x.closed.Load() {
		return nil
	}
	amt := int64(q.amount)
	now := x.s.clock()       // monotonic: a wall clock stepped back must not extend local decisions past the lease
	ok := q.mode != holdUpTo // held up to what remains: the end of a budget's rule
	// Spend booked while Redis was away (or settles in doubt) reaches
	// Redis only with a per-request hold (carry.go): once Redis answers
	// again, such an account's requests hold per request until it is
	// carried, or Redis would stay short of it while allotments decide
	// (until a stop's CarryOffline or a reseed).
	owes := !x.s.r.Degraded()
	for _, al := range als {
		if owes && al.a.owesRedis() {
			ok = false
		}
		al.asked.Add(amt)
		al.count.Add(1)
		for b := al.big.Load(); amt > b && !al.big.CompareAndSwap(b, amt); b = al.big.Load() {
		}
		if !al.open.Load() || now >= al.until.Load() || al.a.Budget() < Amount(al.budget.Load()) {
			ok = false
		}
	}
	if !ok {
		x.wake(als)
		return nil
	}
	for i, al := range als {
		if _, took := casHold(&al.used, func() Amount { return Amount(al.size.Load()) }, q.amount, false); !took {
			for _, t := range als[:i] {
				t.used.Add(-amt)
			}
			x.wake(als)
			return nil
		}
	}
	for _, al := range als {
		// The interval's peak of what local holds hold (the allotment's
		// next size covers it: a burst like this one again).
		for f, p := al.holding.Add(amt), al.peak.Load(); f > p && !al.peak.CompareAndSwap(p, f); p = al.peak.Load() {
		}
	}
	h := &allotHold{accounts: accounts, als: append([]*allotment(nil), als...), amount: q.amount}
	for _, a := range accounts {
		if a.Budget() == Unlimited { // in-process bookkeeping of the unbudgeted ones
			a.used.Add(amt)
		}
	}
	return h
}

// wake asks the flusher to size allotments now: one lacked room, or a
// second request came in an interval to an account without one. Not for
// accounts the last flush found too small to allot, nor for one request
// alone (an account used now and then is held per request: an allotment
// would cost it more flushes than it saves).
func (x *Allotted) wake(als []*allotment) {
	for _, al := range als {
		if !al.closedNow.Load() && (al.size.Load() > 0 || al.count.Load() >= 2) {
			select {
			case x.kick <- struct{}{}:
			default:
			}
			return
		}
	}
}

// allotHold is a hold decided in process against allotments.
type allotHold struct {
	accounts []*Account
	als      []*allotment
	amount   Amount
	done     bool
}

func (h *allotHold) Held() Amount { return h.amount }
func (h *allotHold) Capped() bool { return false }

// Settle books actual: on each allotment (to be flushed), and on the
// accounts' local view.
func (h *allotHold) Settle(actual Amount) (soft []*Account) {
	if h == nil || h.done {
		return nil
	}
	h.done = true
	for _, al := range h.als {
		al.holding.Add(-int64(h.amount))
		al.booked.Add(int64(actual))
		al.used.Add(int64(actual - h.amount))
		a := al.a
		a.beginMove() // allotted before spent, as unsynced (seed)
		a.remote().allotted.Add(int64(actual))
		a.spent.Add(int64(actual))
		a.endMove()
		a.used.Add(int64(actual))
		soft = appendSoft(soft, a, a.Spent())
	}
	for _, a := range h.accounts {
		if a.Budget() == Unlimited {
			a.used.Add(int64(actual - h.amount))
			soft = appendSoft(soft, a, Amount(a.spent.Add(int64(actual))))
		}
	}
	return soft
}

// Release drops the hold.
func (h *allotHold) Release() {
	if h == nil || h.done {
		return
	}
	h.done = true
	for _, al := range h.als {
		al.holding.Add(-int64(h.amount))
		al.used.Add(-int64(h.amount))
	}
	for _, a := range h.accounts {
		if a.Budget() == Unlimited {
			a.used.Add(-int64(h.amount))
		}
	}
}

// Run flushes every Every (or when a request found an allotment short)
// until ctx ends, then returns every allotment (Close).
func (x *Allotted) Run(ctx context.Context) {
	t := time.NewTicker(x.every)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := x.Close(cctx); err != nil {
				x.s.log.Warn("budget allotments not all returned to redis at shutdown; their leases expire", "err", err)
			}
			cancel()
			return
		case <-t.C:
		case <-x.kick:
			// A request found an allotment short: sized now, but not more
			// often than ten times an interval (the tick sizes it anyway).
			if time.Since(last) < x.every/10 {
				continue
			}
		}
		last = time.Now()
		fctx, cancel := context.WithTimeout(context.Background(), max(2*time.Second, x.s.holdWait))
		_ = x.Flush(fctx, false)
		cancel()
	}
}

// Close stops local decisions and flushes until every booking is on Redis
// and every allotment returned, or ctx ends.
func (x *Allotted) Close(ctx context.Context) error {
	x.closed.Store(true)
	x.mu.Lock()
	for _, al := range x.all {
		al.open.Store(false)
	}
	x.mu.Unlock()
	return lifecycle.Retry(ctx, 50*time.Millisecond, func() (bool, error) {
		err := x.Flush(ctx, true)
		return err == nil && x.empty(), err
	})
}

// empty reports whether nothing is held or booked locally any more.
func (x *Allotted) empty() bool {
	x.flushMu.Lock()
	defer x.flushMu.Unlock()
	if x.pending != nil {
		return false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, al := range x.all {
		if al.size.Load() != 0 || al.booked.Load() != 0 || al.used.Load() != 0 {
			return false
		}
	}
	return true
}

// flushCall is one flush script's call and what to apply when it answers.
type flushCall struct {
	keys  []string
	args  []any
	items []flushItem
	sent  int64 // Shared.clock when it was first built (the local-decision horizon counts from it)
}

type flushItem struct {
	al     *allotment
	booked int64 // spend it moves from the allotment to 'spent'
	budget int64 // the budget it was sized on
	given  int64 // room taken from the allotment to return it
	tag    string
}

// allotScript books and resizes allotments, one script for all of a
// replica's accounts. ARGV: lease ttl ms, alive window ms, holds per
// replica below which nothing is allotted, then per account 11 values:
// lease, base (what the lease must keep: local holds in flight and spend
// not in this flush), want (the size asked), booked (spend to add to
// 'spent', once per tag), tag (carry marker, carry.go), the previous
// marker of this lease to drop (or ""), seed spent and period (as a
// hold's), budget, one request's hold, and 1 when this replica has heard
// the account on Redis (bud_seed's lost), else 0. KEYS: one hash per account,
// then the presence set. It returns {alive, then per account: the
// allotment's size, spent, held, 1 when it is open; then per account the
// period Redis has it in (mirrorFlushed)}. An allotment is at
// least base (what requests in flight hold stays held) and grows only
// while remaining = budget − spent − others' holds is at least
// few × hold × alive, to at most remaining / (2 × alive); it is open (decides
// locally) only while it is at most remaining, so that an operator's edit
// or a swept lease that leaves it past the budget closes it.
var allotScript = rscript.New(luaNow + luaHold + `
local ttl, win, few = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS - 1
local alive = math.max(redis.call('ZCOUNT', KEYS[#KEYS], now - win, '+inf'), 1)
local out, periods = {alive}, {}
local exp = now + ttl
for i = 1, n do
  local k, o = KEYS[i], 3 + 11 * (i - 1)
  local lease, base, want, booked, tag, prev = ARGV[o + 1], tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3]), ARGV[o + 4], ARGV[o + 5], ARGV[o + 6]
  local seed, period, budget, big = ARGV[o + 7], tonumber(ARGV[o + 8]), tonumber(ARGV[o + 9]), tonumber(ARGV[o + 10])
  local cur = redis.call('HMGET', k, 'spent', 'period', 'held', 'y', 'nx', 'rv')
  local hd, nx = tonumber(cur[3] or 0), cur[5] and tonumber(cur[5])
  local s, fresh = bud_seed(k, cur[1], cur[2], cur[6], seed, ARGV[o + 8], ARGV[o + 11] == '1')
  -- Booked spend lands in the period Redis has, as a per-request settle
  -- does: also when this replica's view is older (rp > period, its clock
  -- lags the rollover), or what it spent after Redis's reset would be
  -- missing from the new period (branch allotmoney). Spend booked before
  -- the reset and flushed after it (at most one interval's) counts there
  -- too: over, never under.
  if booked ~= '0' then
    s, hd, nx = bud_carry(k, 'c:' .. tag .. '=' .. booked, s, hd, nx, fresh)
    if prev ~= '' then redis.call('HDEL', k, 'c:' .. prev) end
  end
  if nx and now >= nx then hd, nx = bud_sweep(k, hd, bud_rsset(KEYS[#KEYS])) end
  local old, v = 0, redis.call('HGET', k, lease)
  if v then old = bud_lease(v) or 0 end
  local left = budget - s - (hd - old)
  local size, open = math.max(base, 0), 0
  if big > 0 and left >= few * big * alive then
    size = math.max(size, math.min(want, math.floor(left / (2 * alive))))
    -- Open only while the budget still has what the allotment keeps: an
    -- edit (spend raised, budget lowered) or a swept lease can leave base
    -- past it; then it decides nothing more and is returned next flush.
    if size <= left then open = 1 end
  end
  local f = {}
  hd = bud_add(k, f, 'held', hd, size - old)
  if size > 0 then
    f[#f + 1], f[#f + 2] = lease, string.format('%d:%d', size, exp)
    if not nx or exp < nx then f[#f + 1], f[#f + 2] = 'nx', bud_int(exp) end
  end
  local touched = now - tonumber(cur[4] or 0) < 86400000
  if not touched then f[#f + 1], f[#f + 2] = 'y', bud_int(now) end
  redis.call('HSET', k, unpack(f))
  if not touched then redis.call('PEXPIRE', k, 604800000) end
  if size == 0 and v then redis.call('HDEL', k, lease) end
  out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = size, s, hd, open
  periods[i] = tonumber(redis.call('HGET', k, 'period') or 0)
end
for i = 1, n do out[#out + 1] = periods[i] end
return out
`)

// Flush sends the spend booked locally since the last flush to Redis and
// resizes the allotments (all: returns them), in one script; a flush whose
// answer was lost is sent again first, as it was. It returns the call's
// error (nil when there was nothing to send).
func (x *Allotted) Flush(ctx context.Context, all bool) error {
	x.flushMu.Lock()
	defer x.flushMu.Unlock()
	if p := x.pending; p != nil {
		if err := x.send(ctx, p); err != nil {
			return err
		}
	}
	p := x.build(all)
	if p == nil {
		return nil
	}
	return x.send(ctx, p)
}

// build claims what each allotment booked and decides the size to ask.
func (x *Allotted) build(all bool) *flushCall {
	x.mu.Lock()
	als := append([]*allotment(nil), x.all...)
	x.mu.Unlock()
	x.seq++
	// What was asked since the last build, scaled to an interval: a flush
	// woken early sizes for a whole interval's requests.
	// The recent peaks forget a share of allotForget for each interval
	// since the last build, at most one (flushes woken early forget less;
	// a late flush - an overloaded process - no more than an on-time one).
	now := time.Now()
	scale, part := 1.0, 1.0
	if el := now.Sub(x.built); !x.built.IsZero() && el > 0 && el < x.every {
		scale = min(float64(x.every)/float64(el), 10)
		part = float64(el) / float64(x.every)
	}
	forget := func(high int64) int64 { return high - int64(float64(high/allotForget)*part) }
	x.built = now
	// The lease on Redis runs ttl past the last moment a request may be
	// decided against it (localFor after this flush is sent): a request
	// decided locally is covered as long as a per-request hold placed
	// at its decision, not ttl from the flush before it.
	p := &flushCall{args: []any{(x.ttl + x.localFor()).Milliseconds(), AliveWindow.Milliseconds(), allotFew}}
	for _, al := range als {
		size := al.size.Load()
		if size == 0 && al.asked.Load() == 0 && al.booked.Load() == 0 && al.count.Load() == 0 {
			// Idle and holding nothing: nothing to say. Its recent peaks
			// still fade, or an account back after a pause would be sized
			// on a burst from before it.
			al.askHigh, al.holdHigh = forget(al.askHigh), forget(al.holdHigh)
			continue
		}
		asked, big, count := al.asked.Swap(0), al.big.Swap(0), al.count.Swap(0)
		if size == 0 && count < 2 && al.booked.Load() == 0 {
			al.askHigh, al.holdHigh = forget(al.askHigh), forget(al.holdHigh)
			continue // one request alone: held per request, no allotment
		}
		asked = int64(float64(asked) * scale)
		booked := al.booked.Swap(0)
		if big > 0 {
			al.lastBig = big
		}
		if asked > 0 {
			al.idle = 0
		} else {
			al.idle++
		}
		// What requests in flight hold, and spend booked after the claim.
		inflight := max(al.used.Load()-booked, 0)
		// The recent peaks: of asks an interval, and of what local holds
		// held in flight at once (this interval's peak restarts from
		// what they hold now).
		al.askHigh = max(asked, forget(al.askHigh))
		holding := al.holding.Load()
		al.holdHigh = max(al.peak.Swap(holding), holding, forget(al.holdHigh))
		want := size - booked // unchanged
		drain := al.drain.Swap(false)
		switch {
		case all, al.closedNow.Load(), drain:
			// Returned: at shutdown, too little budget left to allot
			// (requests hold per request meanwhile), or a request refused
			// on Redis while this held room (giveBack).
			want = 0
			if drain {
				// Room held here was wanted elsewhere (a budget's end,
				// shared with other replicas): the next size is on this
				// interval's figures again, not a burst's peak.
				al.askHigh, al.holdHigh = asked, holding
			}
		case asked > 0:
			// Room for what is in flight now or was at the recent peak,
			// and for four intervals of the recent peak's asks: a burst
			// like the last ones (a pause, a flush late under load, with
			// hundreds of requests in flight) is decided in process, not
			// by the per-request script (docs/performance.md, branch
			// allotpeak).
			want = max(inflight, al.holdHigh) + max(allotIntervals*al.askHigh, al.lastBig)
		case al.idle >= allotIdle:
			want = 0
		}
		base := size - booked
		var given int64
		if want < base {
			// Shrinking: the room returned is taken from the allotment
			// first (as a hold would take it), so that no request decided
			// meanwhile relies on it.
			g, _ := casHold(&al.used, func() Amount { return Amount(al.size.Load()) }, Amount(base-max(want, 0)), true)
			given = int64(g)
			base -= given
		}
		tag := ""
		if booked != 0 {
			tag = al.lease + "." + strconv.FormatInt(x.seq, 10)
		}
		a := al.a
		seed, period := a.seedAt()
		p.keys = append(p.keys, x.s.key(a))
		budget := int64(a.Budget())
		p.args = append(p.args, al.lease, base, max(want, 0), booked, tag, al.marked,
			seed, period, budget, al.lastBig, heardArg(a))
		p.items = append(p.items, flushItem{al: al, booked: booked, given: given, tag: tag, budget: budget})
	}
	if len(p.items) == 0 {
		return nil
	}
	p.keys = append(p.keys, x.s.presenceKey())
	p.sent = x.s.clock()
	return p
}

// send runs p and applies its answer; a lost answer keeps p pending (sent
// again as is by the next flush), a call never run gives back its claims.
func (x *Allotted) send(ctx context.Context, p *flushCall) error {
	x.Flushes.Add(1)
	marks := make([]int64, len(p.items)) // before the call is sent (hear)
	for i, it := range p.items {
		marks[i] = it.al.a.landedMark()
	}
	// In the ordered stream, numbered: its reply mirrors spend as a
	// settle's does, and neither may set the view back over a later one.
	call, ticket := x.s.queue(allotScript, p.keys, p.args...)
	v, ticket, err := x.s.wait(ctx, call, ticket)
	res, err := rscript.Int64s(v, err)
	if err == nil && len(res) != 1+5*len(p.items) {
		err = fmt.Errorf("redis: allotment flush answered %d values for %d accounts", len(res), len(p.items))
	}
	if err != nil {
		if !rscript.IsReply(err) {
			x.s.r.Degrade(err)
		}
		// A call proven never run gives its claims back (unless an earlier
		// sending of it may have run); any other is sent again, as is,
		// under the same tags: applied once, its reply then read.
		switch final := rscript.Final(err); {
		case rscript.NotRun(final) && x.pending != p:
			x.pending = nil
			for _, it := range p.items {
				it.al.booked.Add(it.booked)
				it.al.used.Add(-it.given)
			}
		default:
			x.pending = p // it may have run: again, as is, under the same tags
		}
		return err
	}
	x.pending = nil
	alive := res[0]
	for i, it := range p.items {
		al, a := it.al, it.al.a
		size, spent, held, open := res[1+4*i], res[2+4*i], res[3+4*i], res[4+4*i] == 1
		// The new size first, then what moved out of used: a request that
		// read the old size meanwhile took room the old size had, which
		// the new size keeps (it is at least base).
		if size > al.size.Swap(size) {
			x.TopUps.Add(1)
		}
		al.used.Add(-(it.booked + it.given))
		if it.tag != "" {
			al.marked = it.tag
		}
		// Redis has the booking: out of 'allotted', and the view mirrored
		// from this figure, which has it (or, when a later one was
		// mirrored already, out of the view too: that one counted it
		// twice). The view never dips between the two.
		mirrorFlushed(a, spent, ticket, it.booked, res[1+4*len(p.items)+i])
		a.hear(a.Budget()-Amount(spent+held), alive, marks[i])
		al.closedNow.Store(!open)
		al.until.Store(p.sent + int64(x.localFor()))
		al.budget.Store(it.budget)
		al.open.Store(open && !x.closed.Load())
	}
	return nil
}
