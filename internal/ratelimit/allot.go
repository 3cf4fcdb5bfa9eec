package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/lifecycle"
	"github.com/tollgate/tollgate/internal/rscript"
)

// Allotter decides requests' rate limits in process against allotments
// this replica holds on Redis (docs/allotments.md, step 2: rate limits),
// the way ledger.Allotted decides budget holds. An allotment is counted on
// Redis like the admissions it stands for, so every replica's per-request
// script still sees it as used: replicas together never admit past a limit
// in a window.
//
//   - max_parallel_requests: k slots, k members of the rule's lease set
//     (this replica's, renewed at every flush); requests take and return
//     them in process.
//   - rpm and request windows: n admissions counted in the window's
//     current slot at once; requests take them in process while that slot
//     lasts (by this replica's clock, measured from when the flush was
//     sent: never past it on Redis's).
//   - tpm: T tokens counted in the current slot; a request is admitted
//     while what requests booked on the allotment stays inside T, and its
//     real tokens are booked on it when it ends.
//
// A ticket is decided in process only when every one of its rules has an
// allotment with room (all or none); any other ticket (a token bucket, a
// rule near its limit, an allotment spent or not granted yet) runs the
// per-request script exactly as without allotments, and the flusher is
// woken to size the allotments now.
//
// Every Every (100 ms) one script for all the rules this replica holds
// (flushScript) gives back what the previous allotments did not use (a
// window's admissions only while their slot is still in the window; else
// they stay counted: the limit admits fewer, never more), books token
// corrections, and grants the next allotments: about four times what was asked
// in the last interval, at most what is left / (2 × live replicas), and
// nothing when less than a few requests per live replica is left. The
// allotment in use while a flush runs keeps deciding until its answer
// comes (it is given back by the flush after), so that a flush never makes
// a request wait. A flush is tagged: one whose answer is lost is sent
// again, as is, and Redis answers it from its first run (applied once).
// Close returns every allotment. Allotments decide nothing once their last
// flush was answered localFor ago.
type Allotter struct {
	l        *Limiter
	rd       *Redis
	every    time.Duration
	ttl      time.Duration
	local    time.Duration // AllotOptions.LocalFor
	id       string
	presence string
	seed     maphash.Seed
	epoch    time.Time // clock's origin (its monotonic reading)
	shards   [allotShards]allotShard

	mu  sync.Mutex
	all []*entry

	kick    chan struct{}
	flushMu sync.Mutex
	seq     int64
	built   time.Time // when the last flush was built
	// late is the recent peak of a flush's round trip (sent to
	// answered, an eighth forgotten at each answer, at most 10
	// intervals): a window's next allotment is granted in the next slot
	// when the current one ends within two intervals plus two of these,
	// so that a late answer does not leave the rule without an
	// allotment at a slot's end (flushMu held).
	late    time.Duration
	pending *rlFlush
	closed  atomic.Bool

	// Flushes counts flush scripts sent; Local and Remote count tickets
	// decided in process and those left to the per-request script. TopUps
	// counts allotments a flush's answer granted larger than the rule's
	// allotment before it (one per rule and flush: a window's new
	// allotment larger than the one it replaces, more parallel slots).
	// RefusedWithRoom counts per-request admissions Redis refused while
	// this replica's own allotment of the refusing rule held room no
	// request used (that room is then given back and the request decided
	// once more: giveBack).
	Flushes, Local, Remote, TopUps, RefusedWithRoom atomic.Int64
}

// Held is what this replica's rate-limit allotments hold on Redis now, by
// unit (metrics, read at scrape time): Requests admissions counted in
// windows (rpm, rpd) not used yet, Tokens tokens counted in tpm windows
// not used yet, Slots max_parallel_requests slots held (in use or not),
// and Rules the count of rules with an allotment.
type Held struct{ Requests, Tokens, Slots, Rules int64 }

