package admin

import (
	"net/http"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

func (a *API) registerSpend(mux *http.ServeMux) {
	mux.Handle("GET /spend/logs", a.route(readOwn, a.spendLogs))
	mux.Handle("GET /global/spend", a.route(readAll, a.globalSpend))
}

// spendLogs lists spend-log rows, newest first. Filters: api_key (raw key or
// hash), user_id, team_id, end_user, request_id, start_date and end_date
// (YYYY-MM-DD or RFC 3339; end_date is inclusive of its day).
func (a *API) spendLogs(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	q := r.URL.Query()
	f := store.SpendFilter{UserID: q.Get("user_id"), TeamID: q.Get("team_id"), EndUser: q.Get("end_user"),
		RequestID: q.Get("request_id"), Page: page(r)}
	if k := q.Get("api_key"); k != "" {
		f.KeyHash = keyHashOf(k)
	}
	var err error
	if f.From, err = parseDate(q.Get("start_date"), false); err != nil {
		return apierror.BadRequest("start_date", "%v", err)
	}
	if f.To, err = parseDate(q.Get("end_date"), true); err != nil {
		return apierror.BadRequest("end_date", "%v", err)
	}
	if !seesAll(p) {
		// Non-admins see the spend of their own key, or of their user's keys.
		if p.Key != nil && p.Key.UserID != "" {
			f.UserID = p.Key.UserID
		} else {
			f.KeyHash = p.KeyHash
		}
	}
	logs, total, err := a.store.ListSpendLogs(r.Context(), f)
	if err != nil {
		return apierror.Internal(err)
	}
	if logs == nil {
		logs = []store.SpendLog{}
	}
	return writeJSON(w, map[string]any{"logs": logs, "total": total})
}

func parseDate(s string, endOfDay bool) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		if endOfDay {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	return time.Parse(time.RFC3339, s)
}

// globalSpend is the whole gateway's spend and budget as this replica's
// ledger holds it (booked at once; the store catches up within 100 ms).
func (a *API) globalSpend(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	spend := 0.0
	if acct, ok := a.book.Lookup(ledger.KindGlobal, "global"); ok {
		spend = acct.Spent().Dollars()
	} else {
		total, err := a.store.TotalSpend(r.Context())
		if err != nil {
			return apierror.Internal(err)
		}
		spend = total
	}
	return writeJSON(w, map[string]any{"spend": spend, "max_budget": a.cfg.LiteLLMSettings.MaxBudget})
}
