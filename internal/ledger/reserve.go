package ledger

// Reservation holds a worst-case amount on a set of accounts until the
// request settles or is released. It is used by one request at a time.
type Reservation struct {
	accounts []*Account
	amount   Amount
	short    []*Account // accounts this hold, cut short, marked
	capped   bool       // ReserveFlex: the request's output must fit the hold
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
		return nil, exceeded(accounts[refused], amount)
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

// Flex is what a default-mode request may hold (ReserveFlex).
type Flex struct {
	// Worst is the most the request can cost: held when every budget has
	// room for it, so that the request cannot overspend.
	Worst Amount
	// Estimate is what it will likely cost: held, at most what remains,
	// by the one request per budget whose worst case did not fit and
	// whose output is left as asked.
	Estimate Amount
	// Capped is held, at most what remains, by a request whose worst case
	// did not fit while another such request is in flight: the caller must
	// cap its output to what the hold pays for (Hold.Capped).
	Capped Amount
}

// ReserveFlex is default enforcement with a bound that no answer length
// can break: a request holds its worst case while it fits every budget;
// past that, one request at a time per budget holds its estimate (at most
// what remains) and runs as asked - the one that may overshoot - and the
// others hold Capped (at most what remains) and must have their output
// capped to the hold. A request is refused only once spend + holds has
// reached a budget.
func ReserveFlex(accounts []*Account, f Flex) (*Reservation, error) {
	return reserveFlex(accounts, f, (*Account).tryHold, func(a *Account, need Amount) error { return exceeded(a, need) })
}

func reserveFlex(accounts []*Account, f Flex, try func(a *Account, amt Amount, upTo bool) (Amount, bool), refuse func(a *Account, need Amount) error) (*Reservation, error) {
	f.Worst, f.Estimate, f.Capped = max(f.Worst, 0), max(f.Estimate, 0), max(f.Capped, 0)
	if held, refused := holdAll(accounts, f.Worst, false, try); refused < 0 {
		return &Reservation{accounts: accounts, amount: held}, nil
	}
	short, busy := takeShort(accounts)
	amount, capped := min(f.Estimate, f.Worst), false
	if busy >= 0 {
		short, amount, capped = nil, min(f.Capped, f.Worst), true
	}
	held, refused := holdAll(accounts, amount, true, try)
	if refused >= 0 {
		for _, a := range short {
			a.short.Store(false)
		}
		return nil, refuse(accounts[refused], amount)
	}
	return &Reservation{accounts: accounts, amount: held, short: short, capped: capped}, nil
}

// exceeded is the refusal of a hold of need by a.
func exceeded(a *Account, need Amount) *ExceededError {
	return &ExceededError{Kind: a.Kind, ID: a.ID, Spent: a.Spent(), Reserved: a.Reserved(),
		Budget: a.Budget(), Need: need, ResetAt: a.ResetAt()}
}

// Capped reports that the request's output must be capped to what the
// hold pays for (ReserveFlex).
func (r *Reservation) Capped() bool { return r.capped }

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
