package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/rscript"
	"github.com/tollgate/tollgate/internal/store"
)

// Replicas sharing budgets on Redis announce themselves: each beats into a
// sorted set every HeartbeatEvery, scored with Redis's clock, and a replica
// heard from within AliveWindow counts as alive. The hold script counts the
// live replicas itself and returns, per budgeted account, what remained
// (budget − spent − held) and how many replicas were alive; the settle
// returns what remained and takes the larger of the hold's count and the
// last heartbeat's: the request path learns both with no extra round trip.
//
// When a replica loses Redis it may spend on each budgeted account only its
// share of what remained when it last heard: remaining / alive, minus what it
// has booked or holds since that Redis does not know. The replicas cut off
// together can therefore overspend a budget by at most the sum of their
// shares (see docs/spend-and-limits.md, "Redis trouble"). In strict mode, or
// with FailClosed, a replica without Redis refuses budgeted requests instead.
const (
	HeartbeatEvery = time.Second
	AliveWindow    = 5 * time.Second
)

// Enforcement is how a request's budgets are enforced.
type Enforcement uint8

const (
	// EnforceDefault: without Redis, a replica spends its share.
	EnforceDefault Enforcement = iota
	// EnforceStrict: spend never passes a budget; without Redis, budgeted
	// requests are refused.
	EnforceStrict
)

// ParseEnforcement reads "default" or "strict" ("" is default).
func ParseEnforcement(s string) (Enforcement, error) {
	switch strings.TrimSpace(s) {
	case "", "default":
		return EnforceDefault, nil
	case "strict":
		return EnforceStrict, nil
	}
	return EnforceDefault, fmt.Errorf("unknown budget_enforcement %q (valid: default, strict)", s)
}

func (e Enforcement) String() string {
	if e == EnforceStrict {
		return "strict"
	}
	return "default"
}

// heard is what Redis last said about an account.
type heard struct {
	remaining atomic.Int64 // budget − spent − held on Redis, Amount
	alive     atomic.Int64 // replicas alive then; 0 when never heard
	// landed is this replica's spend that reached Redis by calls whose
	// answer told nothing of what remains (a carry's, a hold's in doubt
	// resolved in the background), summed since the account was made; it
	// only grows (by what lands). counted is what of it had landed when
	// the call whose answer set remaining was sent: that answer counts it.
	// landed − counted (unheard) is no longer in offRedis, not yet in
	// remaining, and still counts against the share (tryShare). Without
	// it, a replica whose holds keep missing their deadline while their
	// calls run late had its share renewed each time such a carry landed,
	// against the same stale remaining, and spent the budget as if alone
	// (TestSlowRedisReplicaCountsAsCutOffOnce). Not zeroed by an answer:
	// a landing booked after a call was sent may have run on Redis after
	// it, and an answer read late would forget it
	// (TestProbeLandingBookedBeforeAnOlderAnswerStillCounts).
	landed, counted atomic.Int64
}

// hear notes what a Redis answer said of a. mark is a.landedMark() read
// before the call was sent: every landing counted in it had run on Redis
// before the call did, and its answer counts it; later ones still count
// as unheard (twice, if they ran before the call: never not at all).
// counted is set after remaining, so that a share check in between
// counts a landing twice rather than not at all.
func (a *Account) hear(remaining Amount, alive int64, mark int64) {
	a.remote().heard.remaining.Store(int64(remaining))
	a.remote().heard.alive.Store(max(alive, 1))
	a.remote().heard.counted.Store(mark)
}

// landedMark is what of a's spend had landed unheard so far (hear's mark),
// read before a call whose answer tells a's remaining is sent.
func (a *Account) landedMark() int64 { return a.remote().heard.landed.Load() }

// unheard is a's spend that landed on Redis after the call whose answer
// set remaining was sent (counted read first: a later landed only adds).
func (a *Account) unheard() int64 {
	h := &a.remote().heard
	c := h.counted.Load()
	return h.landed.Load() - c
}

// landedUnheard notes amount, spend of this replica's that has reached
// Redis by a call whose answer said nothing of what remains: called before
// it leaves carrying (counted twice a moment, never not at all).
func (a *Account) landedUnheard(amount int64) {
	if amount != 0 {
		a.remote().heard.landed.Add(amount)
	}
}

// LastHeard is what Redis last said about the account: what remained of its
// budget (net of every replica's holds) and how many replicas were alive.
// alive is 0 when this replica has not heard about the account.
func (a *Account) LastHeard() (remaining Amount, alive int64) {
	r := a.rs.Load()
	if r == nil {
		return 0, 0 // never heard (read only: not made for it)
	}
	return Amount(r.heard.remaining.Load()), r.heard.alive.Load()
}