// Held reports what this replica's allotments hold now.
func (a *Allotter) Held() Held {
	var h Held
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.all {
		e.mu.Lock()
		has := false
		if e.rule.Kind == Parallel {
			h.Slots += e.members
			has = e.members > 0
		} else {
			for _, g := range append(e.closed, e.open) {
				if g == nil || g.reported || g.u >= g.n {
					continue
				}
				has = true
				if e.rule.Kind == Tokens {
					h.Tokens += g.n - g.u
				} else {
					h.Requests += g.n - g.u
				}
			}
		}
		if has {
			h.Rules++
		}
		e.mu.Unlock()
	}
	return h
}

// AllotOptions configure an Allotter.
type AllotOptions struct {
	// Every is the flush interval (100 ms when 0).
	Every time.Duration
	// LocalFor bounds how long after its last answered flush an
	// allotment still decides (min(lease TTL / 2, 30 s) when 0).
	LocalFor time.Duration
	// Presence is the key of the replicas' presence set (ledger.Shared's:
	// a sorted set of replica ids scored by their last heartbeat, ms), on
	// the same Redis hash tag; "" counts one replica.
	Presence string
}

// NewAllotter turns allotments on for l, which must count on Redis; it
// returns nil otherwise. Run flushes them.
func NewAllotter(l *Limiter, o AllotOptions) *Allotter {
	if l == nil || l.redis == nil {
		return nil
	}
	if o.Every <= 0 {
		o.Every = 100 * time.Millisecond
	}
	a := &Allotter{l: l, rd: l.redis, every: o.Every, ttl: l.redis.LeaseTTL, local: o.LocalFor, id: newLease(), presence: o.Presence,
		seed: maphash.MakeSeed(), epoch: time.Now(), kick: make(chan struct{}, 1)}
	for i := range a.shards {
		a.shards[i].m = map[stateKey]*entry{}
	}
	l.allot = a
	return a
}

const (
	allotShards = 32
	// allotFew is how many requests per live replica a rule must have
	// left for an allotment; below it, requests run per request.
	allotFew = 4
	// allotIdle is how many intervals without requests an allotment is
	// kept before it is returned.
	allotIdle = 5
	// parallelSpare is the most room a max_parallel_requests allotment
	// asks beyond the recent peak in flight for arrivals during a pause:
	// at 2,000 req/s on one rule, the arrivals of a 16 ms pause.
	parallelSpare = 32
	// allotForget is how many idle intervals an empty rule's state is
	// kept before it is dropped.
	allotForget = 600
	// allotLocalFor bounds how long after its last answered flush an
	// allotment still decides requests.
	allotLocalFor = 30 * time.Second
)

// clock is monotonic ns since the allotter was made: an allotment's
// deadline (its slot's end on Redis, measured from when its flush was
// sent) and the local-decision horizon must not move with the wall clock
// (a step back would let an allotment decide past its slot's end).
func (a *Allotter) clock() int64 { return int64(time.Since(a.epoch)) }

func (a *Allotter) localFor() time.Duration {
	if a.local > 0 {
		return min(a.local, a.ttl/2)
	}
	return min(a.ttl/2, allotLocalFor)
}

// stateKey is a rule's place: its scope, kind and name.
type stateKey struct {
	scope Scope
	kind  Kind
	name  string
}

type allotShard struct {
	mu sync.RWMutex
	m  map[stateKey]*entry
}

