package gateway

import (
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// chargedTo fills the spend row's owner - key, user, team, and the budgets
// without an entity row that the spend also counts against - for a
// request of p's on model.
func chargedTo(l *store.SpendLog, p *auth.Principal, model string) {
	if p.Key == nil {
		if p.KeyHash != "" && !p.Master {
			l.KeyHash = p.KeyHash
		}
		return
	}
	l.KeyHash, l.UserID, l.TeamID = p.Key.TokenHash, p.Key.UserID, p.Key.TeamID
	l.KeyCreatedAt = p.Key.CreatedAt // its spend is this key's, not a later one's under the hash
	// Budgets with no entity row keep their spend in budget_spend, so
	// that they survive a restart like the key's own.
	if _, ok := p.Key.ModelMaxBudget[model]; ok {
		l.Budgets = append(l.Budgets, store.BudgetRef{Kind: store.KindKeyModel, ID: p.Key.TokenHash + "/" + model})
	}
	if p.Hooked {
		l.Budgets = append(l.Budgets, store.BudgetRef{Kind: store.KindCustomAuthKey, ID: p.Key.TokenHash})
	}
	if p.Org != nil {
		l.Budgets = append(l.Budgets, store.BudgetRef{Kind: store.KindOrganization, ID: p.Org.OrganizationID})
	}
	if p.MemberBudget != nil {
		l.Budgets = append(l.Budgets, store.BudgetRef{Kind: store.KindTeamMember, ID: store.MemberBudgetID(p.Team.TeamID, p.Key.UserID)})
	}
}

// BookUnheld books spend that no hold reserved - a batch, whose cost is
// known only when its results are read - on every budget a request of p's
// on l.ModelGroup counts against, and queues l as its spend row, owned by
// p. Nothing is refused: the spend was made upstream already; budgets it
// passes refuse what comes next.
func (m *Books) BookUnheld(p *auth.Principal, l store.SpendLog) {
	accts := m.accounts(p, "", nil, l.ModelGroup)
	for _, a := range ledger.Spend(accts, ledger.USD(l.Cost)) {
		if m.OnSoftBudget != nil {
			m.OnSoftBudget(a)
		}
	}
	// Spend took it in process: on budgets shared on Redis it goes there
	// now, or the other replicas would not see it until this one next
	// holds for the account (which it may never do: spentOut and
	// MayAfford refuse before any hold).
	m.carryUnheld(accts)
	chargedTo(&l, p, l.ModelGroup)
	if l.EndedAt.IsZero() {
		l.EndedAt = time.Now()
	}
	if m.Writer != nil {
		m.Writer.Enqueue(l)
	}
}

// MayAfford refuses p, with the 400 budget_exceeded error chat gets, when
// a budget a request of p's on model counts against is spent already: the
// check before work whose cost is booked only later (a batch). Under
// strict enforcement, which promises that spend never passes a budget,
// such work is refused to any budgeted caller: no worst case is held for it.
func (m *Books) MayAfford(p *auth.Principal, model string) error {
	accts := m.accounts(p, "", nil, model)
	if m.Mode != nil && budgeted(accts) && m.Mode(accts) == ledger.EnforceStrict {
		e := apierror.BadRequest("", "budget_enforcement is strict and a budget applies to this request: a batch's cost is known only when it ends, so no worst case can be held for it and it could pass the budget; start batches with a key without a budget, or use the default budget mode")
		e.Code = "budget_enforcement_strict"
		return e
	}
	for _, a := range accts {
		if b := a.Budget(); b != ledger.Unlimited && a.Spent()+a.Reserved() >= b {
			m.carryUnheld(accts)
			return budgetRefusal(a)
		}
	}
	return nil
}

// carryUnheld takes to Redis now (in the background) the spend accts
// owe it, when budgets are shared there: spend booked without a hold, or
// while Redis was away. BookUnheld calls it, and so do the refusals made
// before any hold (spentOut, MayAfford): an account this replica's view
// refuses gets no hold from it that would carry its spend, and the other
// replicas would serve it past its budget meanwhile. (Once Redis answers
// again the ledger's sweep carries it too; this is at once.) An account
// that owes nothing costs a load or two.
func (m *Books) carryUnheld(accts []*ledger.Account) {
	if c, ok := m.Holder.(interface{ CarryUnheld([]*ledger.Account) }); ok {
		c.CarryUnheld(accts)
	}
}

// spentOut refuses p, with the 400 budget_exceeded error chat gets, when
// a budget a request of p's (for endUser) on model counts against is spent
// already (its spend at or past its max_budget). Holds in flight are not
// counted: this is LiteLLM's check when it authenticates a key, made
// before the response cache answers or embeds anything.
func (m *Books) spentOut(p *auth.Principal, endUser string, e *store.EndUser, model string) error {
	accts := m.accounts(p, endUser, e, model)
	for _, a := range accts {
		if b := a.Budget(); b != ledger.Unlimited && a.Spent() >= b {
			m.carryUnheld(accts)
			return budgetRefusal(a)
		}
	}
	return nil
}

func budgetRefusal(a *ledger.Account) error {
	ex := &ledger.ExceededError{Kind: a.Kind, ID: a.ID, Spent: a.Spent(), Reserved: a.Reserved(), Budget: a.Budget(), ResetAt: a.ResetAt()}
	e := apierror.BudgetExceeded("%v", ex)
	e.Cause = ex
	return e
}
