package ledger

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/rscript"
)

// Spend this replica booked that Redis does not have (a settle made while
// Redis was away, Spend) is unsynced; a hold (or CarryOffline) takes it to
// Redis as one item with a tag, the hold's lease id (random, used once).
// Redis adds an item to spent once per tag: it leaves a marker, field
// "c:<tag>" of the account's hash, whose value is a zero-amount lease
// ("0:<expiry ms>") that the lease sweep drops after markerTTL; an item
// whose marker is there is skipped.
//
// When the script's answer is lost (a read timeout, a connection that died
// after the request went out), Redis may or may not have run it: the item
// stays in doubt on the account, counted in carrying (so that the local
// view, the seed and share checks still have it), and goes again, with
// its tag, with every later hold of the account (and CarryOffline) until
// an answer proves that Redis has it. Only holds that carry something
// send a list and write markers: a hold with nothing to carry sends 0 and
// does the work it always did.
//
// A settle whose answer is lost is kept in doubt the same way, as "s:<lease>":
// its lease is its marker (a settle deletes it), so it is applied only
// while the lease is still there, and then leaves the marker "c:s<lease>".
// Items in doubt are also taken to Redis as soon as it answers again
// (Shared.settleDoubt), not only with the account's next hold: an account
// idle after a lost settle would otherwise reach the horizon below with a
// settle that had in fact run, and count it twice.
// A lease expires after Shared.LeaseTTL and is then swept by a later hold,
// after which its absence proves nothing: a settle still in doubt at 3/4
// of LeaseTTL after its lease was last set (the hold placed, or its lease
// last renewed while the request ran: renew.go; Redis away that long) is carried as plain
// spend under the tag "s<lease>" instead, which counts it twice if the lost
// settle had in fact run (Redis over-counts: budgets refuse early), never
// not at all.

// maxDoubt bounds the items in doubt per account. Past it, an item whose
// answer was lost goes back to unsynced, to be carried again under a new
// tag: counted twice if the lost call ran (the safe side), never lost.
// Reaching it takes 64 lost answers in a row on one account, each after
// spend booked without Redis.
const maxDoubt = 64

// markerTTL is how long a carried item's marker lives: far longer than
// any outage an item stays in doubt through in practice. (An item still in
// doubt after it would be counted twice if the call it was lost with ran.)
const markerTTL = "86400000" // ms, 24 h

type carryItem struct {
	tag    string // the marker's name after "c:"
	lease  string // a settle in doubt: its hold's lease; "" for carried spend
	amount int64
	at     int64 // a settle: when its lease was last set (Shared.clock: the hold placed, or its lease last renewed: renew.go)
}

// doubtList is an account's items in doubt.
type doubtList struct {
	mu    sync.Mutex
	items []carryItem
	n     atomic.Int32 // len(items), read without the lock
	busy  atomic.Bool  // Shared.settleDoubt is at work on the account
}

// owesRedis reports whether a has spend for Redis that only a per-request
// hold takes there: booked while Redis was away (unsynced), or settles in
// doubt. An allotment does not decide a's requests meanwhile (Allotted.local).
func (a *Account) owesRedis() bool {
	r := a.rs.Load()
	return r != nil && (r.unsynced.Load() != 0 || r.doubt.n.Load() != 0)
}

// claimUnsynced moves a's unsynced spend to carrying and returns it: the
// caller takes it to Redis, and no concurrent hold does. It is in carrying
// before it leaves unsynced, so that a share check in between counts it
// twice rather than not at all.
func (a *Account) claimUnsynced() int64 {
	if a.remote().unsynced.Load() == 0 {
		return 0 // nothing to move (the common case: Redis has everything)
	}
	a.beginMove()
	defer a.endMove()
	for {
		pending := a.remote().unsynced.Load()
		a.remote().carrying.Add(pending)
		if a.remote().unsynced.CompareAndSwap(pending, 0) {
			return pending
		}
		a.remote().carrying.Add(-pending)
	}
}

// carryArg is the script argument carrying pending under tag and every
// item in doubt: int64(0) when there is none (no string made), else the
// items, "c:<tag>=<amount>," or "s:<lease>=<amount>,". sent names the
// items in doubt it carries. A settle in doubt for longer than horizon is
// carried as plain spend from then on (its lease may have been swept).
func (a *Account) carryArg(pending int64, tag string, horizon, now int64) (arg any, sent []string) {
	if pending == 0 && a.remote().doubt.n.Load() == 0 {
		return int64(0), nil
	}
	a.remote().doubt.mu.Lock()
	defer a.remote().doubt.mu.Unlock()
	return a.carryArgLocked(pending, tag, horizon, now)
}