// entry is one rule's allotment on this replica.
type entry struct {
	key string   // the rule's Redis key
	sk  stateKey // its key in the shards (fixed: e.rule changes under mu)

	mu   sync.Mutex
	rule Rule // as last seen (its limit may change)
	// windows: the allotment deciding now, and those closed but not yet
	// given back (reported by the next flush).
	open   *gen
	closed []*gen
	// parallel: this replica's slots on Redis (members), the local cap
	// (≤ members) and the requests in flight on them.
	members, cap, inflight, peak int64
	// high is the largest peak of recent intervals, an eighth of it
	// forgotten at each flush: the slots asked cover a burst like the
	// last ones, not only the last interval's.
	high int64
	// token corrections of requests whose allotment was already reported:
	// addNow is booked in the current slot, refunds in their allotment's.
	addNow  int64
	refunds []*gen
	left    int64         // the rule's room on Redis at the last flush, beyond this replica's allotment
	lim     int64         // the limit the last answered flush granted under: a lower one decides per request
	reset   time.Duration // the window's reset at the last flush
	until   int64         // Allotter.clock: local decisions stop then
	tickets int64         // tickets admitted on it and not done
	refused bool          // the last flush granted less than asked: no early flushes for it
	drain   int           // flushes that return the allotment and ask for none (giveBack)
	want    int64         // what the last flush asked
	// demand this interval: requests asked, what they asked (requests or
	// tokens), real tokens booked and the requests that booked them;
	// unit is one request's size in tokens.
	count, asked, booked, ended, unit int64
	idle                              int
}

// gen is one window allotment: n admissions or tokens counted in slot on
// Redis, u of them used; usable until deadline (Allotter.clock).
type gen struct {
	slot, n, u int64
	deadline   int64
	reported   bool
	onSlot     int64 // after its report: what it still counts in slot (refunds come off it)
	refund     int64 // refunds waiting for the next flush
}

// allottable reports whether r can be decided against an allotment:
// parallel slots, and windows whose slot outlasts a few flushes.
func (a *Allotter) allottable(r *Rule) bool {
	switch r.Kind {
	case Parallel:
		return true
	case Requests, Tokens:
		return slotLen(r.Window) >= 4*a.every
	}
	return false
}