// UnavailableError refuses a budgeted request that cannot be checked:
// Redis is unreachable and the mode is strict or fail-closed, or this
// replica's share of what remained is spent. A retry may succeed once Redis
// answers again.
type UnavailableError struct {
	Kind store.Kind
	ID   string
	Msg  string
}

func (e *UnavailableError) Error() string { return e.Msg }

// newReplicaID names this replica in the presence set.
func newReplicaID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// heartbeatScript: KEYS[1] = presence set; ARGV = replica id, alive window
// (ms). It returns the replicas alive.
var heartbeatScript = rscript.New(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 10 * window)
redis.call('PEXPIRE', KEYS[1], 86400000)
return redis.call('ZCOUNT', KEYS[1], now - window, '+inf')
`)

func (s *Shared) presenceKey() string { return s.tag + ":replicas" }

// PresenceKey is the presence set's key (for the rate limits' allotments,
// which count live replicas the same way).
func (s *Shared) PresenceKey() string { return s.presenceKey() }

// Heartbeat announces this replica and returns how many are alive.
func (s *Shared) Heartbeat(ctx context.Context) (int64, error) {
	if s.left.Load() {
		return s.alive.Load(), nil
	}
	v, err := s.r.Run(ctx, heartbeatScript, []string{s.presenceKey()}, s.id, AliveWindow.Milliseconds())
	if err != nil {
		return 0, err
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("redis: heartbeat reply %T", v)
	}
	s.alive.Store(n)
	return n, nil
}

// Alive is the number of replicas the last heartbeat counted (0 before one).
func (s *Shared) Alive() int64 { return s.alive.Load() }

// Announce beats every HeartbeatEvery until ctx ends. After a beat
// Redis answered, it sweeps the accounts that owe Redis spend booked
// while it was away (owed.go), in the background.
func (s *Shared) Announce(ctx context.Context) {
	t := time.NewTicker(HeartbeatEvery)
	defer t.Stop()
	for {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := s.Heartbeat(hctx) // a failure shows in the holds, which fall back
		cancel()
		if err == nil {
			s.sweep()
			s.reseedMarked(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Leave takes this replica out of the presence set (a graceful stop), so
// the others' shares grow at once rather than after AliveWindow.
func (s *Shared) Leave(ctx context.Context) {
	if s.left.Swap(true) {
		return
	}
	_, _ = s.r.Submit(ctx, "zrem", s.presenceKey(), s.id)
}

// closed reports whether a budgeted request must be refused rather than
// spend a share while Redis is away.
func (s *Shared) closed(accounts []*Account) bool {
	return s.failShut || (s.mode != nil && s.mode(accounts) == EnforceStrict)
}

// offline holds in process while Redis is away: on each budgeted account
// only within this replica's share; spend settled on them is remembered
// for Redis.
func (s *Shared) offline(accounts []*Account, q ask, budgeted []*Account, cause string) (Hold, error) {
	s.offlineN.Add(1)
	if len(budgeted) > 0 && s.closed(accounts) {
		a, why := budgeted[0], "budget_enforcement is strict"
		if s.failShut {
			why = "budget_on_redis_failure is fail_closed"
		}
		return nil, &UnavailableError{Kind: a.Kind, ID: a.ID, Msg: fmt.Sprintf(
			"budgets cannot be checked right now (%s) and %s, so %s %s's budget admits nothing until it is back: retry shortly",
			cause, why, a.Kind, shownID(a))}
	}
	try := func(a *Account, amt Amount, upTo bool) (Amount, bool) {
		for _, b := range budgeted {
			if b == a {
				return s.tryShare(a, amt, upTo)
			}
		}
		return a.tryHold(amt, upTo)
	}
	if q.mode == holdFlex {
		r, err := reserveFlex(accounts, q.flex, try, s.shareRefusal)
		if err != nil {
			return nil, err
		}
		return &localHold{r: r, budgeted: budgeted, s: s}, nil
	}
	amount, upTo := q.amount, q.mode == holdUpTo
	held, refused := holdAll(accounts, amount, upTo, try)
	if refused >= 0 {
		return nil, s.shareRefusal(accounts[refused], amount)
	}
	r := &Reservation{accounts: accounts, amount: held}
	if held < amount {
		short, busy := takeShort(accounts)
		if busy >= 0 {
			r.Release()
			return nil, shortBusy(accounts[busy], amount)
		}
		r.short = short
	}
	return &localHold{r: r, budgeted: budgeted, s: s}, nil
}

// share is what this replica may spend on a while cut off, as last heard:
// remaining / alive. An account never heard of takes what the local view
// leaves and the replicas the last heartbeat counted. A replica that has
// heard neither (cut off before its first heartbeat answered) knows nothing
// of what the others spend: its share is nothing (alive 0), not the whole
// budget, which is what "alone" would mean.
func (s *Shared) share(a *Account) (remaining Amount, alive int64) {
	remaining, alive = a.LastHeard()
	if alive == 0 {
		// What the local view had on Redis before this replica's own
		// spend landed there unheard (which tryShare counts as its own).
		remaining = a.Budget() - Amount(a.spent.Load()-a.offRedis()-a.unheard())
		alive = s.alive.Load()
	}
	return remaining, alive
}

// Share is the share this replica takes of a while cut off from Redis:
// remaining / alive, as it last heard (or, for an account it never heard
// of, as its local view and its last heartbeat have it). alive 0: it knows
// nothing, and its share is nothing.
func (s *Shared) Share(a *Account) (remaining Amount, alive int64) { return s.share(a) }

// shareOf is remaining / alive, nothing when alive is not known (0).
func shareOf(remaining Amount, alive int64) Amount {
	if alive <= 0 {
		return 0
	}
	return remaining / Amount(alive)
}

// offlineUsed is what this replica has booked or holds on a that Redis
// does not know: spend settled without it, and local holds.
func offlineUsed(a *Account) Amount {
	// spent first: a settle adds to unsynced before spent, so a read that
	// races it counts the spend twice (refusing), never not at all.
	spent := a.spent.Load()
	off := a.offRedis() + a.unheard()
	return Amount(a.used.Load() - spent + off)
}

// tryShare holds amt on a within both its budget and this replica's share.
// The share's ceiling on used is spent − (unsynced + carrying) + share, so
// a CAS on used keeps concurrent holds within it.
func (s *Shared) tryShare(a *Account, amt Amount, upTo bool) (Amount, bool) {
	// counted before remaining: an answer read in between then counts
	// the landings its remaining has twice, rather than not at all.
	counted := a.remote().heard.counted.Load()
	share := shareOf(s.share(a))
	return casHold(&a.used, func() Amount {
		spent := a.spent.Load()
		off := a.offRedis() // before landed: a landing leaves carrying after it is in landed
		return min(Amount(spent-off-(a.remote().heard.landed.Load()-counted))+share, a.Budget())
	}, amt, upTo)
}

// shareRefusal says why a could not hold amt while Redis is away: its
// budget is spent as far as this replica knows (400), or only this
// replica's share is (503: a retry may land once Redis is back).
func (s *Shared) shareRefusal(a *Account, amt Amount) error {
	ex := &ExceededError{Kind: a.Kind, ID: a.ID, Spent: a.Spent(), Reserved: a.Reserved(),
		Budget: a.Budget(), Need: amt, ResetAt: a.ResetAt()}
	if a.Budget() == Unlimited {
		return ex
	}
	remaining, alive := s.share(a)
	if alive == 0 && Amount(a.used.Load())+amt <= a.Budget() {
		return &UnavailableError{Kind: a.Kind, ID: a.ID, Msg: fmt.Sprintf(
			"Redis is unreachable and this replica has not yet heard from it how much of %s %s's budget remains or how many replicas share it, so it spends none of it: retry shortly",
			a.Kind, shownID(a))}
	}
	used := offlineUsed(a)
	if remaining-used < amt || Amount(a.used.Load())+amt > a.Budget() {
		ex.Detail = fmt.Sprintf("Redis is unreachable; %s remained when this replica last heard", fmtUSD(remaining))
		return ex
	}
	return &UnavailableError{Kind: a.Kind, ID: a.ID, Msg: fmt.Sprintf(
		"Redis is unreachable: this replica may spend only its share of %s %s's budget (%s remaining / %d replicas = %s; %s of it used) and this request may cost up to %s: retry shortly",
		a.Kind, shownID(a), fmtUSD(remaining), alive, fmtUSD(remaining/Amount(alive)), fmtUSD(used), fmtUSD(amt))}
}

// shownID is how an account is named in a 503's message, which is logged:
// a key's hash (alone or with a model) by its first 8 hex digits, as the
// metrics and the log name keys.
func shownID(a *Account) string {
	id, rest := a.ID, ""
	if a.Kind == store.KindKeyModel {
		if i := strings.IndexByte(id, '/'); i >= 0 {
			id, rest = id[:i], id[i:]
		}
	} else if a.Kind != store.KindKey {
		return a.ID
	}
	if len(id) > 8 {
		id = id[:8]
	}
	return id + rest
}
