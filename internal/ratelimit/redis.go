package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/rscript"
)

// Redis keeps counters in Redis, shared by every replica. Each admission is
// one Lua script that checks every rule and then takes from all of them, so
// replicas can never jointly pass a limit. Time comes from the Redis server
// (TIME), so replicas' clocks do not matter.
//
// Data: a sliding window is a hash of sub-window index → count, with the
// running sum of the sub-windows in it ('s') and the oldest one kept ('h'):
// an admission reads two fields and writes two, whatever the slot count, and
// each sub-window is subtracted from the sum once, when it leaves; parallel
// slots are a sorted set of leases scored by expiry (a crashed replica's
// slots free themselves); a bucket is a hash {tokens, filled}. Every key
// carries the {tg} hash tag, so all of them live on one Cluster slot and a
// script may touch them together.
type Redis struct {
	r      *rscript.Runner
	prefix string
	// LeaseTTL bounds how long a parallel slot is held by a replica that
	// died without releasing it; a live replica renews its requests'
	// slots while they run (Renew).
	LeaseTTL time.Duration
	// AdmitTimeout bounds an admission's wait for Redis (Admit; default
	// 500 ms); past it the request is decided on local counters, which do
	// not see the other replicas' admissions. The server sets it to its
	// Redis hold deadline (Options.RedisHoldTimeout), which bounds the
	// same admission when it rides in a budget hold's script.
	AdmitTimeout time.Duration

	live liveTickets // admitted with a parallel slot, not settled (renew.go)
	// epoch is clock's origin; now reads the time (time.Now; tests step it).
	epoch time.Time
	now   func() time.Time
}

// clock is this replica's monotonic time, ns since rd was made: when a
// slot was last set, as far as this replica knows, is compared with it
// (renew.go). Time.Sub reads the monotonic clock, so a wall clock stepped
// back does not make a live slot look young and lose it.
func (rd *Redis) clock() int64 { return int64(rd.now().Sub(rd.epoch)) }

// NewRedis returns a backend on r. prefix namespaces the keys ("" for the
// default); tests give each run its own.
func NewRedis(r *rscript.Runner, prefix string) *Redis {
	if prefix == "" {
		prefix = "tg"
	}
	return &Redis{r: r, prefix: "{" + prefix + "}:rl:", LeaseTTL: 15 * time.Minute, AdmitTimeout: admitTimeout, epoch: time.Now(), now: time.Now}
}

// admitTimeout is AdmitTimeout's default.
const admitTimeout = 500 * time.Millisecond

// slogAdapter routes go-redis's own messages (dial failures, pool
// warnings) to slog at debug level: the limiter already reports outages once,
// in the gateway's log format.
type slogAdapter struct{}

func (slogAdapter) Printf(ctx context.Context, format string, v ...any) {
	slog.DebugContext(ctx, "redis client", "msg", fmt.Sprintf(format, v...))
}

func init() { redis.SetLogger(slogAdapter{}) }

var kindNames = [...]string{Requests: "req", Tokens: "tok", Parallel: "par", RequestBucket: "rbk", TokenBucket: "tbk"}

func (rd *Redis) key(r *Rule) string {
	return rd.prefix + kindNames[r.Kind] + ":" + r.Name + ":" + string(r.Scope.Entity) + ":" + r.Scope.ID
}

