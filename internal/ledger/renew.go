package ledger

import (
	"context"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/lifecycle"
	"github.com/tollgate/tollgate/internal/rscript"
)

// A per-request hold on Redis is a lease (luaHold: "amount:expiry ms"), so
// that a replica that dies holding cannot strand budget. A request that
// outlives the lease (a long stream) would lose its hold while it runs:
// other requests would then be admitted against money it is about to
// spend. So the replica keeps its own holds' leases alive while their
// requests run (Shared.Renew): it knows them anyway, to settle them.
//
// Every LeaseTTL/4 one script renews, for every hold placed (or last
// renewed) at least 3/4 of that ago (renewDue), its lease on each of its
// accounts to LeaseTTL from then. A request shorter than that (with the
// default 15 min, nearly all) is never renewed: the renewal adds no Redis
// call, and nothing to a request but a map insert and delete under a
// mutex. A lease is first renewed at an age between 3/16 and 7/16 of
// LeaseTTL, then at every round: a round or two lost (Redis away) are
// caught up by the next, before the lease ends.
//
// A renewal never makes a lease: it sets the expiry of one that is still
// there and has not expired by Redis's clock, and leaves anything else
// alone. So a hold settled meanwhile (its settle ran first) stays settled,
// and one that expired (Redis away for longer than the lease, a replica
// stalled as long) stays gone: its request runs on, the budget no longer
// counts its hold, and its settle books its spend as it would have (the
// settle finds no lease and frees nothing). The hold is then no longer
// renewed, and the loss is logged.

// liveHolds are a replica's per-request holds on Redis not settled yet.
type liveHolds struct {
	mu sync.Mutex
	m  map[*sharedHold]struct{}
}

func (l *liveHolds) add(h *sharedHold) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[*sharedHold]struct{})
	}
	l.m[h] = struct{}{}
	l.mu.Unlock()
}

// remove drops h, reporting whether it was there.
func (l *liveHolds) remove(h *sharedHold) bool {
	l.mu.Lock()
	_, ok := l.m[h]
	delete(l.m, h)
	l.mu.Unlock()
	return ok
}

// since is when h's lease was last set to LeaseTTL from then, as far as
// this replica knows (Shared.clock, monotonic): the hold's placement, or
// the start of the last renewal Redis answered. Redis's expiry is no
// earlier than since + LeaseTTL.
func (h *sharedHold) since() int64 { return max(h.at, h.renewed.Load()) }

// renewScript renews leases: KEYS are each hold's account hashes, ARGV the
// ttl (ms), then per hold its key count and its lease. A lease is set to
// now + ttl only while it is there and unexpired, and its account's hash
// then lives at least a second longer: a hold refreshes the hash's 7-day
// expiry only when it finds it a day untouched (bud_hold), so a request
// that outlives the hash's expiry, with no other hold on its account,
// would otherwise lose the hash with the lease in it - its hold and the
// account's spent with it, reseeded from the store by the next hold. A
// hash with no expiry keeps none. It returns, per hold, how many of its
// accounts still had its lease (now renewed).
var renewScript = rscript.New(luaNow + `
local ttl = tonumber(ARGV[1])
local exp = string.format('%d', now + ttl)
local out, ki = {}, 0
for j = 2, #ARGV, 2 do
  local n, lease, r = tonumber(ARGV[j]), ARGV[j + 1], 0
  for i = 1, n do
    local k = KEYS[ki + i]
    local v = redis.call('HGET', k, lease)
    if v then
      local a, x = string.match(v, '^(%-?%d+):(%d+)$')
      if a and tonumber(x) > now then
        redis.call('HSET', k, lease, a .. ':' .. exp)
        local pt = redis.call('PTTL', k)
        if pt >= 0 and pt < ttl + 1000 then redis.call('PEXPIRE', k, ttl + 1000) end
        r = r + 1
      end
    end
  end
  ki = ki + n
  out[#out + 1] = r
end
return out
`)

// renewBatch bounds the holds one renewal script takes: a script blocks
// Redis while it runs.
const renewBatch = 256

// renewEvery is how often Renew runs: a quarter of the lease.
func (s *Shared) renewEvery() time.Duration { return max(s.LeaseTTL/4, 10*time.Millisecond) }

// renewDue is the age from which a lease is renewed: 3/4 of a round. A
// lease renewed at one round has its since a little after that round
// began (the script's start), so at the next round, a round later give or
// take the scheduler, it is a little younger than a round: with a round as
// the threshold it would be renewed only every other round, and two rounds
// lost (an outage of just over a quarter lease) would lose it. From 3/4 of
// a round it is renewed at every round, and three rounds come before it
// ends (TestProbeRenewalRenewsEveryRound).
func renewDue(every time.Duration) int64 { return int64(every) * 3 / 4 }

// Renew keeps the leases of this replica's per-request holds on Redis
// alive while their requests run, until ctx ends (the server's "lease
// renewal" actor, stopped once every request has settled).
func (s *Shared) Renew(ctx context.Context) {
	lifecycle.Every(ctx, s.renewEvery(), func() { s.renewLeases(ctx) })
}

// renewLeases renews the leases due (see Renew); it reports how many holds
// were renewed and how many had lost their lease on every account.
func (s *Shared) renewLeases(ctx context.Context) (renewed, lost int) {
	// Tried even while the runner is degraded: that is its belief that
	// Redis is away, which outlasts an outage by Watch's probe wait (up to
	// 30 s after a flap), and a round skipped then may lose leases Redis
	// would have renewed (TestProbeRenewalWhileRunnerDegraded). A Redis
	// really away costs this actor a refused call, or one callWait.
	from := renewDue(s.renewEvery())
	now := s.clock()
	var due []*sharedHold
	s.live.mu.Lock()
	for h := range s.live.m {
		if now-h.since() >= from {
			due = append(due, h)
		}
	}
	s.live.mu.Unlock()
	for len(due) > 0 {
		n := min(len(due), renewBatch)
		batch := due[:n]
		due = due[n:]
		keys := make([]string, 0, 2*n)
		args := make([]any, 1, 1+2*n)
		args[0] = s.LeaseTTL.Milliseconds()
		for _, h := range batch {
			k := h.keys[:len(h.keys)-1] // not the presence set
			keys = append(keys, k...)
			args = append(args, len(k), h.lease)
		}
		start := s.clock()
		cctx, cancel := context.WithTimeout(ctx, s.callWait())
		res, err := rscript.Int64s(s.r.Run(cctx, renewScript, keys, args...))
		cancel()
		if err == nil && len(res) != n {
			err = errMalformedRenew
		}
		if err != nil {
			s.log.Debug("redis: budget hold leases not renewed; the next round tries again", "err", err)
			return renewed, lost
		}
		for i, h := range batch {
			if res[i] > 0 {
				h.renewed.Store(start)
				renewed++
				continue
			}
			// Settled meanwhile (its settle ran first), or its lease
			// expired: either way no longer renewed.
			if s.live.remove(h) {
				lost++
			}
		}
	}
	if lost > 0 {
		s.log.Warn("redis: budget holds of requests still running had expired before they were renewed; "+
			"their requests go on and their settle books their spend", "holds", lost)
	}
	return renewed, lost
}

type renewError string

func (e renewError) Error() string { return string(e) }

const errMalformedRenew = renewError("redis: lease renewal answered a malformed reply")