func (a *Allotter) entryOf(r *Rule) *entry {
	k := stateKey{r.Scope, r.Kind, r.Name}
	sh := &a.shards[maphash.String(a.seed, r.Scope.ID)%allotShards]
	sh.mu.RLock()
	e := sh.m[k]
	sh.mu.RUnlock()
	if e != nil {
		return e
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e = sh.m[k]; e != nil {
		return e
	}
	k.scope.ID = cloneString(k.scope.ID)
	k.name = cloneString(k.name)
	e = &entry{key: a.rd.key(r), sk: k, rule: *r, unit: 1}
	e.rule.Scope = k.scope
	sh.m[k] = e
	a.mu.Lock()
	a.all = append(a.all, e)
	a.mu.Unlock()
	return e
}

func cloneString(s string) string { return string(append([]byte(nil), s...)) }

// need is what ticket t asks of rule r.
func need(t *Ticket, r *Rule) int64 {
	if r.Kind == Tokens {
		return t.Est
	}
	return 1
}

// take admits t against allotments, all rules or none; it notes what was
// asked either way, and wakes the flusher when an allotment lacked room.
func (a *Allotter) take(t *Ticket) bool {
	if a.closed.Load() || len(t.rules) == 0 {
		return false
	}
	for i := range len(t.rules) {
		if !a.allottable(&t.rules[i]) {
			return false
		}
	}
	now := a.clock()
	ok, taken, kick := true, 0, false
	for i := range len(t.rules) {
		r := &t.rules[i]
		e := a.entryOf(r)
		t.al[i].e = e
		nd := need(t, r)
		e.mu.Lock()
		scope := e.rule.Scope
		e.rule = *r
		e.rule.Scope = scope
		e.count++
		e.asked += nd
		if ok && e.take(t, i, nd, now) {
			taken++
		} else {
			ok = false
			kick = kick || (!e.refused && e.count >= 2)
		}
		e.mu.Unlock()
	}
	if !ok {
		for i := range taken {
			t.al[i].e.undo(t, i)
		}
		a.Remote.Add(1)
		if kick {
			a.wake()
		}
		return false
	}
	a.Local.Add(1)
	t.admitted, t.allotted = true, true
	return true
}

// take takes rule i of t from e (e.mu held).
func (e *entry) take(t *Ticket, i int, nd, now int64) bool {
	r := &t.rules[i]
	if now >= e.until || r.Limit < e.lim {
		// (a limit lowered since the allotment was granted: Redis decides,
		// and gives the allotment back when it refuses)
		return false
	}
	if r.Kind == Parallel {
		// left < 0: Redis holds more slots than the limit (it was lowered
		// while this replica's requests were in flight): none is reused
		// in process until Redis counts fewer than the limit.
		if e.inflight >= e.cap || e.left < 0 {
			return false
		}
		e.inflight++
		e.peak = max(e.peak, e.inflight)
		e.tickets++
		t.States[i] = State{Remaining: e.left + e.cap - e.inflight}
		return true
	}
	g := e.open
	if g == nil || now >= g.deadline || nd > r.Limit {
		return false
	}
	if (nd == 0 && g.u >= g.n) || g.u+nd > g.n {
		return false
	}
	g.u += nd
	e.tickets++
	t.al[i].g = g
	t.States[i] = State{Remaining: e.left + g.n - g.u, Reset: e.reset}
	return true
}

// undo gives back rule i of a ticket taken but not admitted.
func (e *entry) undo(t *Ticket, i int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tickets--
	if t.rules[i].Kind == Parallel {
		e.inflight--
		return
	}
	t.al[i].g.u -= need(t, &t.rules[i])
	t.al[i].g = nil
}

// done settles a ticket admitted on allotments.
func (a *Allotter) done(t *Ticket, tokens int64) {
	delta := tokens - t.Est
	for i := range len(t.rules) {
		e := t.al[i].e
		e.mu.Lock()
		e.tickets--
		switch t.rules[i].Kind {
		case Parallel:
			e.inflight = max(e.inflight-1, 0)
		case Tokens:
			e.booked += tokens
			e.ended++
			g := t.al[i].g
			switch {
			case !g.reported:
				g.u += delta
			case delta > 0:
				e.addNow += delta
			case delta < 0:
				if g.refund == 0 {
					e.refunds = append(e.refunds, g)
				}
				g.refund -= delta
			}
		}
		e.mu.Unlock()
	}
}

// giveBack returns the unused room of this replica's allotment of r to
// Redis now (two flushes: the allotment deciding now is closed by the
// first and given back by the second). It reports whether there was room
// and the flushes were answered.
func (a *Allotter) giveBack(ctx context.Context, r *Rule) bool {
	k := stateKey{r.Scope, r.Kind, r.Name}
	sh := &a.shards[maphash.String(a.seed, r.Scope.ID)%allotShards]
	sh.mu.RLock()
	e := sh.m[k]
	sh.mu.RUnlock()
	if e == nil {
		return false
	}
	e.mu.Lock()
	room := e.cap > e.inflight && r.Kind == Parallel
	for _, g := range append(e.closed, e.open) {
		if g != nil && g.u < g.n {
			room = true
		}
	}
	if room {
		a.RefusedWithRoom.Add(1)
		e.refused = true // no early flushes: the rule is at its end
		e.drain = 2      // and the next two flushes ask for nothing
	}
	e.mu.Unlock()
	if !room {
		return false
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), admitTimeout)
	defer cancel()
	// Two flushes: the allotment in use when the first is sent is given
	// back by the second.
	for range 2 {
		if a.Flush(fctx) != nil {
			return false
		}
	}
	return true
}

// wake asks the flusher to size allotments now.
func (a *Allotter) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run flushes every Every (or when a request found an allotment short)
// until ctx ends, then returns every allotment (Close).
func (a *Allotter) Run(ctx context.Context) {
	t := time.NewTicker(a.every)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := a.Close(cctx); err != nil {
				slog.Warn("rate-limit allotments not all returned to redis at shutdown; they expire with their window or lease", "err", err)
			}
			cancel()
			return
		case <-t.C:
		case <-a.kick:
			if time.Since(last) < a.every/10 {
				continue
			}
		}
		last = time.Now()
		fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = a.Flush(fctx)
		cancel()
	}
}

