package ledger

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/rscript"
	"github.com/tollgate/tollgate/internal/store"
)

// Hold is one request's reservation, in process or on Redis.
type Hold interface {
	// Settle books the real cost and drops the hold; it returns the
	// accounts whose soft budget this crossed.
	Settle(actual Amount) []*Account
	// Release drops the hold without spending.
	Release()
	// Held is what the hold took on each account.
	Held() Amount
	// Capped reports that the request's output must be capped to what
	// the hold pays for (ReserveFlex).
	Capped() bool
}

// Holder places holds: Local (one replica) or Shared (every replica, on Redis).
type Holder interface {
	// Reserve holds amount or refuses (strict enforcement).
	Reserve(ctx context.Context, accounts []*Account, amount Amount) (Hold, error)
	// ReserveUpTo admits while spend + holds is below every budget and
	// holds the smaller of amount and what remains (default enforcement).
	ReserveUpTo(ctx context.Context, accounts []*Account, amount Amount) (Hold, error)
	// ReserveFlex holds the worst case while it fits, else an estimate
	// (one request per budget) or a capped amount (default enforcement).
	ReserveFlex(ctx context.Context, accounts []*Account, f Flex) (Hold, error)
}

// Local holds in process.
type Local struct{}

// Reserve holds amount on every account in process.
func (Local) Reserve(_ context.Context, accounts []*Account, amount Amount) (Hold, error) {
	return asHold(Reserve(accounts, amount))
}

// ReserveUpTo holds up to amount on every account in process.
func (Local) ReserveUpTo(_ context.Context, accounts []*Account, amount Amount) (Hold, error) {
	return asHold(ReserveUpTo(accounts, amount))
}

// ReserveFlex holds f on every account in process.
func (Local) ReserveFlex(_ context.Context, accounts []*Account, f Flex) (Hold, error) {
	return asHold(ReserveFlex(accounts, f))
}

func asHold(r *Reservation, err error) (Hold, error) {
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return r, nil
}

// Shared keeps the spend and holds of budgeted accounts in Redis, so that
// every replica checks one budget: a Lua script checks all of a request's
// budgets and holds on all or none. Holds are leases that expire (a replica
// that dies cannot strand budget), renewed while their request runs (Renew). An account is seeded with the store's
// spend when Redis first sees it, or when the store reports a newer budget
// period than Redis has. Accounts without a budget stay in process. When
// Redis does not answer, or the runner knows it is down, holds fall back to the
// replica's own ledger, each budgeted account within this replica's share
// of what remained (presence.go), or are refused (strict, SharedOptions.FailClosed).
// Spend booked without Redis goes to Redis with later holds, each amount
// once even when a call's answer is lost, as does a settle whose answer
// was lost (carry.go).
type Shared struct {
	r        *rscript.Runner
	tag      string // "{prefix}": one Redis cluster slot for every key
	prefix   string
	id       string // this replica, in the presence set
	LeaseTTL time.Duration
	mode     func(accounts []*Account) Enforcement
	failShut bool
	// holdWait bounds a hold's wait for Redis (SharedOptions.HoldTimeout).
	holdWait time.Duration

	log    *slog.Logger
	warned atomic.Int64 // unix seconds of the last fallback warning
	alive  atomic.Int64 // replicas the last heartbeat counted
	left   atomic.Bool  // Leave was called: no more heartbeats

	// offlineN counts holds decided against this replica's share (Redis
	// away or a call that missed its deadline): tests name it when a
	// bound that assumes Redis answered is passed.
	offlineN atomic.Int64

	// outcomes counts the goroutines that book a lost call's outcome once
	// it is known (tests wait for them); undecided is their number, which
	// CarryOffline waits on.
	outcomes  sync.WaitGroup
	undecided atomic.Int64
	// resolving counts settleDoubt's and CarryUnheld's goroutines (tests
	// wait for them); unheld is the number of CarryUnheld's, which
	// CarryOffline waits on (their claimed spend is in carrying meanwhile).
	resolving sync.WaitGroup
	unheld    atomic.Int64
	// draining is the number of settleDoubt's goroutines, which
	// CarryOffline also waits on (they stop at their next call once
	// stopping is set, and CarryOffline carries what they leave).
	draining atomic.Int64

	// owedList are the accounts noted as owing Redis spend that nothing
	// carries at once (owe, owed.go), swept once Redis answers again;
	// owedN is its length. sweeping is set while a sweep runs.
	owedMu   sync.Mutex
	owedList []*Account
	owedN    atomic.Int64
	sweeping atomic.Bool
	// readSpend reads the store's spend for the pending reseeds
	// (reseed.go); reseeding is set while a round runs, reseeded counts
	// the accounts taken.
	readSpend SpendReader
	reseeding atomic.Bool
	reseeded  atomic.Int64
	// stopping is set, and stopped closed, when CarryOffline begins: the
	// background carries start no other call.
	stopping atomic.Bool
	stopped  chan struct{}

	// order numbers the scripts whose reply is mirrored (settles,
	// allotment flushes) in the order they enter the runner's ordered
	// stream, which is the order Redis runs them: a reply read late must
	// not set the local view back over a later one (mirrorAt).
	order  sync.Mutex
	ticket uint64

	// live are the per-request holds on Redis not settled yet, whose
	// leases Renew keeps alive (renew.go).
	live liveHolds
	// epoch is clock's origin; now reads the time (time.Now; tests step it).
	epoch time.Time
	now   func() time.Time
	// fusedReply, set by tests only, rewrites a fused hold's reply.
	fusedReply func(any, error) (any, error)
}

// clock is this replica's monotonic time, ns since s was made: when a
// lease was last set, as far as this replica knows (a hold's at, renewed;
// a settle in doubt's at), is compared with it. Time.Sub reads the
// monotonic clock, so a wall clock stepped back does not make a live
// lease look young (renewed too late: lost), nor a settle in doubt stay in
// doubt past its lease. Redis's expiries stay on Redis's clock.
func (s *Shared) clock() int64 { return int64(s.now().Sub(s.epoch)) }

// queue queues sc in the runner's ordered stream and numbers it (order).
// A script not loaded yet is loaded first, outside the lock: a SCRIPT LOAD
// (up to 2 s against a slow Redis) must not hold up every other settle.
// One that could not be loaded is not sent (NotRun: its spend is carried).
func (s *Shared) queue(sc *rscript.Script, keys []string, args ...any) (*rscript.Queued, uint64) {
	s.r.Ready(sc)
	s.order.Lock()
	defer s.order.Unlock()
	s.ticket++
	return s.r.QueueLoaded(sc, keys, args...), s.ticket
}

// wait reads the reply of a call numbered ticket (queue). A call Redis
// answered NOSCRIPT (its script cache lost) did not run: it is queued
// again, with a new number, so that its reply is mirrored in the order
// Redis ran it. It returns the number of the call that ran.
func (s *Shared) wait(ctx context.Context, q *rscript.Queued, ticket uint64) (any, uint64, error) {
	for range 3 {
		v, err := q.WaitRan(ctx)
		if !rscript.NoScript(err) {
			return v, ticket, err
		}
		q.Ready()
		s.order.Lock()
		s.ticket++
		q, ticket = q.Requeue(), s.ticket
		s.order.Unlock()
	}
	v, err := q.WaitRan(ctx)
	return v, ticket, err
}

// SharedOptions configure a Shared holder.
type SharedOptions struct {
	// Prefix namespaces the keys ("tg" when empty; tests set their own).
	Prefix string
	Log    *slog.Logger
	// Mode, when set, says how a request's accounts are enforced; it is
	// asked only when Redis is away. Nil means EnforceDefault.
	Mode func(accounts []*Account) Enforcement
	// FailClosed refuses every budgeted request while Redis is away
	// (litellm_settings.budget_on_redis_failure: fail_closed).
	FailClosed bool
	// HoldTimeout bounds a hold's wait for Redis before it falls back to
	// the replica's own ledger (default 500 ms; a settle waits at least
	// 2 s). Tests that must not depend on a deadline being met set it long.
	HoldTimeout time.Duration
}