// carryArgLocked is carryArg, a.doubt.mu held.
func (a *Account) carryArgLocked(pending int64, tag string, horizon, now int64) (arg any, sent []string) {
	var b strings.Builder
	item := func(kind, id string, amount int64) {
		b.WriteString(kind)
		b.WriteString(id)
		b.WriteByte('=')
		b.WriteString(strconv.FormatInt(amount, 10))
		b.WriteByte(',')
	}
	if pending != 0 {
		item("c:", tag, pending)
	}
	for i := range a.remote().doubt.items {
		it := &a.remote().doubt.items[i]
		if it.lease != "" && now-it.at >= horizon {
			it.lease = ""
		}
		if it.lease != "" {
			item("s:", it.lease, it.amount)
		} else {
			item("c:", it.tag, it.amount)
		}
		sent = append(sent, it.tag)
	}
	if b.Len() == 0 {
		return int64(0), nil
	}
	return b.String(), sent
}

// holdArg is carryArg and the seed a hold sends for a: the spend Redis
// starts the account from when it does not have it (or has an older
// period), which excludes what a's holds carry and what is in doubt.
//
// The seed is read with the list (a.doubt.mu held): an item an answer
// resolves meanwhile (resolve, under the same lock) is then either sent
// and left out of the seed, or in the seed and not sent; read apart, it
// could be both, and a reseeding hold would count it twice.
//
// A list that ends "L" (alone: "L") tells Redis that this replica has heard
// a on Redis: Redis lacking it then lost it (bud_seed).
func (a *Account) holdArg(pending int64, tag string, horizon, now int64) (arg any, sent []string, seed, period int64) {
	if pending == 0 && a.remote().doubt.n.Load() == 0 {
		seed, period = a.seedAt()
		if a.remote().heard.alive.Load() > 0 {
			return "L", nil, seed, period
		}
		return int64(0), nil, seed, period
	}
	a.remote().doubt.mu.Lock()
	defer a.remote().doubt.mu.Unlock()
	arg, sent = a.carryArgLocked(pending, tag, horizon, now)
	seed, period = a.seedAt()
	if a.remote().heard.alive.Load() > 0 {
		if l, ok := arg.(string); ok {
			arg = l + "L"
		} else {
			arg = "L"
		}
	}
	return arg, sent, seed, period
}

// heardArg is 1 when this replica has heard a on Redis, else 0 (the
// allotment flush's flag for bud_seed's lost).
func heardArg(a *Account) int64 {
	if a.remote().heard.alive.Load() > 0 {
		return 1
	}
	return 0
}

// resolve drops the items in doubt named in sent: an answer proved that
// Redis has them. An item is dropped once, however many holds carried it.
// heard: the answer also told what remains (else landedUnheard).
func (a *Account) resolve(sent []string, heard bool, ticket uint64) {
	if len(sent) == 0 {
		return
	}
	a.remote().doubt.mu.Lock()
	defer a.remote().doubt.mu.Unlock()
	if !heard {
		var n int64
		for _, it := range a.remote().doubt.items {
			if slices.Contains(sent, it.tag) {
				n += it.amount
			}
		}
		a.landedUnheard(n)
	}
	kept := a.remote().doubt.items[:0]
	var ran int64
	for _, it := range a.remote().doubt.items {
		if slices.Contains(sent, it.tag) {
			ran += it.amount
			continue
		}
		kept = append(kept, it)
	}
	a.ranOff(ran, ticket)
	clear(a.remote().doubt.items[len(kept):])
	a.remote().doubt.items = kept
	a.remote().doubt.n.Store(int32(len(kept)))
}

// ranOff takes amount, spend that the call numbered ticket (Shared.queue)
// carried and Redis ran, out of carrying. A reply of a later call mirrored
// before now (since the view was last set whole) had it on Redis and in
// carrying, and the view counted it twice: it leaves the view too, as a
// flush's bookings do (mirrorFlushed). Left there, the view kept it twice
// until the next mirror, and a hold meanwhile raised a lost account's
// spend on Redis by it for the rest of the period (bud_seed;
// TestProbeViewCountingACarryTwiceDoesNotRaiseRedis).
func (a *Account) ranOff(amount int64, ticket uint64) {
	if amount == 0 {
		return
	}
	r := a.remote()
	r.mirrorMu.Lock()
	defer r.mirrorMu.Unlock()
	if ticket == 0 || ticket >= r.mirrored || r.mirrored <= r.viewSince {
		r.carrying.Add(-amount)
		return
	}
	a.beginMove()
	r.carrying.Add(-amount)
	a.spent.Add(-amount)
	a.endMove()
	a.used.Add(-amount)
}

// leaseLost makes the settles in doubt among sent plain carried spend
// (under their tags, "s<lease>"): Redis answered that it lacks the
// account, so their leases are gone with it, and a hold that does not seed
// the account (another replica seeded it first) would apply them nowhere.
// Whether or not the lost settle ran on the Redis that lost the account,
// it is not on this one: carried as plain spend it counts once.
func (a *Account) leaseLost(sent []string) {
	if len(sent) == 0 {
		return
	}
	a.remote().doubt.mu.Lock()
	defer a.remote().doubt.mu.Unlock()
	for i := range a.remote().doubt.items {
		if it := &a.remote().doubt.items[i]; it.lease != "" && slices.Contains(sent, it.tag) {
			it.lease = ""
		}
	}
}

