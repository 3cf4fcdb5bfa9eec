package admin

import (
	"context"
	"errors"
	"net/http"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// The gateway's budget as a user. LiteLLM keeps litellm_settings.max_budget
// as the user litellm-proxy-budget: /user/info shows the gateway's spend and
// budget there, and /user/update changes the budget or resets the spend.
// Tollgate does the same. The gateway's spend is all spend recorded (the
// daily rollups) less what resets took off; that offset is what the user's
// stored spend column holds, since no request is ever charged to this user.
// The gateway's ledger account reads its budget from the user's record
// (gateway.Meter.accounts), so an edit applies to the next request.

// EnsureProxyBudgetUser writes litellm_settings.max_budget as the budget
// of the user litellm-proxy-budget (creating the user when budget is set
// and she does not exist; the configuration wins at every start, as in
// LiteLLM) and puts her in snap. It returns the offset to take off the
// recorded total to get the gateway's spend.
func EnsureProxyBudgetUser(ctx context.Context, st store.Store, snap *auth.Snapshot, budget *float64) (float64, error) {
	u, err := st.GetUser(ctx, auth.ProxyBudgetUser)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if budget == nil {
			return 0, nil
		}
		b := *budget
		u = &store.User{UserID: auth.ProxyBudgetUser, UserRole: auth.RoleInternalUserViewer, Limits: store.Limits{MaxBudget: &b}}
		fillUserDefaults(u)
		if err := st.CreateUser(ctx, u); err != nil {
			return 0, err
		}
	case err != nil:
		return 0, err
	case budget != nil && (u.MaxBudget == nil || *u.MaxBudget != *budget):
		// Conditional on her being as read (another replica may edit her).
		was, upd, err := editUser(ctx, st, u.UserID, u, func(upd *store.User) (bool, error) {
			if upd.MaxBudget != nil && *upd.MaxBudget == *budget {
				return false, nil
			}
			b := *budget
			upd.MaxBudget = &b
			return true, nil
		})
		if err != nil {
			return 0, err
		}
		if u = upd; u == nil {
			u = was // set already, by the write that came in between
		}
	}
	snap.PutUser(u)
	return u.Spend, nil
}

// gatewaySpend is the gateway's spend as this replica's ledger holds it,
// or, before its first budgeted request, as the store has it; offset is
// the proxy budget user's stored offset.
func (a *API) gatewaySpend(ctx context.Context, offset float64) (float64, error) {
	if acct, ok := a.book.Lookup(store.KindGlobal, "global"); ok {
		return acct.Spent().Dollars(), nil
	}
	total, err := a.store.TotalSpend(ctx)
	if err != nil {
		return 0, err
	}
	return total - offset, nil
}

// setGatewaySpend is /user/update's spend on litellm-proxy-budget: the
// gateway's spend becomes spend here, on Redis, and after a restart.
func (a *API) setGatewaySpend(r *http.Request, u *store.User, spend float64) error {
	cur, err := a.gatewaySpend(r.Context(), u.Spend)
	if err != nil {
		return err
	}
	offset := u.Spend + cur - spend
	if err := a.store.SetSpend(r.Context(), store.KindUser, u.UserID, offset); err != nil {
		return err
	}
	u.Spend = offset
	acct := a.book.Account(store.KindGlobal, "global", ledger.Spec{Spent: spend, Budget: u.MaxBudget})
	acct.SetSpent(ledger.USD(spend))
	if a.shared != nil {
		if err := a.shared.SetSpent(r.Context(), store.KindGlobal, "global", ledger.USD(spend), acct.ResetAt()); err != nil {
			a.log.Warn("gateway spend edit not passed to redis; it applies when the account is next seeded", "err", err)
		}
	}
	return nil
}