// NewShared returns a Redis holder on r.
func NewShared(r *rscript.Runner, o SharedOptions) *Shared {
	prefix := o.Prefix
	if prefix == "" {
		prefix = "tg"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.HoldTimeout <= 0 {
		o.HoldTimeout = 500 * time.Millisecond
	}
	tag := "{" + prefix + "}"
	return &Shared{r: r, tag: tag, prefix: tag + ":bud:", id: newReplicaID(), LeaseTTL: 15 * time.Minute, log: o.Log,
		mode: o.Mode, failShut: o.FailClosed, holdWait: o.HoldTimeout, stopped: make(chan struct{}),
		epoch: time.Now(), now: time.Now}
}

func (s *Shared) key(a *Account) string { return s.prefix + string(a.Kind) + ":" + a.ID }

// reserveScript: ARGV = the hold's numbers packed in one string (holdArgs:
// amount, lease ttl ms, mode, estimate, capped, the alive window ms, then
// each account's budget, as 8-byte big-endian integers), the lease, then
// per key: seed spent and period (reset time in ns; 0 none), in decimal
// (written as they are when the account is seeded), and the spend this
// replica booked without Redis that it carries: 0 (nothing, the common
// case) or a list of tagged items that Redis adds once each (carry.go).
// The numbers go packed because parsing a decimal ARGV (a strtod) and
// making each ARGV string cost Redis more than reading 8 bytes
// (docs/performance.md, branch redislua). Modes: 0 holds amount or refuses
// (strict); 1 holds the smaller of amount and what the tightest budget has
// left, admitting while spend + holds is below every budget (up to); 2
// holds amount (the worst case) when it fits, else, admitting while spend +
// holds is below every budget, the estimate for the one request per budget
// whose output runs as asked, or the capped amount for others (flex; see
// ReserveFlex). KEYS: one
// hash per account (its state and its leases, luaHold), last, the presence
// set. It returns {1, alive, remaining per account, amount held, capped
// (0/1)} or {0, account, spent, held, alive[, 1 when the last of the budget
// is held short]}.
var reserveScript = rscript.New(luaNow + luaHold + `
return bud_hold(KEYS, ARGV, 0, 0)
`)

// luaNow sets now, Redis's clock in milliseconds.
const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// luaNum defines bud_int and bud_add. Redis writes a Lua number in the
// shortest form (1.2345678901234568e+17 from 7.0): not an integer to
// HINCRBY (the next hold's pending spend, CarryOffline, replicas of the
// layout before) and, past 2^53, not exact. Amounts go up to MaxAmount
// (2^61): spent and held are written as integers, and a sum a Lua number
// cannot hold exactly is made by HINCRBY.
const luaNum = `
local function bud_int(x) return string.format('%d', x) end
-- bud_num reads the 8-byte big-endian two's complement number at byte i
-- of s: the same Lua number tonumber makes of its decimal (the sum
-- rounds once, as strtod does), past 2^53 and negative too, without a
-- strtod (ratelimit's rl_num).
local function bud_num(s, i)
  local a, b, c, d, e, f, g, h = string.byte(s, i, i + 7)
  local hi, lo = ((a * 256 + b) * 256 + c) * 256 + d, ((e * 256 + f) * 256 + g) * 256 + h
  if a < 128 then return hi * 4294967296 + lo end
  hi, lo = 4294967295 - hi, 4294967296 - lo
  return -(hi * 4294967296 + lo)
end
-- bud_add sets field f of k, whose value was old, to old + d: into the
-- HSET list t when a Lua number holds the sum exactly, else by HINCRBY
-- (Redis's int64). It returns the sum.
local function bud_add(k, t, f, old, d)
  local v = old + d
  if math.abs(old) < 2^53 and math.abs(d) < 2^53 and math.abs(v) < 2^53 then
    t[#t + 1], t[#t + 2] = f, bud_int(v)
    return v
  end
  return redis.call('HINCRBY', k, f, bud_int(d))
end
`

// luaHold defines bud_hold(KEYS, ARGV, ko, ao), reserveScript's work (now
// set): its keys start after KEYS[ko], its arguments after ARGV[ao] (0, 0
// alone; the gate's counts and arguments before them when fused).
//
// An account is one hash: 'spent', 'held', 'period', 'short' (the lease of
// the last hold cut short), 'y' (when its expiry was last set), 'nx' (no
// lease expires before it), 'lx' (when the layout before this one was last
// swept) and one field per lease, lease -> "amount:expiry ms". A hold reads
// the hash once (HMGET) and writes it once (HSET); a settle reads it once
// and writes it twice (HSET, HDEL). Expired leases are swept only when one
// may have expired (now >= nx): a lease still frees its budget at the first
// hold after it expires, as when every hold swept a sorted set, and the
// sweep (HGETALL) runs about once per lease lifetime.
//
// A hold that carries spend to Redis (only after an outage) also leaves one
// field per item, 'c:<tag>' -> "0:expiry ms" (bud_carry, carry.go): a
// marker that makes the item count once however often it is sent, and to
// everything else a lease of nothing, swept a day later.
//
// The hash is the key the layout before it used for spent/held/period/short,
// with the leases in two more keys (k:h, amount, and k:e, a sorted set by
// expiry), so replicas of both versions share spend and holds during a
// rolling upgrade. Leases of the old layout are swept from here about once
// per lease lifetime ('lx'), so an old replica that crashed holding does not
// keep its holds once no old replica is left to expire them.
//
// The key's expiry (a week) is set when made and then about once a day, not
// on every hold, before the hold is decided: a refused hold that seeded
// the hash leaves it expiring too. Numbers are written as integers (luaNum).
const luaHold = luaNum + `
-- bud_rsset names the reseed set (Shared.reseedKey) from the presence
-- set's name (its last key): the same '{prefix}' slot, and no change to
-- the scripts' KEYS.
local function bud_rsset(presence)
  return (string.match(presence, '^(.*):replicas$') or presence) .. ':reseed'
end
local function bud_lease(v)
  local a, x = string.match(v, '^(%-?%d+):(%d+)$')
  return tonumber(a), tonumber(x)
end
-- bud_carry applies to k the carried items of list (carry.go): spend
-- booked without Redis, "c:<tag>=<amount>", added once per tag (its marker
-- 'c:<tag>' is a zero-amount lease, swept a day later); a settle whose
-- answer was lost, "s:<lease>=<amount>", applied only while its lease is
-- there (the settle deletes it), then marked 'c:s<lease>'. fresh: k was
-- just seeded, with a seed that excludes every item: each applies. It
-- returns spent, held and nx after them.
local function bud_carry(k, list, s, hd, nx, fresh)
  local mexp, marked = now + ` + markerTTL + `, false
  for kind, id, amt in string.gmatch(list, '([cs]):([^=,]+)=(%-?%d+)') do
    local m = (kind == 'c' and 'c:' or 'c:s') .. id
    local apply = fresh or redis.call('HEXISTS', k, m) == 0
    if apply and kind == 's' then
      local v = redis.call('HGET', k, id)
      if v then
        hd = redis.call('HINCRBY', k, 'held', bud_int(-(bud_lease(v) or 0)))
        redis.call('HDEL', k, id)
        if redis.call('HGET', k, 'short') == id then redis.call('HDEL', k, 'short') end
      elseif not fresh then
        apply = false
      end
    end
    if apply then
      s = redis.call('HINCRBY', k, 'spent', amt)
      redis.call('HSET', k, m, '0:' .. bud_int(mexp))
      marked = true
    end
  end
  if marked and (not nx or mexp < nx) then
    nx = mexp
    redis.call('HSET', k, 'nx', bud_int(nx))
  end
  return s, hd, nx
end
-- bud_sweep drops k's expired leases; it returns held and nx after it,
-- what the allotments among them held (their names start 'al.',
-- allot.go), and what a pending reseed that expired unread held. A dead
-- replica's allotment may have had spend booked on it that Redis lacks
-- (at most what it held): its amount stays held, moved to the pending
-- reseed 'rq' (a lease-shaped "amount:expiry", bud_rq), and the account
-- is listed in the reseed set (KEYS' presence set name + ':rs', ARGV
-- rsSet): a replica reads the store's spend for it off the request path
-- and brings Redis to it (reseedScript), releasing 'rq'. Until then its
-- budget counts the dead replica's allotment as spent or held: never
-- less than the truth. A pending reseed no replica read within
-- reseedWait expires here: released, and marked 'rs' (by what it held)
-- for the next hold's reseed from its own view, the behaviour before
-- branch reseed (and an old replica's: it frees 'rq' as any lease).
local function bud_sweep(k, hd, rsset)
  local all = redis.call('HGETALL', k)
  local nx, del, allot, lapsed, pend = false, {}, 0, 0, 0
  for j = 1, #all, 2 do
    local a, x = bud_lease(all[j + 1])
    if a then
      if x <= now then
        del[#del + 1] = all[j]
        if string.sub(all[j], 1, 3) == 'al.' then
          -- Kept held (as 'rq'): only the part below zero is freed.
          allot = allot + math.max(a, 0)
          hd = hd - a + math.max(a, 0)
        else
          hd = hd - a
          if all[j] == 'rq' then lapsed = lapsed + math.max(a, 0) end
        end
      else
        if all[j] == 'rq' then pend = a end
        if not nx or x < nx then nx = x end
      end
    end
  end
  if #del > 0 then redis.call('HDEL', k, unpack(del)) end
  if lapsed > 0 then redis.call('HINCRBY', k, 'rs', bud_int(lapsed)) end
  if allot > 0 then
    local rx = now + ` + reseedWait + `
    redis.call('HSET', k, 'rq', string.format('%d:%d', pend + allot, rx))
    redis.call('SADD', rsset, k)
    if not nx or rx < nx then nx = rx end
  end
  if nx then
    redis.call('HSET', k, 'held', bud_int(hd), 'nx', bud_int(nx))
  else
    redis.call('HSET', k, 'held', bud_int(hd))
    redis.call('HDEL', k, 'nx')
  end
  return hd, nx, allot, lapsed
end
-- bud_legacy drops the expired leases of the layout before (k:h, k:e).
-- k:e may be another account's one hash (an id "<id>:e" names it): only
-- a sorted set is the layout before. (k:h is a hash either way, and holds
-- none of the old leases' names unless it is theirs.)
local function bud_legacy(k, hd, ttl)
  local h, e = k .. ':h', k .. ':e'
  if redis.call('TYPE', e).ok == 'zset' then
    for _, l in ipairs(redis.call('ZRANGEBYSCORE', e, '-inf', now)) do
      local a = redis.call('HGET', h, l)
      if a then hd = hd - tonumber(a) end
      redis.call('HDEL', h, l)
      redis.call('ZREM', e, l)
    end
  end
  redis.call('HSET', k, 'held', bud_int(hd), 'lx', bud_int(now + ttl))
  return hd
end
-- bud_seed brings k to this replica's seed (its view of the spend less
-- what it has not taken to Redis yet; period: the seed's period, as sent)
-- when Redis lacks the account (cs false) or has it in an earlier period:
-- fresh. A hash Redis lacked although the seeding replica had heard it
-- there (lost: emptied, failed over to an empty replica, a week idle) is
-- marked 'rv' with its period: that replica may have heard less of its
-- spend than others. While the mark is for the period Redis has, a seed
-- above Redis's spend raises it (the largest view of the replicas that
-- hold or flush, not the first one's). Not on a first seed: a view may
-- count a carry twice for a moment (never not at all), and the raise
-- would keep that. An edit (setSpentScript) and a new period end the
-- mark. Spend with no period (an edit that made the hash, its period not
-- known) is this period's: kept. It returns spent and whether k was fresh.
local function bud_seed(k, cs, cp, rv, seed, period, lost)
  local pn = tonumber(period)
  if cs ~= false and cp == false and pn > 0 then
    -- Spend without a period: only an edit (setSpentScript) not told its
    -- period makes one. It is the spend now: taken as this period's
    -- (kept, never reseeded from a view: that undid the edit).
    redis.call('HSET', k, 'period', period)
    return tonumber(cs), false
  end
  if cs == false or tonumber(cp or 0) < pn then
    if cs == false and lost then
      redis.call('HSET', k, 'spent', seed, 'period', period, 'rv', period)
    else
      redis.call('HSET', k, 'spent', seed, 'period', period)
    end
    return tonumber(seed), true
  end
  local s = tonumber(cs)
  -- (A view past 2^53 was heard through Lua numbers, rounded: an excess
  -- within a few units in the last place is no sign of a loss.)
  if rv == period and tonumber(cp or 0) == pn and tonumber(seed) > s + math.abs(s) / 2^50 then
    s = tonumber(seed)
    redis.call('HSET', k, 'spent', seed)
  end
  return s, false
end
local function bud_hold(KEYS, ARGV, ko, ao)
local p, lease = ARGV[ao + 1], ARGV[ao + 2]
local amount, ttl, mode = bud_num(p, 1), bud_num(p, 9), bud_num(p, 17)
local n = #KEYS - ko - 1
local alive = math.max(redis.call('ZCOUNT', KEYS[#KEYS], now - bud_num(p, 41), '+inf'), 1)
local rsset = bud_rsset(KEYS[#KEYS])
-- First bring every account up to date (seed, spend booked while Redis was
-- away, expired holds), so that a refusal below loses none of it. spent
-- and held keep each account's values from here on (one read each).
local spent, held, nxs, shorts, budget = {}, {}, {}, {}, {}
for i = 1, n do
  local k = KEYS[ko + i]
  local a = ao + 3 * i + 1 -- period; seed before it, carried items after
  local period, list = tonumber(ARGV[a]), ARGV[a + 1]
  budget[i] = bud_num(p, 41 + 8 * i)
  local cur = redis.call('HMGET', k, 'spent', 'period', 'held', 'y', 'nx', 'lx', 'short', 'rs', 'rv')
  local touched = now - tonumber(cur[4] or 0) < 86400000
  local hd, nx = tonumber(cur[3] or 0), cur[5] and tonumber(cur[5])
  -- seed excludes every replica-local spend not yet in Redis; this
  -- hold carries its share of it (list), the rest comes with other holds.
  -- A carried list ending 'L' says this replica has heard k on Redis.
  local s, fresh = bud_seed(k, cur[1], cur[2], cur[9], ARGV[a - 1], ARGV[a], string.sub(list, -1) == 'L')
  if list ~= '0' and list ~= 'L' then s, hd, nx = bud_carry(k, list, s, hd, nx, fresh) end
  local rs, swept = tonumber(cur[8] or 0), 0
  if nx and now >= nx then
    local lapsed
    hd, nx, swept, lapsed = bud_sweep(k, hd, rsset)
    rs = rs + lapsed
  end
  if rs > 0 or swept > 0 then
    -- A dead replica's allotment was swept: its bookings since its last
    -- flush are the store's alone. This hold's seed (its view, which has
    -- the store's spend when that is more) raises Redis's spend at once,
    -- never lowering it, by no more than the swept allotments held. The
    -- store also has what live replicas booked on their allotments and
    -- not yet flushed (at most what their leases hold): that is left out,
    -- their flushes bring it. Of a sweep just made (swept), what the seed
    -- shows moves from the pending reseed 'rq' to 'spent' (spent + held
    -- unchanged); the rest stays held until a replica reads the store
    -- (reseedScript). A mark 'rs' (an old replica's sweep, or a pending
    -- reseed no replica read) is taken from the seed alone, as before.
    local live, all = 0, redis.call('HGETALL', k)
    for j = 1, #all, 2 do
      if string.sub(all[j], 1, 3) == 'al.' then
        local la = bud_lease(all[j + 1])
        if la then live = live + math.max(la, 0) end
      end
    end
    local view = tonumber(ARGV[a - 1]) - live
    if rs > 0 then
      local to = math.min(view, s + rs)
      if not fresh and to > s then
        s = to
        redis.call('HSET', k, 'spent', bud_int(s))
      end
      redis.call('HDEL', k, 'rs')
    end
    if swept > 0 then
      local to = math.min(view, s + swept)
      if not fresh and to > s then
        local x = to - s
        s, hd = to, hd - x
        local ra, rx = bud_lease(redis.call('HGET', k, 'rq') or '0:0')
        redis.call('HSET', k, 'spent', bud_int(s), 'held', bud_int(hd))
        if ra - x > 0 then
          redis.call('HSET', k, 'rq', string.format('%d:%d', ra - x, rx))
        else
          redis.call('HDEL', k, 'rq')
        end
      end
    end
  end
  if now >= tonumber(cur[6] or 0) then hd = bud_legacy(k, hd, ttl) end
  if not touched then
    -- Before a refusal below can return: a hash this hold seeded (a
    -- fresh key past its budget) gets its expiry, as does one a day
    -- untouched, whether or not the hold is granted.
    redis.call('HSET', k, 'y', bud_int(now))
    redis.call('PEXPIRE', k, 604800000)
  end
  spent[i], held[i], nxs[i], shorts[i] = s, hd, nx, cur[7]
end
-- shortBusy is the first account whose last hold held short is in flight.
local function shortBusy()
  for i = 1, n do
    if shorts[i] and redis.call('HEXISTS', KEYS[ko + i], shorts[i]) == 1 then return i end
  end
  return 0
end
local function refusal(i, busy)
  if busy then return {0, i, spent[i], held[i], alive, 1} end
  return {0, i, spent[i], held[i], alive}
end
local asked, fits, least, capped = amount, true, nil, 0
for i = 1, n do
  local left = budget[i] - spent[i] - held[i]
  if (mode ~= 0 and left <= 0) or (mode == 0 and amount > left) then return refusal(i, false) end
  if amount > left then fits = false end
  if least == nil or left < least then least = left end
end
local short = false
if mode == 1 and not fits then
  -- A hold cut short may cost more than it holds: one at a time per budget.
  local b = shortBusy()
  if b > 0 then return refusal(b, true) end
  amount, short = least, true
elseif mode == 2 and not fits then
  if shortBusy() > 0 then
    amount, capped = math.min(bud_num(p, 33), asked, least), 1
  else
    amount, short = math.min(bud_num(p, 25), asked, least), true
  end
end
local out = {1, alive}
local exp = now + ttl
for i = 1, n do
  local k = KEYS[ko + i]
  local f = {lease, string.format('%d:%d', amount, exp)}
  local hd = bud_add(k, f, 'held', held[i], amount)
  if not nxs[i] or exp < nxs[i] then f[#f+1], f[#f+2] = 'nx', bud_int(exp) end
  if short then f[#f+1], f[#f+2] = 'short', lease end
  redis.call('HSET', k, unpack(f))
  out[2+i] = budget[i] - spent[i] - hd
end
out[#out+1] = amount
out[#out+1] = capped
return out
end
`

// settleScript: ARGV = actual, lease, and a value returned first as is (0:
// the settle counts no replicas; the caller takes the hold's count and the
// heartbeat's); KEYS as for reserveScript. Returns {that value, then per
// account spent and held, then per account the period Redis has it in},
// spent -1 for an account Redis no longer has (flushed, restarted): its
// spend is left for the next hold to carry, and reseeds it. The period
// lets a reply of a period the local view has rolled past be dropped
// (mirrorLocked).
var settleScript = rscript.New(luaSettle + `
return bud_settle(KEYS, ARGV, 0, 0)
`)

// luaSettle defines bud_settle(KEYS, ARGV, ko, ao) (offsets as bud_hold's),
// settleScript's work. It needs no clock: a lease is found by name, and an
// expired one not yet swept is settled as one in force (its expiry only
// frees what a dead replica held).
const luaSettle = luaNum + `
local function bud_settle(KEYS, ARGV, ko, ao)
local actual, lease = tonumber(ARGV[ao + 1]), ARGV[ao + 2]
local out = {tonumber(ARGV[ao + 3])}
local n = #KEYS - ko - 1
for i = 1, n do
  local k = KEYS[ko + i]
  -- An account Redis has always has its spend (seeded, set or reset).
  -- The marker 'c:s<lease>' says a later hold already applied this settle
  -- (its answer was lost, and it ran late; bud_carry): it counts once,
  -- and only frees its lease if that is still there.
  local cur = redis.call('HMGET', k, 'spent', 'held', 'short', lease, 'c:s' .. lease, 'period')
  out[1 + 2 * n + i] = tonumber(cur[6] or 0)
  local exists = cur[1] ~= false
  local held = tonumber(cur[2] or 0)
  local a = cur[4] and tonumber(string.match(cur[4], '^(%-?%d+)'))
  local act = actual
  if cur[5] then act = 0 end
  if not exists then
    out[2*i], out[2*i+1] = -1, 0
    if cur[4] then redis.call('HDEL', k, lease) end
  else
    local s, f = tonumber(cur[1]), {}
    if act ~= 0 then s = bud_add(k, f, 'spent', s, act) end
    if a then held = bud_add(k, f, 'held', held, -a) end
    if #f > 0 then redis.call('HSET', k, unpack(f)) end
    if cur[3] == lease then
      redis.call('HDEL', k, lease, 'short')
    elseif cur[4] then
      redis.call('HDEL', k, lease)
    end
    out[2*i], out[2*i+1] = s, held
  end
end
return out
end
`

// luaExpire gives a hash that has no expiry the week a hold gives the
// hashes it touches (luaHold): a reset or an edit of an account Redis did
// not have makes its hash, and without this an account never held again
// (a deleted key's) kept it for ever.
const luaExpire = `
local function bud_expire(k)
  if redis.call('PTTL', k) == -1 then redis.call('PEXPIRE', k, 604800000) end
end
`

// resetScript starts a new period: ARGV = period (ns). Only a newer period
// resets, and only once the current one has ended (by Redis's clock), so
// replicas rolling over together reset once even when they compute
// different next reset times.
var resetScript = rscript.New(luaExpire + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000000 + tonumber(t[2]) * 1000
local cur = tonumber(redis.call('HGET', KEYS[1], 'period') or 0)
if cur < tonumber(ARGV[1]) and cur <= now then
  redis.call('HSET', KEYS[1], 'spent', 0, 'period', ARGV[1])
  bud_expire(KEYS[1])
  -- A pending reseed is the period before's spend: released.
  local rq = redis.call('HGET', KEYS[1], 'rq')
  if rq then
    redis.call('HINCRBY', KEYS[1], 'held', -(tonumber(string.match(rq, '^(%-?%d+)')) or 0))
    redis.call('HDEL', KEYS[1], 'rq', 'rs')
  end
end
return 1
`)

// holdArgs packs a hold's numbers (reserveScript's ARGV[1]) with room for
// accounts budgets after them.
func holdArgs(accounts int, nums ...int64) []byte {
	b := make([]byte, 0, 8*(len(nums)+accounts))
	for _, n := range nums {
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return b
}

type sharedHold struct {
	s       *Shared
	lease   string
	at      int64        // Shared.clock when the hold was placed (its lease's age)
	renewed atomic.Int64 // Shared.clock its lease was last renewed from (Renew; 0: never)
	pending []int64      // unsynced spend sent with the hold, per shared account
	marks   []int64      // per shared account, landedMark before the hold was sent (hear)
	sent    [][]string   // items in doubt sent with it, per shared account; nil when none
	keys    []string     // the budgeted accounts' keys, one each, then the presence set
	shared  []*Account
	others  []*Account // unbudgeted accounts, booked in process
	amount  Amount
	capped  bool
	settled bool
	gate    Gate // settled in the same script (SettleGated)
	// ticket is the hold's number in the ordered stream (Shared.queue):
	// a later call's reply mirrored before the hold's answer was read
	// counted what it carried twice (ranOff).
	ticket uint64
}

// ask is one hold asked of Redis: amount is the worst case.
type ask struct {
	mode   holdMode
	amount Amount
	flex   Flex // holdFlex
}

type holdMode uint8

const (
	holdStrict holdMode = iota // Reserve
	holdUpTo                   // ReserveUpTo
	holdFlex                   // ReserveFlex
)

// Reserve holds amount on the budgeted accounts in Redis, or refuses.
func (s *Shared) Reserve(ctx context.Context, accounts []*Account, amount Amount) (Hold, error) {
	return s.reserve(ctx, accounts, ask{mode: holdStrict, amount: max(amount, 0)})
}

// ReserveUpTo holds up to amount on the budgeted accounts in Redis.
func (s *Shared) ReserveUpTo(ctx context.Context, accounts []*Account, amount Amount) (Hold, error) {
	return s.reserve(ctx, accounts, ask{mode: holdUpTo, amount: max(amount, 0)})
}

// ReserveFlex holds f on the budgeted accounts in Redis (see ReserveFlex).
func (s *Shared) ReserveFlex(ctx context.Context, accounts []*Account, f Flex) (Hold, error) {
	return s.reserve(ctx, accounts, ask{mode: holdFlex, amount: max(f.Worst, 0), flex: f})
}

func (s *Shared) reserve(ctx context.Context, accounts []*Account, q ask) (Hold, error) {
	h, _, err := s.reserveWith(ctx, accounts, q, nil)
	return h, err
}

func (s *Shared) reserveWith(ctx context.Context, accounts []*Account, q ask, g Gate) (Hold, bool, error) {
	amount := q.amount
	h := &sharedHold{s: s, amount: amount}
	for _, a := range accounts {
		if a.Budget() == Unlimited {
			h.others = append(h.others, a)
		} else {
			h.shared = append(h.shared, a)
		}
	}
	if len(h.shared) == 0 {
		hd, err := s.local(accounts, q, nil)
		return hd, false, err
	}
	// While Redis is known to be down, a request spends its share; one
	// enforced strictly still asks Redis (which may be back already)
	// rather than be refused on a stale verdict.
	if s.r.Degraded() && !s.closed(accounts) {
		hd, err := s.offline(accounts, q, h.shared, "Redis is unreachable")
		return hd, false, err
	}
	h.lease, h.at = newLease(), s.clock()
	packed := holdArgs(len(h.shared), int64(amount), s.LeaseTTL.Milliseconds(), int64(q.mode), int64(max(q.flex.Estimate, 0)),
		int64(max(q.flex.Capped, 0)), AliveWindow.Milliseconds())
	args := []any{nil, h.lease}
	for i, a := range h.shared {
		h.keys = append(h.keys, s.key(a))
		h.marks = append(h.marks, a.landedMark()) // before the call is sent
		// Spend booked while Redis was away goes with this hold, and with
		// no other: concurrent holds must not each carry it. It goes tagged
		// with the lease, with the items whose earlier carrying was lost
		// (carry.go).
		pending := a.claimUnsynced()
		h.pending = append(h.pending, pending)
		carry, sent, seed, period := a.holdArg(pending, h.lease, s.horizon(), h.at)
		if sent != nil {
			if h.sent == nil {
				h.sent = make([][]string, len(h.shared))
			}
			h.sent[i] = sent
		}
		packed = binary.BigEndian.AppendUint64(packed, uint64(a.Budget()))
		args = append(args, seed, period, carry)
	}
	args[0] = string(packed)
	h.keys = append(h.keys, s.presenceKey())
	// Not the request's context: a client leaving mid-script must not
	// leave a hold in Redis that this replica then ignores.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.holdWait)
	defer cancel()
	var res []int64
	var err error
	if g == nil {
		q, ticket := s.queue(reserveScript, h.keys, args...)
		var v any
		v, h.ticket, err = s.wait(rctx, q, ticket)
		res, err = rscript.Int64s(v, err)
	} else {
		var gres []int64
		var code int64
		gk, ga := g.AdmitCall()
		keys, fargs := fuse(gk, ga, h.keys, args)
		q, ticket := s.queue(fusedFor(g.GateLua()).hold, keys, fargs...)
		v, tk, rerr := s.wait(rctx, q, ticket)
		h.ticket = tk
		if s.fusedReply != nil {
			v, rerr = s.fusedReply(v, rerr)
		}
		gres, res, code, err = fusedReply(v, rerr)
		switch {
		case err != nil:
			g.Lost()
		case code == 2:
			// Refused by the gate before the budgets were read: the
			// pending spend was not taken (the next hold, or the sweep,
			// carries it).
			h.landed(outNotRun, nil)
			s.oweAll(h.shared)
			if gerr := g.Admitted(gres, false); gerr != nil {
				return nil, true, gerr
			}
			g.Lost() // a refusal whose gate part reads as an admission: whatever it took, given back
			return nil, true, fmt.Errorf("redis: fused hold answered a refusal that refuses nothing: %v", gres)
		case code == 0 && gres != nil:
			_ = g.Admitted(gres, false) // the gate's state, for headers; not taken
		case code == 1:
			// The gate's admission was taken, whatever the hold's part
			// says: from here, a refusal or a malformed reply of the hold
			// leaves it taken, and the caller gives it back (ReserveGated).
			if gerr := g.Admitted(gres, true); gerr != nil {
				h.landed(outRan, nil)
				go h.releaseLease()
				return nil, true, gerr
			}
		}
	}
	if err != nil {
		s.fallback(err)
		// The script may have run (or may yet): once it is known how the
		// call ended, give the pending spend back when Redis never ran it,
		// else keep it in doubt (it goes again, tagged, with a later hold),
		// and drop the hold it may have placed.
		s.outcomes.Add(1)
		s.undecided.Add(1)
		go func() {
			o := outUnknown
			if rscript.NotRun(rscript.Final(err)) {
				o = outNotRun
			}
			h.landed(o, nil)
			if o == outNotRun {
				s.oweAll(h.shared) // back to unsynced: swept once Redis answers
			}
			s.undecided.Add(-1)
			s.outcomes.Done()
			if o == outUnknown {
				for _, a := range h.shared {
					s.settleDoubt(a)
				}
				h.releaseLease()
			}
		}()
		hd, err := s.offline(accounts, q, h.shared, "Redis did not answer")
		return hd, false, err
	}
	if len(res) >= 5 && res[0] == 0 && res[1] >= 1 && int(res[1]) <= len(h.shared) {
		a := h.shared[res[1]-1]
		a.hear(a.Budget()-Amount(res[2]+res[3]), res[4], h.marks[res[1]-1])
		h.landed(outRan, func(b *Account) bool { return b == a }) // heard first, as below
		ex := &ExceededError{Kind: a.Kind, ID: a.ID, Spent: Amount(res[2]), Reserved: Amount(res[3]),
			Budget: a.Budget(), Need: amount, ResetAt: a.ResetAt()}
		if len(res) == 6 {
			ex.Detail = shortBusy(a, amount).Detail
		}
		return nil, g != nil, ex
	}
	if len(res) != 4+len(h.shared) || res[0] != 1 {
		h.landed(outRan, nil)
		go h.releaseLease()
		return nil, g != nil, fmt.Errorf("redis: budget hold answered %v", res)
	}
	// Heard before the pending spend stops counting as carried, so a share
	// check never misses it.
	for i, a := range h.shared {
		a.hear(Amount(res[2+i]), res[1], h.marks[i])
	}
	h.amount, h.capped = Amount(res[len(res)-2]), res[len(res)-1] == 1
	h.landed(outRan, heardAll)
	for _, a := range h.others { // in-process bookkeeping of the unbudgeted ones
		a.used.Add(int64(h.amount))
	}
	s.live.add(h) // its lease renewed while it runs (renew.go)
	return h, g != nil, nil
}

// fusedReply reads a fused hold's reply: {2, gate refusal}, {0, budget
// refusal(, gate state)} or {1, gate admission, hold}; code is its first
// element (1: the gate's admission was taken).
func fusedReply(v any, err error) (gate, hold []int64, code int64, _ error) {
	if err != nil {
		return nil, nil, -1, err
	}
	arr, ok := v.([]any)
	if !ok || len(arr) < 2 {
		return nil, nil, -1, fmt.Errorf("redis: fused hold answered %v", v)
	}
	code, _ = arr[0].(int64)
	switch {
	case code == 2:
		gate, err = rscript.Int64s(arr[1], nil)
		return gate, nil, code, err
	case code == 0:
		hold, err = rscript.Int64s(arr[1], nil)
		if err == nil && len(arr) == 3 {
			gate, err = rscript.Int64s(arr[2], nil)
		}
		return gate, hold, code, err
	case code == 1 && len(arr) == 3:
		if gate, err = rscript.Int64s(arr[1], nil); err == nil {
			hold, err = rscript.Int64s(arr[2], nil)
		}
		return gate, hold, code, err
	}
	return nil, nil, -1, fmt.Errorf("redis: fused hold answered %v", v)
}

// local holds in process: requests without a budgeted account.
func (s *Shared) local(accounts []*Account, q ask, budgeted []*Account) (Hold, error) {
	var r *Reservation
	var err error
	switch q.mode {
	case holdFlex:
		r, err = ReserveFlex(accounts, q.flex)
	default:
		r, err = reserve(accounts, q.amount, q.mode == holdUpTo)
	}
	if err != nil {
		return nil, err
	}
	return &localHold{r: r, budgeted: budgeted}, nil
}

type localHold struct {
	r        *Reservation
	budgeted []*Account
	s        *Shared // offline: the budgeted accounts' spend is owed to Redis
}

func (l *localHold) Settle(actual Amount) []*Account {
	// unsynced first: a share check racing this counts the spend twice
	// for a moment (refusing), never not at all.
	for _, a := range l.budgeted {
		a.beginMove() // ends once spent has it too
		a.remote().unsynced.Add(int64(actual))
	}
	defer func() {
		for _, a := range l.budgeted {
			a.endMove()
		}
		if l.s != nil && actual != 0 {
			// Carried by the account's next hold, or by the sweep once
			// Redis answers (this replica's view may refuse the account
			// before any hold: owed.go).
			l.s.oweAll(l.budgeted)
		}
	}()
	return l.r.Settle(actual)
}

func (l *localHold) Release() { l.r.Release() }

func (l *localHold) Held() Amount { return l.r.amount }

func (l *localHold) Capped() bool { return l.r.capped }

func (s *Shared) fallback(err error) {
	// Redis did not answer a hold or a settle: the runner marks it down
	// until it answers again, for budgets and limits alike, so later
	// requests do not each wait out the deadline.
	if !rscript.IsReply(err) { // an error reply means Redis is up
		s.r.Degrade(err)
	}
	now := time.Now().Unix()
	if last := s.warned.Load(); now-last >= 10 && s.warned.CompareAndSwap(last, now) {
		s.log.Warn("redis unreachable: budget holds fall back to this replica's own ledger", "err", err)
	}
}

// Settle books actual on every account and drops the hold.
func (h *sharedHold) Settle(actual Amount) []*Account {
	return h.finish(actual, true)
}

// Release drops the hold.
func (h *sharedHold) Release() { h.finish(0, false) }

// Held is what the hold took.
func (h *sharedHold) Held() Amount { return h.amount }

// Capped reports that the request's output must fit the hold.
func (h *sharedHold) Capped() bool { return h.capped }

// landed ends this hold's carrying of pending spend and of items in
// doubt: Redis has them (outRan), or pending goes back to be carried by a
// later hold (outNotRun), or stays in doubt (outUnknown).
//
// heard says which accounts the answer told the remaining of (nil: none).
func (h *sharedHold) landed(o outcome, heard func(*Account) bool) {
	for i, a := range h.shared {
		var sent []string
		if h.sent != nil {
			sent = h.sent[i]
		}
		a.landCarry(o, h.pending[i], h.lease, sent, heard != nil && heard(a), h.ticket)
	}
}

// heardAll is landed's heard when the answer told every account's remaining.
func heardAll(*Account) bool { return true }

// horizon is how long a settle stays in doubt as one (applied only while
// its lease is there) before it is carried as plain spend: short enough
// that the lease has not expired by Redis's clock, give or take skew.
func (s *Shared) horizon() int64 { return int64(s.LeaseTTL) * 3 / 4 }

func newLease() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// releaseLease drops the hold's lease on Redis (after a failed reserve),
// retrying for a while: a lease left behind holds budget on every replica
// until it expires.
func (h *sharedHold) releaseLease() {
	for wait := 500 * time.Millisecond; ; wait *= 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := h.s.r.Run(ctx, settleScript, h.keys, 0, h.lease, 0)
		cancel()
		if err = rscript.Final(err); err == nil || wait > 16*time.Second {
			return
		}
		time.Sleep(wait)
	}
}

// mirrorAt sets the local view of a shared account from Redis's spend
// plus what this replica booked that Redis does not have yet (offRedis),
// as the reply of the call numbered ticket (Shared.queue) told it. A reply
// older than one already mirrored is dropped: Redis ran it first, so the
// later figure has its spend, and this one lacks spend the later one has
// (another settle, or an allotment flush that has since moved its booking
// out of 'allotted'). It reports whether it mirrored.
//
// The view is read and set when no move between spent and offRedis is
// half done (as seed reads it), and set by compare-and-swap: a move that
// adds to offRedis after the read and to spent after the swap is then
// counted once, not twice or never.
//
// period is the budget period Redis had the account in when it ran the
// call: a figure of a period older than the view's (the call ran before
// Redis's reset, its reply read after this replica rolled its view over)
// is dropped, or the new period's view would start from the old period's
// spend (and a hold reseeding Redis's new period from the view would take
// it there: branch ledgergaps).
func mirrorAt(a *Account, redisSpent int64, ticket uint64, period int64) bool {
	a.remote().mirrorMu.Lock()
	defer a.remote().mirrorMu.Unlock()
	return mirrorLocked(a, redisSpent, ticket, period)
}

// mirrorFlushed applies an allotment flush's answer to a's view: booked,
// spend this replica had booked against its allotment and the flush took
// to Redis, leaves 'allotted', and the view is mirrored from redisSpent
// (which has it). The view does not dip meanwhile: 'allotted' shrinks
// first while 'spent' still counts the booking (as Redis now does), and
// the mirror keeps it; only when a later figure was mirrored already
// (which counted the booking both on Redis and in 'allotted') is it taken
// out of 'spent' as well. Under mirrorMu, so that no mirror runs between.
//
// A flush of a period older than the view's (mirrorAt) takes the booking
// out of 'allotted' only: the view keeps it, as a rollover keeps what was
// not on Redis yet (rollTo: over, never under), until a figure of its own
// period is mirrored.
func mirrorFlushed(a *Account, redisSpent int64, ticket uint64, booked int64, period int64) {
	a.remote().mirrorMu.Lock()
	defer a.remote().mirrorMu.Unlock()
	a.beginMove()
	a.remote().allotted.Add(-booked)
	if ticket < a.remote().mirrored {
		a.spent.Add(-booked)
		a.endMove()
		a.used.Add(-booked)
		return
	}
	a.endMove()
	mirrorLocked(a, redisSpent, ticket, period)
}

// mirrorSettled applies a settle's answer to a's view: mirrored (mirrorAt)
// when Redis ran it in the view's period or a later one. Of an older
// period (Redis not reset yet when it ran, or the period's end moved
// without a reset: an operator's budget_reset_at or a budget_duration
// given to the account) its figure is not taken, but the settle's own
// spend, actual, is booked in the view, as a rollover keeps what was not
// on Redis yet (rollTo) and a flush's booking stays (mirrorFlushed): over,
// never under. Dropped, a hold reseeding Redis's period from the view
// lost it (a strict budget passable by it; after a moved end, spend that
// was never reset).
func mirrorSettled(a *Account, redisSpent int64, ticket uint64, period int64, actual int64) {
	a.remote().mirrorMu.Lock()
	defer a.remote().mirrorMu.Unlock()
	if olderPeriod(period, a.resetAt.Load()) {
		a.beginMove()
		a.spent.Add(actual)
		a.endMove()
		a.used.Add(actual)
		return
	}
	mirrorLocked(a, redisSpent, ticket, period)
}

// olderPeriod reports whether a script's reply says a period (ns) older
// than the view's reset time. The reply's period went through a Lua number:
// past 2^53 ns it is rounded (to 256 ns now), a reset time with
// microseconds (an operator's budget_reset_at, PostgreSQL's) down as often
// as not, and compared as is it read as older than the very period it is
// (every answer dropped: TestProbeSettleMirrorsWithAResetTimeNotWholeSeconds).
// Both are compared as Lua compares them, rounded to a double alike;
// periods are seconds apart.
func olderPeriod(period, resetAt int64) bool {
	return float64(period) < float64(resetAt)
}

// mirrorLocked is mirrorAt with a.mirrorMu held.
func mirrorLocked(a *Account, redisSpent int64, ticket uint64, period int64) bool {
	if ticket < a.remote().mirrored || olderPeriod(period, a.resetAt.Load()) {
		return false
	}
	a.remote().mirrored = ticket
	for {
		gen := a.remote().moved.Load()
		if a.remote().movers.Load() == 0 {
			old := a.spent.Load()
			v := redisSpent + a.offRedis()
			if a.remote().movers.Load() == 0 && a.remote().moved.Load() == gen && a.spent.CompareAndSwap(old, v) {
				a.used.Add(v - old)
				return true
			}
		}
		runtime.Gosched()
	}
}

func (h *sharedHold) finish(actual Amount, spend bool) (soft []*Account) {
	return h.send(actual, spend).wait()
}

// settling is a hold's settle queued in the runner's ordered stream and
// not yet answered (sharedHold.send); wait reads its reply.
type settling struct {
	h      *sharedHold
	actual Amount
	spend  bool
	soft   []*Account // crossings of the unbudgeted accounts, booked at once
	call   *rscript.Queued
	ticket uint64  // its place in the ordered stream (Shared.queue)
	marks  []int64 // per shared account, landedMark before it was queued (hear)
	done   bool
}

// send books the unbudgeted accounts in process and queues the settle on
// Redis (with the gate's settlement when fused), without waiting for its
// reply: every script this replica queues after it runs after it on Redis.
// Its wait must be called. A hold already settled gives a settling that
// does nothing.
func (h *sharedHold) send(actual Amount, spend bool) *settling {
	if h == nil || h.settled {
		return &settling{done: true}
	}
	h.settled = true
	h.s.live.remove(h) // no longer renewed: the settle drops the lease
	p := &settling{h: h, actual: actual, spend: spend}
	for _, a := range h.others {
		a.used.Add(int64(actual) - int64(h.amount))
		if spend {
			p.soft = appendSoft(p.soft, a, Amount(a.spent.Add(int64(actual))))
		}
	}
	if !spend {
		p.actual = 0
	}
	for _, a := range h.shared {
		a.remote().landing.Add(int64(p.actual))
		p.marks = append(p.marks, a.landedMark())
	}
	// Not the request's context: a client leaving must not leave the hold
	// on Redis. The wait has a deadline of its own, from when it starts.
	if g := h.gate; g != nil {
		gk, ga := g.DoneCall()
		keys, args := fuse(gk, ga, h.keys, []any{int64(p.actual), h.lease, 0})
		p.call, p.ticket = h.s.queue(fusedFor(g.GateLua()).settle, keys, args...)
	} else {
		p.call, p.ticket = h.s.queue(settleScript, h.keys, int64(p.actual), h.lease, 0)
	}
	return p
}

// wait reads the reply of the settle send queued, waiting for it (at most
// max(2 s, the hold's wait)), and books it: the accounts mirror Redis's
// spend; when Redis did not answer the spend is carried by a later hold,
// or kept in doubt, and the lease dropped when the settle never ran. It
// returns the accounts whose soft budget the spend crossed. A second call
// does nothing.
func (p *settling) wait() (soft []*Account) {
	if p.done {
		return nil
	}
	p.done = true
	h, actual, spend := p.h, p.actual, p.spend
	soft = p.soft
	ctx, cancel := context.WithTimeout(context.Background(), h.s.callWait())
	defer cancel()
	v, ticket, err := h.s.wait(ctx, p.call, p.ticket)
	p.ticket = ticket
	res, err := rscript.Int64s(v, err)
	if g := h.gate; g != nil {
		g.Settled(err)
	}
	// Booked below (mirrored, carried or in doubt): no longer landing.
	defer func() {
		for _, a := range h.shared {
			a.remote().landing.Add(-int64(actual))
		}
	}()
	if err == nil && len(res) != 1+3*len(h.shared) {
		err = fmt.Errorf("redis: settle reply has %d values for %d accounts", len(res), len(h.shared))
	}
	for i, a := range h.shared {
		switch {
		case err == nil && res[1+2*i] >= 0:
			// The settle does not count replicas: the larger of the
			// heartbeat's count and the hold's (the smaller share).
			_, alive := a.LastHeard()
			alive = max(alive, h.s.alive.Load())
			a.hear(a.Budget()-Amount(res[1+2*i]+res[2+2*i]), alive, p.marks[i])
			mirrorSettled(a, res[1+2*i], p.ticket, res[1+2*len(h.shared)+i], int64(actual)) // headers, metrics, soft budgets
		case err == nil:
			// Redis lost the account: this spend reseeds it with the next hold.
			a.beginMove()
			a.remote().unsynced.Add(int64(actual))
			a.spent.Add(int64(actual))
			a.endMove()
			a.used.Add(int64(actual))
			h.s.owe(a)
		default:
			// In carrying first (Redis may not have it): a share check
			// racing this counts it twice, never not at all.
			a.beginMove()
			a.remote().carrying.Add(int64(actual))
			a.spent.Add(int64(actual))
			a.endMove()
			a.used.Add(int64(actual))
		}
		if spend {
			soft = appendSoft(soft, a, a.Spent())
		}
	}
	if err != nil {
		h.s.fallback(fmt.Errorf("settle: %w", err))
		// Once it is known how the call ended: when Redis never ran it,
		// carry its spend with a later hold and drop the lease that still
		// holds budget; when it may have, keep it in doubt, to be applied
		// by a later hold while the lease is there (carry.go).
		h.s.outcomes.Add(1)
		h.s.undecided.Add(1)
		go func() {
			final := rscript.Final(err)
			notRun := rscript.NotRun(final)
			for _, a := range h.shared {
				switch {
				case notRun:
					a.beginMove()
					a.remote().unsynced.Add(int64(actual))
					a.remote().carrying.Add(-int64(actual))
					a.endMove()
					h.s.owe(a)
				case final == nil: // its answer came late: it ran
					a.ranOff(int64(actual), p.ticket)
				default:
					a.doubtful(carryItem{tag: "s" + h.lease, lease: h.lease, amount: int64(actual), at: h.since()})
				}
			}
			h.s.undecided.Add(-1)
			h.s.outcomes.Done()
			if final != nil && !notRun {
				for _, a := range h.shared {
					h.s.settleDoubt(a)
				}
			}
			if notRun {
				h.releaseLease()
			}
		}()
	}
	return soft
}

func appendSoft(soft []*Account, a *Account, spent Amount) []*Account {
	if spent >= Amount(a.soft.Load()) && a.softHit.CompareAndSwap(false, true) {
		return append(soft, a)
	}
	return soft
}

// ResetPeriod starts a new budget period for an account on Redis.
func (s *Shared) ResetPeriod(ctx context.Context, kind store.Kind, id string, next time.Time) error {
	_, err := s.r.Run(ctx, resetScript, []string{s.prefix + string(kind) + ":" + id}, strconv.FormatInt(next.UnixNano(), 10))
	return err
}

// SetSpent writes an operator's spend edit into Redis, so that every
// replica's next hold sees it; holds in flight are kept. resetAt is the
// end of the budget period the edit is for (the account's ResetAt; zero
// when it has none or it is not known): written with the edit when Redis
// has no period or an older one, so that the next hold of a replica in
// that period finds the edit in its period and keeps it (branch
// ledgergaps: an edit that made the hash had no period, and the next hold
// took it for a hash of an older period and reseeded it from its view,
// undoing the edit).
func (s *Shared) SetSpent(ctx context.Context, kind store.Kind, id string, spent Amount, resetAt time.Time) error {
	k := s.prefix + string(kind) + ":" + id
	var period int64
	if !resetAt.IsZero() {
		period = resetAt.UnixNano()
	}
	_, err := s.r.Run(ctx, setSpentScript, []string{k}, int64(spent), strconv.FormatInt(period, 10))
	return err
}

// Forget removes the Redis state of the accounts of kind named ids (the
// entity deleted): a new entity under one of those ids starts from its own
// spend, not the deleted one's. Holds in flight settle on the hash anew
// (spend only, as on any account Redis lost).
func (s *Shared) Forget(ctx context.Context, kind store.Kind, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.prefix + string(kind) + ":" + id
	}
	_, err := s.r.Run(ctx, forgetScript, keys)
	return err
}

// forgetScript deletes KEYS (one account's hashes, in the prefix's slot).
var forgetScript = rscript.New(`
for _, k in ipairs(KEYS) do redis.call('DEL', k) end
return 1
`)

// setSpentScript sets an account's spend (ARGV[1]), with the period
// ARGV[2] (ns; 0: not known) when Redis has none or an older one, and ends
// its reseed marks ('rv', bud_seed; 'rs' and the pending 'rq', released,
// bud_sweep): a replica's view, or the store's spend, from before the edit
// must not raise the edited spend (before branch reseed, 'rs' stayed and
// the next hold raised the edit by up to what the swept allotment held). A hash the edit makes without a period
// (ARGV[2] 0) is taken by the next hold as its seed's period (bud_seed).
var setSpentScript = rscript.New(luaExpire + `
local p = tonumber(ARGV[2])
if p ~= 0 and tonumber(redis.call('HGET', KEYS[1], 'period') or 0) < p then
  redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'period', ARGV[2])
else
  redis.call('HSET', KEYS[1], 'spent', ARGV[1])
end
bud_expire(KEYS[1])
redis.call('HDEL', KEYS[1], 'rv', 'rs')
local rq = redis.call('HGET', KEYS[1], 'rq')
if rq then
  redis.call('HINCRBY', KEYS[1], 'held', -(tonumber(string.match(rq, '^(%-?%d+)')) or 0))
  redis.call('HDEL', KEYS[1], 'rq')
end
return 1
`)

// carryScript adds spend booked while Redis was away to an account Redis
// has in the same budget period or a later one: ARGV = the carried items
// (as a hold's, carry.go), period (ns). It returns 1 when it applied them,
// 2 when Redis does not have the account (flushed, restarted empty) or has
// it in an earlier period (reset while Redis was away, not reseeded yet):
// left alone, the next hold of this replica's seeds it (as the hold
// script's fresh) and carries the items (kept for it, carryOne). In a
// later period (this replica's clock lags the rollover) the items land
// there, as a hold's carry of them does: spend booked after Redis's reset
// must count in the new period (branch allotmoney: it was left to the
// store, and Redis's new period never had it); spend of the old period
// carried late counts there too (over, never under). Spend with no period
// (an edit not told its period made the hash) is this period's, as
// bud_seed takes it: the items land (before branch ledgergapsrev they were
// left for a hold that the next one, keeping the hash, never seeded, and a
// replica stopping carried nothing: TestProbeCarryOfflineOntoAnUntoldEditsHash).
var carryScript = rscript.New(luaNow + luaHold + `
local cur = redis.call('HMGET', KEYS[1], 'spent', 'period', 'held', 'nx')
if cur[1] ~= false and cur[2] == false and tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], 'period', ARGV[2])
  cur[2] = ARGV[2]