// doubtful keeps it in doubt; its amount is already in carrying. Past
// maxDoubt it goes back to unsynced (carried again under a new tag).
func (a *Account) doubtful(it carryItem) {
	if it.amount == 0 {
		return
	}
	a.remote().doubt.mu.Lock()
	full := len(a.remote().doubt.items) >= maxDoubt
	if !full {
		a.remote().doubt.items = append(a.remote().doubt.items, it)
		a.remote().doubt.n.Store(int32(len(a.remote().doubt.items)))
	}
	a.remote().doubt.mu.Unlock()
	if full {
		a.beginMove()
		a.remote().unsynced.Add(it.amount) // first, as everywhere
		a.remote().carrying.Add(-it.amount)
		a.endMove()
	}
}

// dropDoubtLocked forgets the items in doubt (SetSpent: what Redis was
// owed belongs to the spend it overwrites). a.doubt.mu is held.
func (a *Account) dropDoubtLocked() {
	for _, it := range a.remote().doubt.items {
		a.remote().carrying.Add(-it.amount)
	}
	a.remote().doubt.items = nil
	a.remote().doubt.n.Store(0)
}

// outcome is how a script that carried items ended.
type outcome uint8

const (
	outRan     outcome = iota // answered: Redis has what it carried
	outNotRun                 // proven never run
	outUnknown                // the answer was lost: it may have run
	outAbsent                 // answered: Redis lacks the account, nothing applied (carryOne)
)

// landCarry books how a call that carried pending under tag (and the items
// in doubt sent) ended. heard: its answer also told a's remaining, which
// counts them (a hold's, heard before this); else they count against the
// share as landed since a was last heard. ticket is the call's number in
// the ordered stream (Shared.queue; ranOff).
func (a *Account) landCarry(o outcome, pending int64, tag string, sent []string, heard bool, ticket uint64) {
	switch o {
	case outRan:
		a.resolve(sent, heard, ticket)
		if !heard {
			a.landedUnheard(pending)
		}
		a.ranOff(pending, ticket)
	case outNotRun: // the items in doubt stay so
		a.beginMove()
		a.remote().unsynced.Add(pending) // back to unsynced before carrying lets go of it
		a.remote().carrying.Add(-pending)
		a.endMove()
	default:
		a.doubtful(carryItem{tag: tag, amount: pending})
	}
}

// settleDoubt takes a's items in doubt to Redis in the background, as
// CarryOffline does, once Redis answers again: retried (while Redis is
// marked down, only waiting) until none is left or for as long as a lease
// lives; holds of the account carry them meanwhile and after, and the
// sweep once this gives up (owe). One at a time per account. A stop
// (CarryOffline) ends it at its next call, and carries what it leaves.
func (s *Shared) settleDoubt(a *Account) {
	if a.remote().doubt.n.Load() == 0 || s.stopping.Load() || !a.remote().doubt.busy.CompareAndSwap(false, true) {
		return
	}
	s.resolving.Add(1)
	s.draining.Add(1)
	go func() {
		defer s.resolving.Done()
		defer s.draining.Add(-1)
		for {
			done, absent := s.drainDoubt(a)
			a.remote().doubt.busy.Store(false)
			if !done {
				s.owe(a) // gave up (or stopping): the sweep, a hold or the stop's carry
				return
			}
			if absent {
				return // left for the hold that seeds the account
			}
			// An item that came in doubt as this finished is not left
			// behind.
			if a.remote().doubt.n.Load() == 0 || !a.remote().doubt.busy.CompareAndSwap(false, true) {
				return
			}
		}
	}()
}

// drainDoubt is settleDoubt's loop: while Redis is marked down it looks
// again every doubtPoll, so that it goes soon after Redis is back; a call
// that fails is tried again after a wait that doubles up to doubtRetry.
// It reports whether it got an answer (or found nothing left to carry);
// false once the replica is stopping. absent: the answer was that Redis
// lacks the account, and the items are left in doubt for the next hold.
func (s *Shared) drainDoubt(a *Account) (done, absent bool) {
	deadline := time.Now().Add(s.LeaseTTL)
	wait := doubtPoll
	for time.Now().Before(deadline) && !s.stopping.Load() {
		if s.r.Degraded() {
			s.pause(doubtPoll)
			continue
		}
		carry, sent := a.carryArg(0, "", s.horizon(), s.clock())
		if carry == int64(0) {
			return true, false
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.callWait())
		q, ticket := s.queue(carryScript, []string{s.key(a)}, carry, a.resetAt.Load())
		v, ticket, err := s.wait(ctx, q, ticket)
		cancel()
		if rscript.Final(err) == nil {
			if v == int64(2) {
				// Redis lacks the account (restarted empty): nothing
				// applied. The items stay in doubt for a hold of this
				// replica's, which seeds the account without them and
				// carries them (as carryOne leaves them); resolved here
				// they would go into the seed, and be lost when another
				// replica seeds the account first.
				a.leaseLost(sent)
				return true, true
			}
			a.landCarry(outRan, 0, "", sent, false, ticket)
			return true, false
		}
		s.pause(wait)
		wait = min(2*wait, doubtRetry)
	}
	return false, false
}

const (
	doubtPoll  = 100 * time.Millisecond
	doubtRetry = 2 * time.Second
)
