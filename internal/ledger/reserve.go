package ledger

// Reservation holds a worst-case amount on a set of accounts until the
// request settles or is released. It is used by one request at a time.
type Reservation struct {
	accounts []*Account
	amount   Amount
	done     bool
}

// Reserve holds amount on every account, or on none: when one account
// refuses, those already reserved are released and the refusal is returned
// as an *ExceededError naming that account.
func Reserve(accounts []*Account, amount Amount) (*Reservation, error) {
	if amount < 0 {
		amount = 0
	}
	for i, a := range accounts {
		if a.tryReserve(amount) {
			continue
		}
		for _, done := range accounts[:i] {
			done.used.Add(-int64(amount))
		}
		return nil, &ExceededError{
			Kind: a.Kind, ID: a.ID, Spent: a.Spent(), Reserved: a.Reserved(),
			Budget: a.Budget(), Need: amount, ResetAt: a.ResetAt(),
		}
	}
	return &Reservation{accounts: accounts, amount: amount}, nil
}

// Amount is what is held.
func (r *Reservation) Amount() Amount { return r.amount }

// Settle books actual spend on every account and releases the hold. It
// returns the accounts whose soft budget this spend crossed (each crossing
// is reported once). Settling twice, or after Release, does nothing.
func (r *Reservation) Settle(actual Amount) (softCrossed []*Account) {
	if r == nil || r.done {
		return nil
	}
	r.done = true
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
}