end
if cur[1] == false or tonumber(cur[2] or 0) < tonumber(ARGV[2]) then return 2 end
bud_carry(KEYS[1], ARGV[1], tonumber(cur[1]), tonumber(cur[3] or 0), cur[4] and tonumber(cur[4]), false)
return 1
`)

// CarryOffline takes to Redis the spend each budgeted account of book
// booked while Redis was away and no hold has carried since (an account
// idle after an outage), with the items still in doubt: a replica stopping
// gracefully leaves Redis knowing all it spent. It first stops the
// background carries (CarryUnheld's, the sweep's, settleDoubt's: none
// starts another call) and waits, within ctx, for those in flight and for
// every call whose answer was lost and whose outcome is not known yet, so
// that their spend is carried too (or known to have landed). It returns
// how many accounts it could not carry: Redis away again, an answer lost
// (the items stay in doubt), or spend still claimed by a call that had not
// ended when ctx did. The store has their spend either way.
func (s *Shared) CarryOffline(ctx context.Context, book *Book) (failed int) {
	s.stop()
	s.awaitOutcomes(ctx)
	for _, kind := range kinds {
		book.Range(kind, func(a *Account) bool {
			if a.Budget() == Unlimited {
				return true
			}
			// carrying left after an answered carry is spend a call that
			// has not ended (at ctx's end) claimed: off Redis as far as
			// this replica can tell.
			// (An account Redis lacks is seeded by a hold: nothing to carry.)
			if o := s.carryOne(ctx, a); (o != outRan && o != outAbsent) || a.remote().carrying.Load() != 0 {
				failed++
			}
			return true
		})
	}
	return failed
}

// carryOne takes a's unsynced spend and items in doubt to Redis with the
// carry script (no hold), and books how the call ended.
func (s *Shared) carryOne(ctx context.Context, a *Account) outcome {
	pending := a.claimUnsynced()
	tag := ""
	if pending != 0 {
		tag = newLease()
	}
	carry, sent := a.carryArg(pending, tag, s.horizon(), s.clock())
	if carry == int64(0) {
		a.remote().carrying.Add(-pending)
		return outRan
	}
	q, ticket := s.queue(carryScript, []string{s.key(a)}, carry, a.resetAt.Load())
	v, ticket, err := s.wait(ctx, q, ticket)
	o := outRan
	if err = rscript.Final(err); err != nil {
		o = outUnknown
		if rscript.NotRun(err) {
			o = outNotRun
		}
	} else if v == int64(2) {
		// Redis lacks the account (or has an earlier period of it):
		// nothing applied. The spend stays for a
		// hold of this replica's, which seeds the account without it and
		// carries it; dropped here (into the seed) it would be lost when
		// another replica seeds the account first.
		a.landCarry(outNotRun, pending, tag, sent, false, ticket)
		a.leaseLost(sent)
		return outAbsent
	}
	a.landCarry(o, pending, tag, sent, false, ticket)
	return o
}

// CarryUnheld takes to Redis now, in the background, the spend Spend
// booked on accounts without a hold (a batch, a charged cache hit): other
// replicas then see it within one Redis call, rather than only when this
// replica next holds for the account, which it may never do (its own view
// already refuses the account before any hold: the cache's spentOut, a
// batch's MayAfford). While Redis is known to be down nothing is sent:
// the accounts are noted (owe), and the sweep carries them once Redis
// answers again, or the account's next hold does, whichever comes first.
// A carry whose answer is lost leaves its spend in doubt (settleDoubt).
// At most one such carry runs per account: a booking while it runs leaves
// its spend for it (it carries again while it finds spend unsynced after
// an answered carry), so a flood of charged cache hits on one account
// starts one goroutine and makes one Redis call at a time, not one each.
func (s *Shared) CarryUnheld(accounts []*Account) {
	if s.r.Degraded() || s.stopping.Load() {
		for _, a := range accounts {
			if a.owesRedis() {
				s.owe(a)
			}
		}
		return
	}
	var owed []*Account
	for _, a := range accounts {
		if a.Budget() != Unlimited && a.owesRedis() && a.remote().unheld.CompareAndSwap(false, true) {
			owed = append(owed, a)
		}
	}
	if len(owed) == 0 {
		return
	}
	s.resolving.Add(1)
	s.unheld.Add(1)
	go func() {
		defer s.resolving.Done()
		defer s.unheld.Add(-1)
		// In rounds, one carry per account each: a flood on one account
		// does not keep the others' carries waiting (their flags set).
		for len(owed) > 0 {
			again := owed[:0]
			for _, a := range owed {
				if s.carryUnheld(a) {
					again = append(again, a)
				}
			}
			owed = again
		}
	}()
}

// carryUnheld is one carry of CarryUnheld's (or the sweep's), a.unheld
// set. It reports whether a needs another (a.unheld kept set): spend was
// booked after this one claimed a's, by bookings that found a.unheld set
// and left it to this carry. It lets go of a once no spend is left
// unsynced, or a carry was not answered, or Redis is away again (a is
// then noted for the sweep: owe; settleDoubt also takes items in doubt).
// Once the replica is stopping it makes no call: CarryOffline carries a.
func (s *Shared) carryUnheld(a *Account) (again bool) {
	if s.stopping.Load() {
		a.remote().unheld.Store(false)
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.callWait())
	o := s.carryOne(ctx, a)
	cancel()
	if o == outUnknown {
		s.settleDoubt(a)
	}
	a.remote().unheld.Store(false)
	// A booking that found a.unheld set before the Store is seen here.
	switch {
	case o == outAbsent:
		return false // Redis lacks the account: the next hold seeds it with this spend carried
	case o != outRan:
		s.owe(a)
		return false
	case a.remote().unsynced.Load() == 0:
		return false
	case s.r.Degraded() || s.stopping.Load():
		s.owe(a)
		return false
	}
	return a.remote().unheld.CompareAndSwap(false, true)
}

// awaitOutcomes waits, within ctx, until the outcome of every call whose
// answer was lost is known and booked: until then its spend is in
// carrying, neither unsynced nor in doubt, and a CarryOffline that ran
// before would leave it off Redis. (A lost call's outcome is known within
// the connection's read timeout, 500 ms.) So are the background carries in
// flight (CarryUnheld's, the sweep's, settleDoubt's): what they claimed is
// in carrying too. Once stop was called none starts another call, so each
// ends within one call's bound (callWait); StopTimeout allows for it.
func (s *Shared) awaitOutcomes(ctx context.Context) {
	busy := func() bool { return s.undecided.Load() > 0 || s.unheld.Load() > 0 || s.draining.Load() > 0 }
	if !busy() {
		return
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for busy() {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Gate is an admission that runs in the same Redis script as a hold, and
// its settlement in the same script as the hold's settle: a request's rate
// limits (ratelimit.Gate), so that a request makes one Redis call before
// its upstream call and one after. The gate is checked first; a refused
// gate leaves the budgets untouched, and a refused hold leaves the gate
// untaken.
type Gate interface {
	// GateLua defines gate_admit(KEYS, ARGV) - which returns the refusal,
	// or the admission's reply and a function that takes it - and
	// gate_done(KEYS, ARGV), and sets now (Redis's clock in ms). It is a
	// constant: the fused scripts are made from it once.
	GateLua() string
	// AdmitCall is the gate's admission's keys and arguments.
	AdmitCall() (keys []string, args []any)
	// Admitted reads the gate's reply: its refusal, or nil when it
	// admitted; taken says whether the admission was taken (false: the
	// hold was refused, and the reply only reports the gate's state).
	Admitted(reply []int64, taken bool) error
	// Lost is told that the script's answer never came: it may have run.
	Lost()
	// DoneCall is the gate's settlement's keys and arguments.
	DoneCall() (keys []string, args []any)
	// Settled is told that the settlement went (err nil) or not.
	Settled(err error)
}

// Ask is what a hold asks for (Holder's three methods).
type Ask struct{ q ask }

// AskStrict holds amount or refuses (Reserve).
func AskStrict(amount Amount) Ask { return Ask{ask{mode: holdStrict, amount: max(amount, 0)}} }

// AskUpTo holds up to amount (ReserveUpTo).
func AskUpTo(amount Amount) Ask { return Ask{ask{mode: holdUpTo, amount: max(amount, 0)}} }

// AskFlex holds f (ReserveFlex).
func AskFlex(f Flex) Ask { return Ask{ask{mode: holdFlex, amount: max(f.Worst, 0), flex: f}} }

// Place asks h for q, as its Reserve, ReserveUpTo or ReserveFlex.
func Place(ctx context.Context, h Holder, accounts []*Account, q Ask) (Hold, error) {
	switch q.q.mode {
	case holdStrict:
		return h.Reserve(ctx, accounts, q.q.amount)
	case holdUpTo:
		return h.ReserveUpTo(ctx, accounts, q.q.amount)
	}
	return h.ReserveFlex(ctx, accounts, q.q.flex)
}

// fused are the scripts made of one gate's Lua and the budget scripts'.
type fused struct {
	lua          string
	hold, settle *rscript.Script
}

var fusedScripts atomic.Pointer[fused]

// fusedFor returns the fused scripts of a gate's Lua, made once.
func fusedFor(lua string) *fused {
	if f := fusedScripts.Load(); f != nil && f.lua == lua {
		return f
	}
	// KEYS: the gate's (ARGV[1] of them), then the hold's; ARGV: the
	// counts, the gate's (ARGV[2] of them), then the hold's.
	// The budgets' keys and arguments are read in place (bud_hold's and
	// bud_settle's offsets), not copied.
	const split = `
