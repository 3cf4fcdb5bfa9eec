package ledger

// Reservation holds a worst-case amount on a set of accounts until the
// request settles or is released. It is used by one request at a time.
type Reservation struct {
	accounts []*Account
	amount   Amount
	short    []*Account // accounts this hold, cut short, marked
	done     bool
}

// Reserve holds amount on every account, or on none: when one account
// refuses, those already reserved are released and the refusal is returned
// as an *ExceededError naming that account. This is strict enforcement:
// spend can never pass a budget.
func Reserve(accounts []*Account, amount Amount) (*Reservation, error) {
	return reserve(accounts, amount, false)
}

// ReserveUpTo admits a request while spend + holds is below every budget,
// holding the smaller of amount and what the tightest budget has left.
// This is default enforcement: only a request whose hold was cut short can
// cost more than it held, and once one has taken what remained no other is
// admitted until spend + holds drops below the budget again.
func ReserveUpTo(accounts []*Account, amount Amount) (*Reservation, error) {
	return reserve(accounts, amount, true)
}

func reserve(accounts []*Account, amount Amount, upTo bool) (*Reservation, error) {
	if amount < 0 {
		amount = 0
	}
	held, refused := holdAll(accounts, amount, upTo, (*Account).tryHold)
	if refused >= 0 {
		a := accounts[refused]
		return nil, &ExceededError{
			Kind: a.Kind, ID: a.ID, Spent: a.Spent(), Reserved: a.Reserved(),
			Budget: a.Budget(), Need: amount, ResetAt: a.ResetAt(),
		}
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
	return r, nil
}

// Amount is what is held.
func (r *Reservation) Amount() Amount { return r.amount }

// Held is what is held (the Hold interface).
func (r *Reservation) Held() Amount { return r.amount }

// Settle books actual spend on every account and releases the hold. It
// returns the accounts whose soft budget this spend crossed (each crossing
// is reported once). Settling twice, or after Release, does nothing.
func (r *Reservation) Settle(actual Amount) (softCrossed []*Account) {
	if r == nil || r.done {
		return nil
	}
	r.done = true
	r.endShort()
	for _, a := range r.accounts {
		a.used.Add(int64(actual) - int64(r.amount)) // one step: hold out, spend in
		spent := Amount(a.spent.Add(int64(actual)))
		if spent >= Amount(a.soft.Load()) && a.softHit.CompareAndSwap(false, true) {
			softCrossed = append(softCrossed, a)
		}
	}
	return softCrossed
}

// Release drops the hold without spending (a failed or refused request).
func (r *Reservation) Release() {
	if r == nil || r.done {
		return
	}
	r.done = true
	for _, a := range r.accounts {
		a.used.Add(-int64(r.amount))
	}
	r.endShort()
}

// endShort lets another hold be cut short on the accounts this one marked.
func (r *Reservation) endShort() {
	for _, a := range r.short {
		a.short.Store(false)
	}
}