// Shared helpers of both scripts: the time, a window's use, a bucket's level.
const luaCommon = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function slotlen(win) return math.max(math.floor(win / 60), 1) end
-- A window is a hash of slot index -> count plus 's', the running sum of
-- the slots still in the window, and 'h', the oldest slot field kept. A call
-- reads those two; slots are subtracted from 's' (and deleted) once, as they
-- leave the window, so a call's cost does not grow with the slot count.
-- at, when given, is a time (ms) whose slot add will count at: its count is
-- read in the same HMGET. Returns used, the current slot, ms until the oldest
-- use leaves, the slot length, and what add needs: the oldest slot, the sum
-- as stored and the count of at's slot (of the current one without at).
local function window(key, win, at)
  local sl = slotlen(win)
  local idx = math.floor(now / sl)
  local lo = idx - 60
  local slot = idx
  if at then slot = math.floor(at / sl) end
  local v = redis.call('HMGET', key, 's', 'h', slot)
  local used, head, cur = tonumber(v[1]), tonumber(v[2]), tonumber(v[3] or 0)
  if used == nil then
    -- A new window, or one kept as bare slots (before 's' and 'h'):
    -- count it once and keep the sum from now on.
    used, head = 0, nil
    local h = redis.call('HGETALL', key)
    for j = 1, #h, 2 do
      local at, c = tonumber(h[j]), tonumber(h[j + 1])
      if at == nil then
      elseif at < lo then
        redis.call('HDEL', key, h[j])
      else
        used = used + c
        if head == nil or at < head then head = at end
      end
    end
    if head ~= nil then redis.call('HSET', key, 's', used, 'h', head) end
    if slot < lo then cur = 0 end
  elseif head < lo then
    if lo - head > 61 then
      -- Idle for longer than the window: nothing in it is left.
      redis.call('DEL', key)
      used, head, cur = 0, nil, 0
    else
      -- Slots that left the window since the last call: subtract them once.
      local gone = {}
      for j = head, lo - 1 do gone[#gone + 1] = j end
      local c = redis.call('HMGET', key, unpack(gone))
      local del = {}
      for j = 1, #gone do
        if c[j] then used = used - tonumber(c[j]); del[#del + 1] = gone[j] end
      end
      if #del > 0 then redis.call('HDEL', key, unpack(del)) end
      if slot < lo then cur = 0 end
      -- The new head is the oldest slot still kept, scanned forward in
      -- steps; a slot is scanned past once, so this too is O(1) amortized.
      head = nil
      local from = lo
      -- (to idx + 1: an allotment may be counted in the next slot,
      -- ratelimit.Allotter)
      while head == nil and from <= idx + 1 do
        local to = math.min(from + 7, idx + 1)
        local probe = {}
        for j = from, to do probe[#probe + 1] = j end
        local e = redis.call('HMGET', key, unpack(probe))
        for j = 1, #probe do
          if e[j] then head = probe[j]; break end
        end
        from = to + 1
      end
      if head == nil then
        redis.call('DEL', key)
        used, cur = 0, 0
      else
        redis.call('HSET', key, 's', used, 'h', head)
      end
    end
  end
  local sum = used
  if used < 0 then used = 0 end
  local reset = 0
  if used > 0 and head ~= nil then reset = (head + 61) * sl - now end
  return used, idx, reset, sl, {head, sum, cur}
end
-- add counts n at slot, the slot window read (its state st), keeping the
-- sum and the head: one HSET. The key's expiry is set when a slot is opened
-- (its count was 0): a later add to that slot, or to an older one, leaves
-- nothing that outlives it.
local function add(key, slot, n, st, sl)
  local head, sum, cur = st[1], st[2], st[3]
  if head == nil or slot < head then
    redis.call('HSET', key, slot, cur + n, 's', sum + n, 'h', slot)
  else
    redis.call('HSET', key, slot, cur + n, 's', sum + n)
  end
  if cur == 0 then redis.call('PEXPIRE', key, 62 * sl + 1000) end
end
local function bucket(key, limit, win, fill)
  local v = redis.call('HMGET', key, 'tokens', 'filled')
  local tokens, filled = tonumber(v[1]), tonumber(v[2])
  if tokens == nil then tokens, filled = limit, now end
  if win > 0 and fill > 0 then
    local fills = math.floor((now - filled) / win)
    if fills > 0 then
      tokens = math.min(limit, tokens + fills * fill)
      filled = filled + fills * win
    end
  end
  if tokens >= limit then filled = now end
  return tokens, filled
end
local function waitfor(tokens, filled, need, win, fill)
  if fill <= 0 or win <= 0 or tokens >= need then return 0 end
  return filled + math.ceil((need - tokens) / fill) * win - now
end
local function savebucket(key, tokens, filled, limit, win, fill)
  redis.call('HSET', key, 'tokens', tokens, 'filled', filled)
  local ttl = 86400000
  if fill > 0 and win > 0 then ttl = (math.ceil(math.max(limit - tokens, 0) / fill) + 1) * win + 1000 end
  redis.call('PEXPIRE', key, ttl)
end
`

// The rules go to the scripts packed in one binary string (ARGV[1]; the
// lease is ARGV[2]): two 8-byte numbers of the call, then 25 bytes per rule
// - its kind, then limit, window (ms) and fill as 8-byte numbers. Numbers
// are big-endian two's complement; rl_num reads one with one string.byte
// call and a few multiplications, where tonumber of a decimal ARGV costs a
// strtod each (the Lua, not the commands, is most of a script's cost:
// docs/performance.md), and each script reads only the fields its rules'
// kinds use, once. rl_num's sum rounds once, as strtod does, so every value
// is the same Lua number as before, past 2^53 too.
const luaPacked = `
local byte = string.byte
local function rl_num(s, p)
  local a, b, c, d, e, f, g, h = byte(s, p, p + 7)
  local hi, lo = ((a * 256 + b) * 256 + c) * 256 + d, ((e * 256 + f) * 256 + g) * 256 + h
  if a < 128 then return hi * 4294967296 + lo end
  hi, lo = 4294967295 - hi, 4294967296 - lo
  return -(hi * 4294967296 + lo)
end
`

// packedRule is the size of a rule in the packed string; rule i (from 1)
// starts at byte i*25-8 (after the 16 bytes of the call's two numbers).
const packedRule = 25

// admitScript: ARGV = the packed string (estimate, lease ttl ms, rules) and
// the lease. Returns {0, rule, used, retry ms} or {1, now, remaining, reset
// ms, ...}.
var admitScript = rscript.New(luaCommon + luaPacked + luaAdmit + `
local out, take = rl_admit(KEYS, ARGV)
if take then take() end
return out
`)

// luaAdmit defines rl_admit(KEYS, ARGV): it checks every rule and returns
// the refusal, or the admission's reply and a function that takes it. A
// fused script (ledger.Gate) takes it only once the budget hold is placed.
const luaAdmit = `
local function rl_admit(KEYS, ARGV)
local s, lease = ARGV[1], ARGV[2]
local est, ttl = rl_num(s, 1), rl_num(s, 9)
local out, plan = {1, now}, {}
for i = 1, #KEYS do
  local p = i * 25 - 8
  local kind, limit = byte(s, p), rl_num(s, p + 1)
  local key = KEYS[i]
  if kind <= 1 then
    local used, idx, reset, sl, st = window(key, rl_num(s, p + 9))
    local need = 1
    if kind == 1 then need = est end
    if need > limit then return {0, i, used, -1} end
    if used + need > limit or (need == 0 and used >= limit) then return {0, i, used, reset} end
    plan[i] = {idx, need, sl, st}
    out[#out + 1] = limit - used - need
    out[#out + 1] = reset
  elseif kind == 2 then
    -- Expired leases (a replica that died holding) are swept only when
    -- they could refuse: below the limit they change no decision.
    local c = redis.call('ZCARD', key)
    if c >= limit then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
      c = redis.call('ZCARD', key)
    end
    if c >= limit then return {0, i, c, 1000} end
    plan[i] = false
    out[#out + 1] = limit - c - 1
    out[#out + 1] = 0
  else
    local win, fill = rl_num(s, p + 9), rl_num(s, p + 17)
    local tokens, filled = bucket(key, limit, win, fill)
    local need = 1
    if kind == 4 then need = est end
    if need > limit then return {0, i, limit - tokens, -1} end
    if (need == 0 and tokens <= 0) or (need > 0 and tokens < need) then
      return {0, i, limit - tokens, waitfor(tokens, filled, math.max(need, 1), win, fill)}
    end
    plan[i] = {tokens - need, filled, limit, win, fill, true}
    out[#out + 1] = tokens - need
    out[#out + 1] = waitfor(tokens - need, filled, limit, win, fill)
  end
end
return out, function()
for i = 1, #KEYS do
  local p, key = plan[i], KEYS[i]
  if not p then
    redis.call('ZADD', key, now + ttl, lease)
    redis.call('PEXPIRE', key, ttl + 1000)
  elseif p[6] then
    savebucket(key, p[1], p[2], p[3], p[4], p[5])
  elseif p[2] ~= 0 then
    add(key, p[1], p[2], p[4], p[3])
  end
end
end
end
`

// doneScript: ARGV = the packed string (token delta, admission time (ms),
// rules) and the lease. A refund goes to the admission's slot, and is
// dropped once that slot has left the window; a bucket never refills past
// its size.
var doneScript = rscript.New(luaCommon + luaPacked + luaDone + `
rl_done(KEYS, ARGV)
return 1
`)

// luaDone defines rl_done(KEYS, ARGV), doneScript's work.
const luaDone = `
local function rl_done(KEYS, ARGV)
local s, lease = ARGV[1], ARGV[2]
local delta, at = rl_num(s, 1), rl_num(s, 9)
for i = 1, #KEYS do
  local p = i * 25 - 8
  local kind = byte(s, p)
  local key = KEYS[i]
  if kind == 1 and delta ~= 0 then
    local when = nil
    if delta < 0 then when = at end
    local used, idx, reset, sl, st = window(key, rl_num(s, p + 9), when)
    local slot = idx
    if delta < 0 then slot = math.floor(at / sl) end
    if slot >= idx - 60 then add(key, slot, delta, st, sl) end
  elseif kind == 2 then
    redis.call('ZREM', key, lease)
  elseif kind == 4 and delta ~= 0 then
    local limit, win, fill = rl_num(s, p + 1), rl_num(s, p + 9), rl_num(s, p + 17)
    local tokens, filled = bucket(key, limit, win, fill)
    savebucket(key, math.min(tokens - delta, limit), filled, limit, win, fill)
  end
end
end
`

// args are a script's keys and arguments: the rules' keys, and ARGV = the
// packed string (a and b, then the rules; luaPacked) and the lease.
func (rd *Redis) args(t *Ticket, a, b int64) ([]string, []any) {
	keys := make([]string, len(t.rules))
	buf := make([]byte, 16+packedRule*len(t.rules))
	binary.BigEndian.PutUint64(buf, uint64(a))
	binary.BigEndian.PutUint64(buf[8:], uint64(b))
	for i := range len(t.rules) {
		r := &t.rules[i]
		keys[i] = rd.key(r)
		p := buf[16+packedRule*i:]
		p[0] = byte(r.Kind)
		binary.BigEndian.PutUint64(p[1:], uint64(r.Limit))
		binary.BigEndian.PutUint64(p[9:], uint64(r.Window.Milliseconds()))
		binary.BigEndian.PutUint64(p[17:], uint64(r.Fill))
	}
	return keys, []any{buf, t.lease}
}

// Admit decides t on Redis. An error means Redis could not be asked; the
// caller falls back.
func (rd *Redis) Admit(ctx context.Context, t *Ticket) (*Denied, error) {
	if t.lease == "" {
		t.lease = newLease()
	}
	keys, args := rd.args(t, t.Est, rd.LeaseTTL.Milliseconds())
	ctx, cancel := context.WithTimeout(ctx, rd.AdmitTimeout)
	defer cancel()
	at := rd.clock()
	res, err := rscript.Int64s(rd.r.Run(ctx, admitScript, keys, args...))
	if err != nil {
		return nil, err
	}
	d, err := rd.read(t, res)
	if d == nil && err == nil {
		rd.track(t, at) // its slot renewed while it runs
	}
	return d, err
}

// read reads an admission's reply into t: the refusal, or t admitted.
func (rd *Redis) read(t *Ticket, res []int64) (*Denied, error) {
	if len(res) == 0 {
		return nil, fmt.Errorf("ratelimit: empty reply from redis")
	}
	if res[0] == 0 {
		if len(res) < 4 || res[1] < 1 || int(res[1]) > len(t.rules) {
			return nil, fmt.Errorf("ratelimit: malformed refusal from redis: %v", res)
		}
		d := &Denied{Rule: t.rules[res[1]-1], Used: res[2], RetryAfter: time.Duration(res[3]) * time.Millisecond}
		if res[3] < 0 {
			d.RetryAfter, d.Never, d.Need = 0, true, t.Est
		}
		return d, nil
	}
	if len(res) < 2+2*len(t.rules) {
		return nil, fmt.Errorf("ratelimit: malformed admission from redis: %v", res)
	}
	t.atMS = res[1]
	for i := range len(t.rules) {
		t.States[i] = State{Remaining: res[2+2*i], Reset: time.Duration(res[3+2*i]) * time.Millisecond}
	}
	t.admitted, t.shared = true, true
	return nil, nil
}

// Done settles t on Redis.
func (rd *Redis) Done(ctx context.Context, t *Ticket, tokens int64) error {
	keys, args := rd.args(t, tokens-t.Est, t.atMS)
	_, err := rd.r.Run(ctx, doneScript, keys, args...)
	return err
}

// send queues t's settlement on Redis without waiting for it (see
// rscript.Runner.Send); wait tells how it ended.
func (rd *Redis) send(ctx context.Context, t *Ticket, tokens int64) (wait func() error) {
	keys, args := rd.args(t, tokens-t.Est, t.atMS)
	return rd.r.Send(ctx, doneScript, keys, args...)
}

// releaseLease frees the parallel slots an admission may have taken on
// Redis when its answer never arrived (a timeout after the script ran). It
// goes through the runner's ordered stream, so Redis runs it after the
// admission even when that is still queued.
//
// rules are the ticket's (Ticket.Rules), which an admission never changes:
// the caller goes on with the ticket while this runs.
func (rd *Redis) releaseLease(lease string, rules []Rule) {
	if lease == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for i := range rules {
		if r := &rules[i]; r.Kind == Parallel {
			_, _ = rd.r.Submit(ctx, "zrem", rd.key(r), lease)
		}
	}
}

// Ping checks that Redis answers.
func (rd *Redis) Ping(ctx context.Context) error { return rd.r.Ping(ctx) }

// newLease names one parallel slot, unique across replicas.
func newLease() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// gateLua is the rate limits' part of a script fused with a budget hold
// (ledger.Gate): it sets now and defines gate_admit and gate_done.
const gateLua = luaCommon + luaPacked + luaAdmit + luaDone + `
local gate_admit, gate_done = rl_admit, rl_done
`

// Gate is a ticket's admission, or once admitted its settlement, run in
// the same Redis script as a budget hold or settle (it is a ledger.Gate).
// Limiter.Gate makes one.
type Gate struct {
	l      *Limiter
	t      *Ticket
	tokens int64 // what the request used, for the settlement
	lost   bool  // the admission's answer never came (Lost)
	sent   int64 // Redis.clock when the admission was made (AdmitCall)
}

// GateLua is the Lua of the rate limits' part.
func (g *Gate) GateLua() string { return gateLua }

// AdmitCall is the admission's keys and arguments.
func (g *Gate) AdmitCall() ([]string, []any) {
	t := g.t
	if t.lease == "" {
		t.lease = newLease()
	}
	g.sent = g.l.redis.clock()
	return g.l.redis.args(t, t.Est, g.l.redis.LeaseTTL.Milliseconds())
}

// Admitted reads the admission's reply: nil when admitted, else the
// *Denied. An admission not taken (the budget hold was refused) leaves the
// ticket not admitted, with its States filled for the headers. One taken
// is renewed while it runs, until Done gives it back; when the script
// took it but its reply is no admission (malformed, or a refusal), the
// ticket is not admitted and the parallel slots the script took are given
// back here, as after a lost answer (Lost): nothing else would.
func (g *Gate) Admitted(res []int64, taken bool) error {
	d, err := g.l.redis.read(g.t, res)
	switch {
	case taken && (d != nil || err != nil):
		g.t.admitted, g.t.shared = false, false
		go g.l.redis.releaseLease(g.t.lease, g.t.Rules())
		g.t.lease = ""
	case d != nil:
	case !taken:
		g.t.admitted, g.t.shared = false, false
	case err == nil:
		g.l.redis.track(g.t, g.sent) // its slot renewed while it runs
	}
	if d != nil {
		return d
	}
	return err
}

// Lost is told that the script's answer never came: the parallel slots it
// may have taken are given back, and the caller admits the ticket again
// (Limiter.Admit).
func (g *Gate) Lost() {
	go g.l.redis.releaseLease(g.t.lease, g.t.Rules())
	g.t.lease = ""
	g.lost = true
}

// WasLost reports whether the admission's answer never came: the caller
// then admits the ticket in process (AdmitLocal) rather than wait for
// Redis a second time.
func (g *Gate) WasLost() bool { return g.lost }

// DoneCall is the settlement's keys and arguments.
func (g *Gate) DoneCall() ([]string, []any) {
	t := g.t
	g.l.redis.untrack(t) // the settlement gives the slot back
	return g.l.redis.args(t, g.tokens-t.Est, t.atMS)
}

// Settled: the ticket is settled (when the settlement failed, the lease
// expires on its own and the token correction is lost, as in Done).
func (g *Gate) Settled(error) { g.t.done = true }
