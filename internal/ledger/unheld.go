package ledger

// Spend books amount on every account without a hold: spend that no request
// reserved before it was made, such as a batch whose cost is known only once
// its results are read. Nothing is refused; a budget it passes refuses the
// next hold. On budgeted accounts it is also unsynced spend, which the next
// hold on a shared (Redis) budget carries there, as a settle made while
// Redis was away is. It returns the accounts whose soft budget it crossed.
func Spend(accounts []*Account, amount Amount) (softCrossed []*Account) {
	for _, a := range accounts {
		a.beginMove()
		if a.Budget() != Unlimited {
			a.remote().unsynced.Add(int64(amount)) // first, as localHold.Settle does
		}
		a.used.Add(int64(amount))
		spent := Amount(a.spent.Add(int64(amount)))
		a.endMove()
		softCrossed = appendSoft(softCrossed, a, spent)
	}
	return softCrossed
}