// Close stops local decisions and flushes until every allotment is
// returned (what requests in flight hold is returned as they end), or ctx
// ends.
func (a *Allotter) Close(ctx context.Context) error {
	a.closed.Store(true)
	a.mu.Lock()
	for _, e := range a.all {
		e.mu.Lock()
		if e.open != nil {
			e.closed = append(e.closed, e.open)
			e.open = nil
		}
		e.cap = e.inflight
		e.mu.Unlock()
	}
	a.mu.Unlock()
	return lifecycle.Retry(ctx, 20*time.Millisecond, func() (bool, error) {
		err := a.Flush(ctx)
		return err == nil && a.Empty(), err
	})
}

// Empty reports whether this replica holds no allotment and owes Redis
// nothing.
func (a *Allotter) Empty() bool {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	if a.pending != nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.all {
		e.mu.Lock()
		busy := e.open != nil || len(e.closed) > 0 || e.members > 0 || e.addNow != 0 || len(e.refunds) > 0
		e.mu.Unlock()
		if busy {
			return false
		}
	}
	return true
}

// rlFlush is one flush script's call and what to apply when it answers.
type rlFlush struct {
	keys  []string
	args  []any
	items []flushItem
	sent  int64 // Allotter.clock when it was first sent
}

type flushItem struct {
	e        *entry
	want     int64  // what was asked
	limit    int64  // the rule's limit sent
	reported []*gen // closed allotments given back by this flush
}

// flushScript gives back, books and grants allotments, one script for all
// of a replica's rules. KEYS: one per rule, then the presence set and the
// flush tag's key. ARGV: tag, lease ttl ms, alive window ms, requests per
// replica below which nothing is allotted, replica id, flush interval ms
// (the last one seen, when flushes run late, plus the recent peak of a
// flush's round trip: windows grant in the next slot when the current
// one ends within twice it), how long parallel slots not
// in use live (ms); then per rule:
// kind, limit, window ms, unit (one request's size), want, x (windows:
// tokens to book in the current slot; parallel: the slots that must stay,
// requests in flight), y (parallel: the slots this replica holds), the
// count of refunds, z (parallel: requests in flight, whose slots live the
// lease TTL) and that many refund pairs (slot, amount). A refund is applied
// only while its slot is in the window. It returns {now, then per rule:
// granted, slot, ms until that slot ends, room left beyond the grant,
// reset ms}; a tag seen before answers what its first run answered.
var flushScript = rscript.New(luaCommon + `
local tag, ttl, awin, few, rid = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local tk = KEYS[#KEYS]
local prev = redis.call('GET', tk)
if prev then
  local d = cjson.decode(prev)
  if d[1] == tag then return d[2] end
end
local every, spare = tonumber(ARGV[6]), tonumber(ARGV[7])
local n = #KEYS - 2
local alive = math.max(redis.call('ZCOUNT', KEYS[n + 1], now - awin, '+inf'), 1)
local out = {now}
local p = 8
for i = 1, n do
  local key = KEYS[i]
  local kind, limit, win, unit, want = tonumber(ARGV[p]), tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3]), tonumber(ARGV[p + 4])
  local x, y, nref, z = tonumber(ARGV[p + 5]), tonumber(ARGV[p + 6]), tonumber(ARGV[p + 7]), tonumber(ARGV[p + 8])
  p = p + 9
  if kind <= 1 then
    local used, idx, reset, sl, st = window(key, win)
    local head, sum, changed = st[1], st[2], false
    local lo = idx - 60
    for j = 1, nref do
      local slot, amt = tonumber(ARGV[p]), tonumber(ARGV[p + 1])
      p = p + 2
      if slot >= lo and head ~= nil and slot >= head then
        redis.call('HINCRBY', key, slot, amt)
        sum, changed = sum + amt, true
      end
    end
    if x > 0 then
      redis.call('HINCRBY', key, idx, x)
      sum, changed = sum + x, true
      if head == nil or idx < head then head = idx end
    end
    local left = limit - math.max(sum, 0)
    local g = 0
    if want > 0 and left >= few * unit * alive then
      g = math.min(want, math.floor(left / (2 * alive)))
      if g < unit then g = 0 end
    end
    -- Granted in the current slot; in the next one when the current
    -- ends within two intervals: counted before it is used, so for longer
    -- than the use, and usable until the next slot ends (no gap at a slot's
    -- end, when no allotment would decide until the next flush).
    local at = idx
    if (idx + 1) * sl - now < 2 * every then at = idx + 1 end
    if g > 0 then
      redis.call('HINCRBY', key, at, g)
      sum, changed = sum + g, true
      if head == nil or at < head then head = at end
    end
    if changed then
      redis.call('HSET', key, 's', sum, 'h', head)
      redis.call('PEXPIRE', key, 62 * sl + 1000)
    end
    if reset == 0 and g > 0 then reset = 61 * sl end
    out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4], out[#out + 5] = g, at, (at + 1) * sl - now, left - g, reset
  else
    p = p + 2 * nref
    if y > 0 then
      local f = {}
      for j = 1, y do f[j] = rid .. ':' .. j end
      redis.call('ZREM', key, unpack(f))
    end
    local c = redis.call('ZCARD', key)
    if c + math.max(x, want) >= limit then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
      c = redis.call('ZCARD', key)
    end
    local left = limit - c
    local k = x
    if want > x and left >= few * alive then
      k = math.max(x, math.min(want, math.floor(left / (2 * alive))))
    end
    if k > 0 then
      -- the slots of requests in flight live as a request's lease; the
      -- others only as long as they may still be taken in process (a
      -- replica that dies holding them frees them then)
      local m = {}
      for j = 1, k do
        if j <= z then m[#m + 1] = now + ttl else m[#m + 1] = now + spare end
        m[#m + 1] = rid .. ':' .. j
      end
      redis.call('ZADD', key, unpack(m))
      redis.call('PEXPIRE', key, ttl + 1000)
    end
    out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4], out[#out + 5] = k, 0, 0, left - k, 0
  end
end
redis.call('SET', tk, cjson.encode({tag, out}), 'PX', 3600000)
return out
`)

