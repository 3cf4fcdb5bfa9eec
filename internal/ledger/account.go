// Package ledger keeps what every budgeted entity has spent and has reserved,
// and enforces budgets by reservation: a request reserves its worst-case cost
// on every account that applies before it is forwarded, and settles to its
// real cost after. An account never admits a reservation that would take
// spend + reserved past its budget, so concurrency cannot overspend.
package ledger

import (
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// Amount is money in nano-dollars (1e-9 USD). Prices per token go down to
// ~1e-8 USD, and int64 nano-dollars reach 9.2e9 USD, so this is exact for
// every sum a gateway sees and lets accounts use atomics.
type Amount int64

// MaxAmount is the largest Amount USD returns (about $2.3 billion): two of
// them still add up without overflowing, so that no sum of a budget, its
// spend and one hold wraps around to a negative number.
const MaxAmount Amount = 1 << 61

// USD converts dollars to an Amount, rounding to the nearest nano-dollar
// and saturating at ±MaxAmount (NaN is 0): a worst case too large to hold
// is held as MaxAmount, never wrapped to a negative (free) hold.
func USD(d float64) Amount {
	x := math.Round(d * 1e9)
	switch {
	case x != x:
		return 0
	case x >= float64(MaxAmount):
		return MaxAmount
	case x <= -float64(MaxAmount):
		return -MaxAmount
	}
	return Amount(x)
}

// Dollars converts a to dollars.
func (a Amount) Dollars() float64 { return float64(a) / 1e9 }

// Unlimited is the budget of an account without one.
const Unlimited Amount = math.MaxInt64

// Account is one budget. Spend and reservations are atomics; the budget and
// reset time are replaced whole when an operator edits them.
type Account struct {
	Kind store.Kind
	ID   string // key hash, user id, team id, end user id, "global", key hash + "/" + model

	spent atomic.Int64 // settled spend, Amount
	// used is spent plus outstanding reservations, in one word, so that a
	// budget check and a concurrent settlement can never see the two halves
	// of a settlement apart (spend moved in, hold not yet out, or the reverse).
	used    atomic.Int64
	budget  atomic.Int64 // Amount; Unlimited when none
	resetAt atomic.Int64 // unix nanoseconds of the next budget reset; 0 when none
	soft    atomic.Int64 // soft budget, Amount; Unlimited when none
	softHit atomic.Bool  // the soft budget crossing was already reported
	// short is set while a hold cut to what remained (ReserveUpTo) is
	// outstanding: the one request that may cost more than it holds.
	short atomic.Bool
	// stored is the spend the store last reported for the current period
	// (Book.Account, SetSpent, rollTo): a reseed of Redis takes it when it
	// is more than the local view (seedAt), so that spend Redis lost (a
	// crashed replica's allotment bookings) comes back from the store.
	// Not in remote: every request's Book.Account notes it.
	stored atomic.Int64
	// rs is what only budgets shared on Redis (and the few local paths
	// that move spend the Redis way: Spend, SetSpent, a period's rollover)
	// use, made on first use (remote): most accounts of a gateway without
	// Redis never need it, and an account is kept for every key used.
	rs atomic.Pointer[remote]
	// name is the entity's id when it is not ID (Spec.Name: a regenerated
	// key's current token hash); nil: ID.
	name atomic.Pointer[string]
}

// Name is the id of the entity the account belongs to: ID, or a
// regenerated key's current token hash (Spec.Name). The store's record
// (a period's reset) and the key's metadata go by it; Redis and the
// book go by ID.
func (a *Account) Name() string {
	if n := a.name.Load(); n != nil {
		return *n
	}
	return a.ID
}

// SetName sets Name (the budget sweep: a regenerated key's account may
// not have seen a request under the key's current hash yet).
func (a *Account) SetName(n string) { a.setName(n) }

func (a *Account) setName(n string) {
	if cur := a.name.Load(); cur != nil && *cur == n || cur == nil && n == a.ID {
		return
	}
	n = strings.Clone(n)
	a.name.Store(&n)
}

// remote is the part of an Account that budgets shared on Redis use.
// Its zero value is an account that never had any of it.
type remote struct {
	// unsynced is spend booked in process while budgets are shared on
	// Redis (Redis away, a failed settle): the next hold adds it there.
	unsynced atomic.Int64
	// carrying is unsynced spend that holds in flight have claimed and are
	// taking to Redis, and spend in doubt (doubt). unsynced + carrying is
	// spend the local mirror has and Redis may not.
	carrying atomic.Int64
	// unheld is set while Shared.CarryUnheld's background carry is at work
	// on the account: one at a time, whatever the bookings that ask for it.
	unheld atomic.Bool
	// owed is set while the account is in Shared's list of accounts that
	// owe Redis spend nothing carries at once (owe, owed.go).
	owed atomic.Bool
	// landing is this replica's spend whose settle is queued on Redis and
	// whose reply is not booked yet (sharedHold.send, settling.wait): the
	// answer's key-spend header counts it (Settling.Spent).
	landing atomic.Int64
	// allotted is spend booked against this replica's allotment of the
	// account (allot.go) that no flush has yet taken to Redis: like
	// unsynced, the local view has it and Redis does not yet.
	allotted atomic.Int64
	// allot is this replica's allotment of the account (Allotted), nil
	// when budget allotments are off or the account was never budgeted.
	allot atomic.Pointer[allotment]
	// movers counts changes in progress that move one amount between
	// spent, unsynced and carrying (or into two of them), and moved counts
	// those ended: seed reads the three when no move is half done (a move
	// adds to one before it takes from the other, so its middle counts the
	// amount twice).
	movers atomic.Int32
	moved  atomic.Uint64
	// doubt is carried spend and settles whose script's answer was lost:
	// Redis may or may not have them; later holds send them again, tagged
	// so that Redis counts each once (carry.go).
	doubt doubtList
	// heard is what Redis last said about this account: what remained and
	// how many replicas were alive (see presence.go).
	heard heard
	// mirrored is the number (Shared.queue) of the last reply whose spend
	// the local view mirrors (mirrorAt, under mirrorMu).
	mirrorMu sync.Mutex
	mirrored uint64
	// viewSince is mirrored when the view was last set whole (SetSpent,
	// rollTo), under mirrorMu: a mirror numbered past it came after
	// (ranOff).
	viewSince uint64
}

// remote returns a's remote part, making it on first use. Every access to
// the part goes through it, so that all see the one made.
func (a *Account) remote() *remote {
	if r := a.rs.Load(); r != nil {
		return r
	}
	r := new(remote)
	if a.rs.CompareAndSwap(nil, r) {
		return r
	}
	return a.rs.Load()
}

// NewAccount returns an account with spend already booked.
func NewAccount(kind store.Kind, id string, spent, budget Amount) *Account {
	a := &Account{Kind: kind, ID: id}
	a.spent.Store(int64(spent))
	a.stored.Store(int64(spent))
	a.used.Store(int64(spent))
	a.budget.Store(int64(budget))
	a.soft.Store(int64(Unlimited))
	return a
}

// Spent is the settled spend.
func (a *Account) Spent() Amount { return Amount(a.spent.Load()) }

// Reserved is the sum of outstanding reservations.
func (a *Account) Reserved() Amount { return max(Amount(a.used.Load()-a.spent.Load()), 0) }

// Budget is the maximum spend, Unlimited when none.
func (a *Account) Budget() Amount { return Amount(a.budget.Load()) }

// SetBudget replaces the budget; reservations already made stand.
func (a *Account) SetBudget(b Amount) { a.budget.Store(int64(b)) }

// SetSoftBudget sets the soft budget whose crossing is reported once.
func (a *Account) SetSoftBudget(b Amount) {
	a.soft.Store(int64(b))
	a.softHit.Store(a.Spent() >= b)
}

// ResetAt is when the budget next resets; zero when it never does.
func (a *Account) ResetAt() time.Time {
	if n := a.resetAt.Load(); n != 0 {
		return time.Unix(0, n).UTC()
	}
	return time.Time{}
}

// SetResetAt sets the next reset time (zero for none).
func (a *Account) SetResetAt(t time.Time) {
	if t.IsZero() {
		a.resetAt.Store(0)
		return
	}
	a.resetAt.Store(t.UnixNano())
}

// beginMove and endMove bracket a change to two of spent, unsynced and
// carrying. Between them a move takes no lock (seed, which may hold the
// doubt lock, waits for it): a move that needs the doubt lock takes it
// before beginMove.
func (a *Account) beginMove() { a.remote().movers.Add(1) }
func (a *Account) endMove()   { a.remote().moved.Add(1); a.remote().movers.Add(-1) }

// seedAt is the spend Redis should have for this account and the budget
// period it belongs to: spent less what this replica booked that Redis
// may not have (unsynced, carrying, allotted), and the reset time, read
// together when no move is half done. Read in the middle of one (say a
// hold claiming unsynced spend: in carrying, not yet out of unsynced) it
// would exclude that spend twice, and a reseed would then count it short
// once the claiming hold carries it; read in the middle of a period's
// rollover (rollTo) it would pair the new period with last period's
// spend, and a hold would seed Redis's new period with it.
func (a *Account) seedAt() (seed, period int64) {
	for {
		gen := a.remote().moved.Load()
		if a.remote().movers.Load() == 0 {
			// Never below zero: a spend edit below what this replica
			// booked and has not taken to Redis yet would seed a negative
			// spend (that booking then lands on top of the seed).
			s := max(max(a.spent.Load(), a.stored.Load())-a.offRedis(), 0)
			p := a.resetAt.Load()
			if a.remote().movers.Load() == 0 && a.remote().moved.Load() == gen {
				return s, p
			}
		}
		runtime.Gosched()
	}
}

// offRedis is spend the local view has that Redis may not: unsynced,
// carrying and allotted.
func (a *Account) offRedis() int64 {
	r := a.rs.Load()
	if r == nil {
		return 0 // read only: not made for it
	}
	return r.unsynced.Load() + r.carrying.Load() + r.allotted.Load()
}

// SetSpent overwrites the settled spend (an operator edit or a budget reset).
// Spend not yet carried to Redis belongs to what it overwrites.
func (a *Account) SetSpent(s Amount) {
	a.remote().doubt.mu.Lock() // before the move (beginMove)
	a.remote().mirrorMu.Lock() // before the move too (mirrorLocked waits for none)
	a.remote().viewSince = a.remote().mirrored
	a.beginMove()
	old := a.setSpentLocked(s)
	a.endMove()
	a.remote().mirrorMu.Unlock()
	a.remote().doubt.mu.Unlock()
	a.setSpentAfter(s, old)
}

// setSpentLocked is SetSpent's move (doubt lock held, move begun); it
// returns the spend before. setSpentAfter ends it.
func (a *Account) setSpentLocked(s Amount) (old int64) {
	a.remote().unsynced.Store(0)
	a.dropDoubtLocked()
	// So does spend that landed on Redis unheard (presence.go): it is in
	// what is overwritten, not in the new period or the edited spend.
	a.remote().heard.counted.Store(a.remote().heard.landed.Load())
	a.stored.Store(int64(s))
	return a.spent.Swap(int64(s))
}

func (a *Account) setSpentAfter(s Amount, old int64) {
	a.used.Add(int64(s) - old)
	a.softHit.Store(s >= Amount(a.soft.Load()))
}

// rollTo starts a new period: the reset time from at to next and the
// spend to s in one move, so that seedAt reads both before or both after
// (never the new period with last period's spend). It reports false,
// changing nothing, when the reset time was not at (another rolled it).
//
// What this replica booked that Redis may not have yet (offRedis: spend
// unsynced, in doubt, claimed by a call in flight, booked against its
// allotment) is kept, and stays in the view on top of s: it is carried to
// the period Redis has when it lands, as a per-request settle's spend is.
// The view cannot tell whether it was booked before Redis's reset or
// after it (a replica whose view lags the rollover, a request settled
// past the period's end before the next request rolls it): dropped, the
// part booked after would be missing from Redis's new period, and a
// strict budget passable by it (before branch moneygaps unsynced spend
// and items in doubt were dropped here); kept, the part booked before
// counts in the new period too (over, never under). The seed of a new
// period is then s, never s less what is kept (negative after a reset of
// Redis that failed).
func (a *Account) rollTo(at, next int64, s Amount) bool {
	a.remote().doubt.mu.Lock() // before the move (beginMove)
	a.remote().mirrorMu.Lock() // before the move too (mirrorLocked waits for none)
	a.beginMove()
	if !a.resetAt.CompareAndSwap(at, next) {
		a.endMove()
		a.remote().mirrorMu.Unlock()
		a.remote().doubt.mu.Unlock()
		return false
	}
	a.remote().viewSince = a.remote().mirrored
	// Spend landed on Redis unheard belongs to the period that ended.
	a.remote().heard.counted.Store(a.remote().heard.landed.Load())
	a.stored.Store(int64(s))
	// The view set from offRedis when no other move is half done (as
	// mirrorLocked does; this move is the one counted in movers).
	var old, v int64
	for {
		gen := a.remote().moved.Load()
		if a.remote().movers.Load() == 1 {
			old = a.spent.Load()
			v = int64(s) + a.offRedis()
			if a.remote().movers.Load() == 1 && a.remote().moved.Load() == gen && a.spent.CompareAndSwap(old, v) {
				break
			}
		}
		runtime.Gosched()
	}
	a.endMove()
	a.remote().mirrorMu.Unlock()
	a.remote().doubt.mu.Unlock()
	a.setSpentAfter(Amount(v), old)
	return true
}

// tryHold holds amt, or with upTo as much of it as the budget has left:
// admitted while spend + holds is below the budget, the hold then being
// the smaller of amt and what remains. It returns what it held.
func (a *Account) tryHold(amt Amount, upTo bool) (Amount, bool) {
	return casHold(&a.used, func() Amount { return Amount(a.budget.Load()) }, amt, upTo)
}

// casHold takes amt (or, with upTo, up to amt) from what used leaves under
// ceiling, in one compare-and-swap; an Unlimited ceiling always admits amt.
func casHold(used *atomic.Int64, ceiling func() Amount, amt Amount, upTo bool) (Amount, bool) {
	for {
		c := ceiling()
		if c == Unlimited {
			used.Add(int64(amt))
			return amt, true
		}
		u := Amount(used.Load())
		take := amt
		switch {
		case upTo && u >= c:
			return 0, false
		case upTo:
			take = min(amt, c-u)
		case u+amt > c:
			return 0, false
		}
		if used.CompareAndSwap(int64(u), int64(u+take)) {
			return take, true
		}
	}
}

// holdAll holds one amount on every account through try: amount, or with
// upTo the least that every account has left. Accounts that gave more than
// the others give the difference back; when one refuses, all give back
// what they took. It returns the amount held, or the index of the account
// that refused.
func holdAll(accounts []*Account, amount Amount, upTo bool, try func(a *Account, amt Amount, upTo bool) (Amount, bool)) (Amount, int) {
	var buf [8]Amount
	taken := buf[:0]
	want := amount
	for i, a := range accounts {
		got, ok := try(a, want, upTo)
		if !ok {
			for j, t := range taken {
				accounts[j].used.Add(-int64(t))
			}
			return 0, i
		}
		taken = append(taken, got)
		want = min(want, got)
	}
	for j, t := range taken {
		if t > want {
			accounts[j].used.Add(-int64(t - want))
		}
	}
	return want, -1
}

// takeShort marks every budgeted account of a hold cut short, or none:
// it fails (giving back what it marked) when one already has a short hold
// outstanding, so that at most one request per budget can cost more than
// it holds.
func takeShort(accounts []*Account) (marked []*Account, busy int) {
	for i, a := range accounts {
		if a.Budget() == Unlimited {
			continue
		}
		if !a.short.CompareAndSwap(false, true) {
			for _, m := range marked {
				m.short.Store(false)
			}
			return nil, i
		}
		marked = append(marked, a)
	}
	return marked, -1
}

// shortBusy explains a refusal by takeShort.
func shortBusy(a *Account, need Amount) *ExceededError {
	return &ExceededError{Kind: a.Kind, ID: a.ID, Spent: a.Spent(), Reserved: a.Reserved(), Budget: a.Budget(),
		Need: need, ResetAt: a.ResetAt(), Detail: "the last of this budget is held by a request in flight; retry when it ends"}
}

// ExceededError says which budget refused a request, with the numbers.
type ExceededError struct {
	Kind     store.Kind
	ID       string
	Spent    Amount
	Reserved Amount
	Budget   Amount
	Need     Amount
	ResetAt  time.Time
	// Detail, when set, explains a refusal that is not the budget's own
	// (a replica cut off from Redis spending only its share).
	Detail string
}

func (e *ExceededError) Error() string {
	// LiteLLM's words first, for the scripts that match them (its
	// auth_checks.py messages, numbers as Python prints them), then
	// Tollgate's own account of the refusal.
	num := func(a Amount) string {
		s := strconv.FormatFloat(a.Dollars(), 'g', -1, 64)
		if !strings.ContainsAny(s, ".eIN") {
			s += ".0"
		}
		return s
	}
	spent, budget := num(e.Spent), num(e.Budget)
	var litellm string
	switch e.Kind {
	case store.KindKey:
		litellm = "ExceededTokenBudget: Current spend for token: " + spent + "; Max Budget for Token: " + budget
	case store.KindUser:
		litellm = "ExceededBudget: User=" + e.ID + " over budget. Spend=" + spent + ", Budget=" + budget
	case store.KindEndUser:
		litellm = "ExceededBudget: End User=" + e.ID + " over budget. Spend=" + spent + ", Budget=" + budget
	case store.KindTeam:
		litellm = "Budget has been exceeded! Team=" + e.ID + " Current cost: " + spent + ", Max budget: " + budget
	case store.KindTeamMember: // ID is "<team>/<user>"
		team, user, _ := strings.Cut(e.ID, "/")
		litellm = "Budget has been exceeded! User=" + user + " in Team=" + team + " Current cost: " + spent + ", Max budget: " + budget
	default: // the gateway's litellm_settings.max_budget, a key's model budget
		litellm = "Budget has been exceeded! Current cost: " + spent + ", Max budget: " + budget
	}
	msg := litellm + "; " + fmt.Sprintf("Budget has been exceeded for %s %s: spend %s (+%s reserved by requests in flight), max budget %s; this request may cost up to %s",
		e.Kind, e.ID, fmtUSD(e.Spent), fmtUSD(e.Reserved), fmtUSD(e.Budget), fmtUSD(e.Need))
	if !e.ResetAt.IsZero() {
		msg += "; budget resets at " + e.ResetAt.Format(time.RFC3339)
	}
	if e.Detail != "" {
		msg += "; " + e.Detail
	}
	return msg
}

func fmtUSD(a Amount) string { return fmt.Sprintf("$%.9g", a.Dollars()) }
