// Package ledger keeps what every budgeted entity has spent and has reserved,
// and enforces budgets by reservation: a request reserves its worst-case cost
// on every account that applies before it is forwarded, and settles to its
// real cost after. An account never admits a reservation that would take
// spend + reserved past its budget, so concurrency cannot overspend.
package ledger

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"
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

// Kind names what an account belongs to.
type Kind uint8

// The kinds of budgeted entities.
const (
	KindKey Kind = iota
	KindUser
	KindTeam
	KindEndUser
	KindGlobal
	KindKeyModel // a key's model_max_budget entry
)

var kindNames = [...]string{"key", "user", "team", "end_user", "global", "key_model"}

func (k Kind) String() string { return kindNames[k] }

// Account is one budget. Spend and reservations are atomics; the budget and
// reset time are replaced whole when an operator edits them.
type Account struct {
	Kind Kind
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
	// unsynced is spend booked in process while budgets are shared on
	// Redis (Redis away, a failed settle): the next hold adds it there.
	unsynced atomic.Int64
	// carrying is unsynced spend that holds in flight have claimed and are
	// taking to Redis. unsynced + carrying is spend the local mirror has
	// and Redis may not.
	carrying atomic.Int64
	// heard is what Redis last said about this account: what remained and
	// how many replicas were alive (see presence.go).
	heard heard
}

// NewAccount returns an account with spend already booked.
func NewAccount(kind Kind, id string, spent, budget Amount) *Account {
	a := &Account{Kind: kind, ID: id}
	a.spent.Store(int64(spent))
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

// SetSpent overwrites the settled spend (an operator edit or a budget reset).
// Spend not yet carried to Redis belongs to what it overwrites.
func (a *Account) SetSpent(s Amount) {
	a.unsynced.Store(0)
	old := a.spent.Swap(int64(s))
	a.used.Add(int64(s) - old)
	a.softHit.Store(s >= Amount(a.soft.Load()))
}

// tryReserve adds amt to the reservations unless that would exceed the
// budget. It is lock-free: a CAS loop on the used counter.
func (a *Account) tryReserve(amt Amount) bool {
	for {
		budget := Amount(a.budget.Load())
		if budget == Unlimited {
			a.used.Add(int64(amt))
			return true
		}
		used := a.used.Load()
		if Amount(used)+amt > budget {
			return false
		}
		if a.used.CompareAndSwap(used, used+int64(amt)) {
			return true
		}
	}
}

// ExceededError says which budget refused a request, with the numbers.
type ExceededError struct {
	Kind     Kind
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
	msg := fmt.Sprintf("Budget has been exceeded for %s %s: spend %s (+%s reserved by requests in flight), max budget %s; this request may cost up to %s",
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