// Flush gives back, books and grants this replica's allotments in one
// script; a flush whose answer was lost is sent again first, as it was.
// It returns the call's error (nil when there was nothing to send).
func (a *Allotter) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	if p := a.pending; p != nil {
		if err := a.send(ctx, p); err != nil {
			return err
		}
	}
	p := a.build()
	if p == nil {
		return nil
	}
	return a.send(ctx, p)
}

// build claims what each allotment owes Redis and decides what to ask.
func (a *Allotter) build() *rlFlush {
	a.mu.Lock()
	all := append([]*entry(nil), a.all...)
	a.mu.Unlock()
	a.seq++
	closing := a.closed.Load()
	now := time.Now()
	scale, gap := 1.0, a.every
	if el := now.Sub(a.built); !a.built.IsZero() && el > 0 && el < a.every {
		scale = min(float64(a.every)/float64(el), 10)
	} else if !a.built.IsZero() {
		gap = min(el, 10*a.every) // a late flusher (a starved process): slots turn over sooner in flushes
	}
	a.built = now
	tag := a.id + "." + strconv.FormatInt(a.seq, 10)
	spare := min(a.localFor()+10*a.every, a.ttl) // unused parallel slots' life on Redis
	// The script grants a window's allotment in the next slot when the
	// current one ends within twice this: the next flush's answer is
	// due about an interval and a round trip from now.
	lead := gap + a.late
	p := &rlFlush{args: []any{tag, a.ttl.Milliseconds(), aliveWindow.Milliseconds(), allotFew, a.id, lead.Milliseconds(), spare.Milliseconds()}}
	var forget []*entry
	for _, e := range all {
		e.mu.Lock()
		it, skip, drop := a.item(e, closing, scale, p)
		e.mu.Unlock()
		if drop {
			forget = append(forget, e)
		}
		if !skip {
			p.items = append(p.items, it)
			p.keys = append(p.keys, e.key)
		}
	}
	if len(forget) > 0 {
		a.forget(forget)
	}
	if len(p.items) == 0 {
		return nil
	}
	presence := a.presence
	if presence == "" {
		presence = a.rd.prefix + "nobody"
	}
	p.keys = append(p.keys, presence, a.rd.prefix+"af:"+a.id)
	p.sent = a.clock()
	return p
}