local nk, na = tonumber(ARGV[1]), tonumber(ARGV[2])
local gk, ga = {}, {}
for i = 1, nk do gk[i] = KEYS[i] end
for i = 1, na do ga[i] = ARGV[2 + i] end
`
	f := &fused{lua: lua,
		hold: rscript.New(lua + luaHold + split + `
local gout, take = gate_admit(gk, ga)
if not take then return {2, gout} end
local bout = bud_hold(KEYS, ARGV, nk, na + 2)
if bout[1] ~= 1 then return {0, bout, gout} end
take()
return {1, gout, bout}
`),
		settle: rscript.New(lua + luaSettle + split + `
local out = bud_settle(KEYS, ARGV, nk, na + 2)
gate_done(gk, ga)
return out
`)}
	fusedScripts.Store(f)
	return f
}

// fuse puts a gate's keys and arguments before a budget script's.
func fuse(gk []string, ga []any, bk []string, ba []any) ([]string, []any) {
	keys := make([]string, 0, len(gk)+len(bk))
	keys = append(append(keys, gk...), bk...)
	args := make([]any, 0, 2+len(ga)+len(ba))
	args = append(append(append(args, len(gk), len(ga)), ga...), ba...)
	return keys, args
}

// ReserveGated places the hold q and admits g in one Redis script. decided
// reports whether g was decided there: admitted (a hold is returned) or
// refused (err is g's refusal, and no budget was touched). An admission
// the script took whose hold then failed (a malformed reply) stays taken
// with err: the caller gives it back as it would after a hold (for a
// ratelimit ticket, Done: Ticket.Taken tells). When it was
// not - no budgeted account, Redis known to be down or not answering - the
// hold (or the budget's refusal) is the budgets' alone and the caller
// admits g on its own; g.Lost was told if the script may have run.
func (s *Shared) ReserveGated(ctx context.Context, accounts []*Account, q Ask, g Gate) (h Hold, decided bool, err error) {
	return s.reserveWith(ctx, accounts, q.q, g)
}

// SettleGated settles h (Settle, or Release when !spend) and g's settlement
// in one Redis script. It reports false, doing nothing, for a hold that is
// not on Redis: the caller settles each on its own.
func SettleGated(h Hold, actual Amount, spend bool, g Gate) (soft []*Account, ok bool) {
	s, ok := SendGated(h, actual, spend, g)
	if !ok {
		return nil, false
	}
	return s.Wait(), true
}

// Settling is a settle begun by SendSettle or SendGated. Wait ends it and
// must be called once the caller can wait (Settle's work is not done until
// then); calling it again does nothing.
type Settling struct {
	p    *settling // on Redis: queued, its reply not read yet
	soft []*Account
}

// Wait ends the settle: for a hold on Redis it waits for the settle's
// reply and books it as Settle does (the local mirror of Redis's spend;
// when Redis did not answer, the spend carried by a later hold or kept in
// doubt and the lease dropped when the settle never ran). It returns the
// accounts whose soft budget the spend crossed.
func (s *Settling) Wait() []*Account {
	if p := s.p; p != nil {
		s.p = nil
		return p.wait()
	}
	soft := s.soft
	s.soft = nil
	return soft
}

// Pending reports whether the settle waits on Redis's reply (Wait has
// work to do beyond returning what was settled at once).
func (s *Settling) Pending() bool { return s.p != nil && !s.p.done }

// Spent is a's settled spend as this replica sees it: its local view,
// plus what this replica's settles on Redis not answered yet book on a,
// this one's and those of requests answered before it (each reply then
// mirrors Redis's figure, which has them). It is never below what an
// earlier answer from this replica told; it may count a settle twice for
// the moment between another reply mirroring it and its own being read.
func (s *Settling) Spent(a *Account) Amount {
	if r := a.rs.Load(); r != nil { // none: nothing is landing (no Redis)
		return a.Spent() + Amount(r.landing.Load())
	}
	return a.Spent()
}

// SendSettle begins settling h: Settle (spend) or Release. A hold on Redis
// has its settle queued in the runner's ordered stream, so that every
// script this replica queues after it (the next hold of the same key)
// runs after it on Redis, and its reply is read by Wait; any other hold is
// settled at once. What the caller books locally meanwhile (the cost, the
// spend row, the answer's headers) needs nothing from the reply.
func SendSettle(h Hold, actual Amount, spend bool) Settling {
	if sh, ok := h.(*sharedHold); ok {
		return Settling{p: sh.send(actual, spend)}
	}
	if !spend {
		h.Release()
		return Settling{}
	}
	return Settling{soft: h.Settle(actual)}
}

// SendGated is SendSettle with g's settlement in the same Redis script. It
// reports false, doing nothing, for a hold that is not on Redis: the
// caller settles each on its own.
func SendGated(h Hold, actual Amount, spend bool, g Gate) (Settling, bool) {
	sh, isShared := h.(*sharedHold)
	if !isShared || sh.settled {
		return Settling{}, false
	}
	sh.gate = g
	return Settling{p: sh.send(actual, spend)}, true
}
