package ledger

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/rscript"
	"github.com/tollgate/tollgate/internal/store"
)

// reseedWait is how long (ms) a swept allotment's amount stays held as a
// pending reseed ('rq', bud_sweep) for a replica to read the store's spend
// of its account (reseedMarked). Past it, the next sweep releases it and
// marks the account 'rs', reseeded from the next hold's own view (the
// behaviour before branch reseed): a store away, or an account kind with
// no SpendReader, holds a dead replica's allotment this much longer, no
// more.
const reseedWait = "10000"

// SpendReader reads an account's spend as the store has it now, with the
// end of its budget period (zero: none). ok is false for an account the
// store has no record of, or a kind it cannot read alone.
type SpendReader func(ctx context.Context, kind store.Kind, id string) (spent Amount, resetAt time.Time, ok bool, err error)

// SetSpendReader gives the replica the store's spend: with it, the
// accounts a swept allotment left pending are reseeded from a fresh read
// (reseedMarked), off the request path. Set before Announce runs.
func (s *Shared) SetSpendReader(f SpendReader) { s.readSpend = f }

// Reseeded counts the pending reseeds this replica took from the store
// (tests, logs).
func (s *Shared) Reseeded() int64 { return s.reseeded.Load() }

// reseedKey is the set of the accounts with a pending reseed (bud_rsset:
// the presence set's name with ':reseed' for ':replicas').
func (s *Shared) reseedKey() string { return s.tag + ":reseed" }

// pendingScript: KEYS[1] = the reseed set. It returns up to 32 of its
// accounts, each with its pending reseed's amount (” when none is left).
// (The hashes it reads are in the set's '{prefix}' slot.)
var pendingScript = rscript.New(`
local out = {}
for _, k in ipairs(redis.call('SRANDMEMBER', KEYS[1], 32)) do
  local v = redis.call('HGET', k, 'rq')
  out[#out + 1] = k
  out[#out + 1] = v and string.match(v, '^(%-?%d+)') or ''
end
return out
`)

// reseedScript takes an account's store spend read after its allotment was
// swept: KEYS = the account's hash, the reseed set; ARGV = the store's
// spend (nano-dollars; ” when not read: released alone; 'n' when the
// store cannot read it: marked 'rs' and released), its period (ns;
// 0 none) and the pending amount seen before the read. Redis's spend is
// raised to the store's less what live replicas' allotments hold (their
// flushes bring that), never lowered, and by no more than what was
// pending; only in the period Redis has (within a microsecond: the store
// keeps microseconds). The amount seen is released from 'held' and 'rq'
// (a sweep since adds to it: kept, for the next read). It returns what it
// raised spent by.
var reseedScript = rscript.New(luaNum + `
local k, set = KEYS[1], KEYS[2]
local cur = redis.call('HMGET', k, 'spent', 'period', 'rq')
local a = cur[3] and tonumber(string.match(cur[3], '^(%-?%d+)'))
if not a or cur[1] == false then
  redis.call('SREM', set, k)
  return 0
end
local rx = string.match(cur[3], ':(%d+)$') or '0'
local take = math.max(math.min(a, tonumber(ARGV[3])), 0)
local s, raised = tonumber(cur[1]), 0
if ARGV[1] ~= '' and ARGV[1] ~= 'n' and math.abs(tonumber(ARGV[2]) - tonumber(cur[2] or 0)) <= 1000 then
  local live, all = 0, redis.call('HGETALL', k)
  for j = 1, #all, 2 do
    if string.sub(all[j], 1, 3) == 'al.' then
      live = live + math.max(tonumber(string.match(all[j + 1], '^(%-?%d+):') or 0), 0)
    end
  end
  local to = math.min(tonumber(ARGV[1]) - live, s + take)
  if to > s then raised = to - s end
elseif ARGV[1] ~= '' and take > 0 then
  -- Read in another period than Redis has, or not readable ('n'). What it would have
  -- raised is marked 'rs' for the next hold's view, as a pending reseed
  -- that lapses (bud_sweep), not dropped (TestProbeReseedPeriodMismatchKeepsMark).
  redis.call('HINCRBY', k, 'rs', bud_int(take))
end
if raised > 0 then redis.call('HINCRBY', k, 'spent', bud_int(raised)) end
if take > 0 then redis.call('HINCRBY', k, 'held', bud_int(-take)) end
if a - take > 0 then
  redis.call('HSET', k, 'rq', string.format('%d:%s', a - take, rx))
else
  redis.call('HDEL', k, 'rq')
  redis.call('SREM', set, k)
end
return raised
`)

// reseedMarked starts, in the background, the reseed of the accounts a
// swept allotment left pending (bud_sweep), unless one runs, there is no
// SpendReader, Redis is known to be down or the replica is stopping: each
// account's spend is read from the store, then taken to Redis
// (reseedScript). No request waits on it: meanwhile Redis counts the dead
// replica's allotment as held.
func (s *Shared) reseedMarked(ctx context.Context) {
	if s.readSpend == nil || s.r.Degraded() || s.stopping.Load() || !s.reseeding.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.reseeding.Store(false)
		if err := s.reseedPending(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("redis: budgets pending a reseed from the store were not reseeded; the next heartbeat tries again", "err", err)
		}
	}()
}

// reseedPending is one round of reseedMarked.
func (s *Shared) reseedPending(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := s.r.Run(cctx, pendingScript, []string{s.reseedKey()})
	if err != nil {
		return err
	}
	list, ok := v.([]any)
	if !ok {
		return errors.New("redis: reseed set answered a malformed reply")
	}
	var errs []error
	for i := 0; i+1 < len(list); i += 2 {
		k, _ := list[i].(string)
		amt, _ := list[i+1].(string)
		kind, id, ok := strings.Cut(strings.TrimPrefix(k, s.prefix), ":")
		if !ok || !strings.HasPrefix(k, s.prefix) {
			continue
		}
		seen, _ := strconv.ParseInt(amt, 10, 64)
		spent, period := "", int64(0)
		if seen > 0 {
			sp, at, found, err := s.readSpend(cctx, store.Kind(kind), id)
			if err != nil {
				errs = append(errs, err)
				continue // left pending: the next round reads again
			}
			if !found {
				// No read will come (a kind not read alone, an account
				// gone): marked 'rs' for the next hold's view and
				// released now, out of the set, not left to lapse
				// (TestProbeReseedUnreadableReleasedAtOnce).
				spent = "n"
			} else {
				spent = strconv.FormatInt(int64(sp), 10)
			}
			if found && !at.IsZero() {
				period = at.UnixNano()
			}
		}
		if _, err := s.r.Run(cctx, reseedScript, []string{k, s.reseedKey()}, spent, strconv.FormatInt(period, 10), seen); err != nil {
			errs = append(errs, err)
			continue
		}
		s.reseeded.Add(1)
	}
	return errors.Join(errs...)
}