// item is e's part of a flush (e.mu held); skip: nothing to say; drop: e
// is empty and idle for long, forgotten.
func (a *Allotter) item(e *entry, closing bool, scale float64, p *rlFlush) (it flushItem, skip, drop bool) {
	r := &e.rule
	count, asked, booked, ended := e.count, e.asked, e.booked, e.ended
	e.count, e.asked, e.booked, e.ended = 0, 0, 0, 0
	if count > 0 {
		e.idle = 0
	} else {
		e.idle++
	}
	holds := e.open != nil || len(e.closed) > 0 || e.members > 0 || e.addNow != 0 || len(e.refunds) > 0
	if !holds && (count < 2 || closing) {
		return it, true, !closing && e.idle >= allotForget && e.tickets == 0
	}
	want := int64(0)
	drain := e.drain > 0
	if drain {
		e.drain--
	}
	if !closing && !drain && e.idle < allotIdle {
		// About four intervals' demand (what was asked, scaled to an
		// interval when this flush came early: the allotment must last
		// until the flush after next answers, and flushes run late in a
		// busy process), at least two requests; an interval without
		// requests keeps the last size, until idle.
		// One request's size: the tokens booked over the requests that
		// booked them (not over those admitted: in an interval where
		// requests admitted earlier end and few are admitted, that made
		// the unit many requests' tokens, and count × unit asked up to
		// the cap, or a unit past what is left granted nothing), read
		// before the scaling (a kicked flush made it ten times larger).
		if r.Kind == Tokens {
			if ended > 0 && booked > 0 {
				e.unit = max(booked/ended, 1)
			} else if count > 0 && asked > 0 {
				e.unit = max(asked/count, 1)
			}
		}
		asked, booked = int64(float64(asked)*scale), int64(float64(booked)*scale)
		switch r.Kind {
		case Tokens:
			// count × unit too: a request without an estimate (no
			// tokenize, Est 0) asks nothing at admission and books its
			// tokens only when it ends, so booked lags what the
			// interval admitted by the requests still in flight (a
			// stalled upstream, a burst queued by a pause); sized on
			// booked alone the next allotment was a few requests' and
			// full before the flush after answered.
			want = max(4*max(asked, booked, count*e.unit), 2*e.unit)
		case Requests:
			want = max(4*asked, 2)
		case Parallel:
			// Twice the recent peak and at least parallelSpare more:
			// requests in flight pile up while the process is
			// descheduled or collecting (a few ms on a busy machine),
			// and a request past the cap runs the per-request script,
			// whose round trip makes it the slowest (branch tail3: 12 %
			// of the tickets at 2,000 req/s with twice the last
			// interval's peak). The spare is added, not multiplied: a
			// flush adds and removes every slot it holds. It follows the
			// rule's arrivals (a sixth of an interval's: a 16 ms pause
			// of a 100 ms interval), so that a key with few requests
			// does not make every flush carry parallelSpare members.
			e.high = max(e.peak, e.high-e.high/8)
			spare := min(parallelSpare, asked/6+1)
			want = max(2*e.high, e.high+spare, e.inflight+2)
		}
		if count == 0 {
			want = max(want, e.want)
		}
		e.want = want
	}
	unit := int64(1)
	if r.Kind == Tokens {
		unit = e.unit
	}
	var x, y, z int64
	var refs []any
	if r.Kind == Parallel {
		z = e.inflight
		// The local cap shrinks now (no request relies on slots it is
		// about to return); it grows when the answer comes.
		e.cap = min(e.cap, max(e.inflight, want))
		x, y = e.cap, e.members
		e.peak = e.inflight
	} else {
		for _, g := range e.closed {
			g.reported = true
			g.onSlot = min(g.u, g.n)
			if g.u < g.n {
				refs = append(refs, g.slot, g.u-g.n)
			} else if g.u > g.n {
				e.addNow += g.u - g.n
			}
		}
		it.reported = e.closed
		e.closed = nil
		for _, g := range e.refunds {
			if amt := min(g.refund, g.onSlot); amt > 0 {
				g.onSlot -= amt
				refs = append(refs, g.slot, -amt)
			}
			g.refund = 0
		}
		e.refunds = nil
		x, e.addNow = e.addNow, 0
	}
	p.args = append(p.args, int64(r.Kind), r.Limit, r.Window.Milliseconds(), unit, want, x, y, int64(len(refs)/2), z)
	p.args = append(p.args, refs...)
	it.e, it.want, it.limit = e, want, r.Limit
	return it, false, false
}

