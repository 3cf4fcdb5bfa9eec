package ratelimit

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/lifecycle"
	"github.com/tollgate/tollgate/internal/rscript"
)

// A parallel slot on Redis is a lease (a member of the rule's sorted set,
// scored by its expiry), so that a replica that dies holding cannot keep
// it. A request that outlives the lease would free its slot while it runs,
// and max_parallel_requests could be passed. So the replica keeps the
// slots of its requests alive while they run (Redis.Renew), as the
// ledger does its budget holds (ledger/renew.go): every LeaseTTL/4 one
// script renews the slots taken (or last renewed) at least 3/4 of that
// ago to LeaseTTL from then. A request shorter than that is never
// renewed, and the renewal adds no Redis call to any request. A renewal
// never makes a slot: a slot given back, or expired (Redis away for
// longer than the lease), stays gone; its request runs on, and its
// settlement gives back nothing.

// liveTickets are a replica's tickets admitted on Redis with a parallel
// slot, not settled yet: the slot's lease and when it was last set (unix
// ns, this replica's clock: the admission, or the start of the last
// renewal Redis answered).
type liveTickets struct {
	mu sync.Mutex
	m  map[*Ticket]liveSlot
}

type liveSlot struct {
	lease string
	since int64
}

// track notes t, just admitted on Redis at at (Redis.clock), when it took a
// parallel slot.
func (rd *Redis) track(t *Ticket, at int64) {
	if t.lease == "" || !hasParallel(t.rules) {
		return
	}
	l := &rd.live
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[*Ticket]liveSlot)
	}
	l.m[t] = liveSlot{lease: t.lease, since: at}
	l.mu.Unlock()
}

// untrack drops t (its settlement gives the slot back), reporting whether
// it was there.
func (rd *Redis) untrack(t *Ticket) bool {
	l := &rd.live
	l.mu.Lock()
	_, ok := l.m[t]
	if ok {
		delete(l.m, t)
	}
	l.mu.Unlock()
	return ok
}

func hasParallel(rules []Rule) bool {
	for i := range rules {
		if rules[i].Kind == Parallel {
			return true
		}
	}
	return false
}

// renewSlotsScript renews parallel slots: KEYS are each ticket's parallel
// rules' sorted sets, ARGV the ttl (ms), then per ticket its key count and
// its lease. A slot is set to expire at now + ttl only while it is there
// and unexpired, and its set then lives at least as long. It returns, per
// ticket, how many of its slots were renewed.
var renewSlotsScript = rscript.New(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local out, ki = {}, 0
for j = 2, #ARGV, 2 do
  local n, lease, r = tonumber(ARGV[j]), ARGV[j + 1], 0
  for i = 1, n do
    local k = KEYS[ki + i]
    local x = redis.call('ZSCORE', k, lease)
    if x and tonumber(x) > now then
      redis.call('ZADD', k, 'XX', now + ttl, lease)
      if redis.call('PTTL', k) < ttl + 1000 then redis.call('PEXPIRE', k, ttl + 1000) end
      r = r + 1
    end
  end
  ki = ki + n
  out[#out + 1] = r
end
return out
`)

// renewBatch bounds the tickets one renewal script takes.
const renewBatch = 256

// renewEvery is how often Renew runs: a quarter of the lease. A slot is
// renewed from an age of 3/4 of that, so that one renewed at a round (its
// since a little after the round began) is renewed again at the next, not
// every other round (ledger's renewDue; TestProbeSlotRenewalRenewsEveryRound).
func (rd *Redis) renewEvery() time.Duration { return max(rd.LeaseTTL/4, 10*time.Millisecond) }

// Renew keeps the parallel slots of this replica's requests alive while
// they run, until ctx ends.
func (rd *Redis) Renew(ctx context.Context) {
	lifecycle.Every(ctx, rd.renewEvery(), func() { rd.renewSlots(ctx) })
}

// renewSlots renews the slots due (see Renew); it reports how many tickets
// were renewed and how many had lost every slot.
func (rd *Redis) renewSlots(ctx context.Context) (renewed, lost int) {
	// Tried even while the runner is degraded (its belief outlasts an
	// outage by Watch's probe wait): ledger's renewLeases.
	from := int64(rd.renewEvery()) * 3 / 4 // due from 3/4 of a round (renewEvery)
	now := rd.clock()
	type due struct {
		t     *Ticket
		lease string
	}
	var all []due
	rd.live.mu.Lock()
	for t, s := range rd.live.m {
		if now-s.since >= from {
			all = append(all, due{t, s.lease})
		}
	}
	rd.live.mu.Unlock()
	for len(all) > 0 {
		n := min(len(all), renewBatch)
		batch := all[:n]
		all = all[n:]
		var keys []string
		args := make([]any, 1, 1+2*n)
		args[0] = rd.LeaseTTL.Milliseconds()
		for _, d := range batch {
			c := 0
			for i := range d.t.rules { // an admission never changes them
				if r := &d.t.rules[i]; r.Kind == Parallel {
					keys = append(keys, rd.key(r))
					c++
				}
			}
			args = append(args, c, d.lease)
		}
		start := rd.clock()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err := rscript.Int64s(rd.r.Run(cctx, renewSlotsScript, keys, args...))
		cancel()
		if err == nil && len(res) != n {
			err = errMalformedRenew
		}
		if err != nil {
			slog.Debug("redis: parallel slots not renewed; the next round tries again", "err", err)
			return renewed, lost
		}
		for i, d := range batch {
			if res[i] > 0 {
				rd.live.mu.Lock()
				if s, ok := rd.live.m[d.t]; ok && s.lease == d.lease {
					rd.live.m[d.t] = liveSlot{lease: d.lease, since: start}
				}
				rd.live.mu.Unlock()
				renewed++
				continue
			}
			// Given back meanwhile, or expired: no longer renewed.
			if rd.untrack(d.t) {
				lost++
			}
		}
	}
	if lost > 0 {
		slog.Warn("redis: parallel slots of requests still running had expired before they were renewed; "+
			"their requests go on", "requests", lost)
	}
	return renewed, lost
}

type renewError string

func (e renewError) Error() string { return string(e) }

const errMalformedRenew = renewError("redis: parallel slot renewal answered a malformed reply")