// forget drops idle, empty rules' states.
func (a *Allotter) forget(es []*entry) {
	gone := map[*entry]bool{}
	for _, e := range es {
		k := e.sk // (not e.rule: a request may be writing it)
		sh := &a.shards[maphash.String(a.seed, k.scope.ID)%allotShards]
		sh.mu.Lock()
		e.mu.Lock()
		if sh.m[k] == e && e.tickets == 0 && e.count == 0 && e.open == nil && e.members == 0 {
			delete(sh.m, k)
			gone[e] = true
		}
		e.mu.Unlock()
		sh.mu.Unlock()
	}
	a.mu.Lock()
	kept := a.all[:0]
	for _, e := range a.all {
		if !gone[e] {
			kept = append(kept, e)
		}
	}
	clear(a.all[len(kept):])
	a.all = kept
	a.mu.Unlock()
}

// send runs p and applies its answer; an error keeps p pending, sent again
// as is (its tag makes it apply once).
func (a *Allotter) send(ctx context.Context, p *rlFlush) error {
	a.Flushes.Add(1)
	res, err := rscript.Int64s(a.rd.r.Run(ctx, flushScript, p.keys, p.args...))
	if err == nil && len(res) != 1+5*len(p.items) {
		err = fmt.Errorf("redis: rate-limit allotment flush answered %d values for %d rules", len(res), len(p.items))
	}
	if err != nil {
		if !rscript.IsReply(err) {
			a.rd.r.Degrade(err)
		}
		a.pending = p
		return err
	}
	a.pending = nil
	rt := time.Duration(a.clock() - p.sent)
	a.late = min(max(rt, a.late-a.late/8), 10*a.every)
	closing := a.closed.Load()
	until := p.sent + int64(a.localFor())
	for i, it := range p.items {
		g, slot, ends, left, reset := res[1+5*i], res[2+5*i], res[3+5*i], res[4+5*i], res[5+5*i]
		e := it.e
		e.mu.Lock()
		e.left, e.reset, e.until, e.lim = left, time.Duration(reset)*time.Millisecond, until, it.limit
		e.refused = g < it.want
		if e.rule.Kind == Parallel {
			if g > e.members {
				a.TopUps.Add(1)
			}
			e.members = g
			if !closing {
				e.cap = g
			}
		} else {
			var before int64
			if e.open != nil {
				before = e.open.n
				e.closed = append(e.closed, e.open)
				e.open = nil
			}
			if g > before {
				a.TopUps.Add(1)
			}
			if g > 0 {
				ng := &gen{slot: slot, n: g, deadline: p.sent + ends*int64(time.Millisecond)}
				if closing {
					e.closed = append(e.closed, ng)
				} else {
					e.open = ng
				}
			}
		}
		e.mu.Unlock()
	}
	return nil
}

// aliveWindow is how recent a replica's heartbeat must be for it to count
// as alive (ledger.AliveWindow; not imported, ledger is above this package).
const aliveWindow = 5 * time.Second
