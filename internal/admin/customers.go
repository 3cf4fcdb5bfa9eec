package admin

import (
	"context"
	"errors"
	"net/http"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/store"
)

// End users ("customers") are named by the `user` field of inference
// requests; LiteLLM serves them under /customer/* and /end_user/*.
//
// Customer routes: proxy_admin writes; the admin roles read.
func (a *API) registerCustomers(mux Mux) {
	for _, prefix := range []string{"/customer", "/end_user"} {
		mux.Handle("POST "+prefix+"/new", a.route(writeAll, a.customerNew))
		mux.Handle("GET "+prefix+"/info", a.route(readAll, a.customerInfo))
		mux.Handle("POST "+prefix+"/update", a.route(writeAll, a.customerUpdate))
		mux.Handle("POST "+prefix+"/delete", a.route(writeAll, a.customerDelete))
		mux.Handle("POST "+prefix+"/block", a.route(writeAll, a.customerBlock(true)))
		mux.Handle("POST "+prefix+"/unblock", a.route(writeAll, a.customerBlock(false)))
		mux.Handle("GET "+prefix+"/list", a.route(readAll, a.customerList))
	}
}

type customerRequest struct {
	UserID  string   `json:"user_id"`
	Alias   *string  `json:"alias"`
	Blocked *bool    `json:"blocked"`
	Spend   *float64 `json:"spend"`
	// AllowedModelRegion keeps the end user's requests on deployments of
	// that region_name ("eu" or "us", as LiteLLM takes it).
	AllowedModelRegion *string `json:"allowed_model_region"`
	// Accepted for LiteLLM compatibility; not applied.
	DefaultModel *string `json:"default_model"`
	// BudgetID names a budget object (/budget/new) whose limits apply
	// where the end user's own are unset.
	BudgetID *string `json:"budget_id"`
	budgetFields
}

// checkRegion accepts LiteLLM's regions for allowed_model_region.
func (req *customerRequest) checkRegion() error {
	if r := req.AllowedModelRegion; r != nil && *r != "" && *r != "eu" && *r != "us" {
		return apierror.BadRequest("allowed_model_region", "allowed_model_region must be \"eu\" or \"us\", got %q", *r)
	}
	return nil
}

// checkBudget applies LiteLLM's rule (a budget_id or a max_budget, not
// both) and refuses a budget_id that names no budget.
func (req *customerRequest) checkBudget(a *API, r *http.Request) error {
	if deref(req.BudgetID) != "" && req.MaxBudget != nil {
		return apierror.BadRequest("budget_id", "set either max_budget or budget_id, not both")
	}
	return a.checkBudgetRef(r.Context(), deref(req.BudgetID), "budget_id")
}

func (a *API) customerNew(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req customerRequest
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if req.UserID == "" {
		return apierror.BadRequest("user_id", "user_id is required")
	}
	if err := req.budgetFields.validate(); err != nil {
		return err
	}
	if req.Spend != nil {
		if err := checkUSD("spend", *req.Spend); err != nil {
			return err
		}
	}
	if err := req.checkBudget(a, r); err != nil {
		return err
	}
	if err := req.checkRegion(); err != nil {
		return err
	}
	e := &store.EndUser{UserID: req.UserID, Alias: deref(req.Alias), Limits: store.Limits{MaxBudget: req.MaxBudget, MaxParallelRequests: req.MaxParallelRequests, TPMLimit: req.TPMLimit, RPMLimit: req.RPMLimit}, BudgetID: deref(req.BudgetID),
		Blocked: req.Blocked != nil && *req.Blocked, Metadata: req.Metadata, AllowedModelRegion: deref(req.AllowedModelRegion)}
	e.BudgetDuration, e.BudgetResetAt = nextReset(a, req.BudgetDuration)
	if e.Metadata == nil {
		e.Metadata = map[string]any{}
	}
	if err := a.store.CreateEndUser(r.Context(), e); err != nil {
		return storeError(err, "end user "+e.UserID, "user_id")
	}
	a.snap.PutEndUser(e)
	a.audit(r.Context(), p, "created", "end_user", e.UserID, nil, e)
	return writeJSON(w, a.customerResponse(r.Context(), e))
}

func (a *API) customerInfo(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id := firstOf(r.URL.Query().Get("end_user_id"), r.URL.Query().Get("user_id"))
	if id == "" {
		return apierror.BadRequest("end_user_id", "end_user_id is required")
	}
	e, err := a.store.GetEndUser(r.Context(), id)
	if err != nil {
		return storeError(err, "end user "+id, "end_user_id")
	}
	return writeJSON(w, a.customerResponse(r.Context(), e))
}

func (a *API) editCustomer(w http.ResponseWriter, r *http.Request, p *auth.Principal, id, action string, change func(*store.EndUser) error) (*store.EndUser, error) {
	e, err := a.store.GetEndUser(r.Context(), id)
	if err != nil {
		return nil, storeError(err, "end user "+id, "user_id")
	}
	before, upd := *e, *e
	if err := change(&upd); err != nil {
		return nil, err
	}
	if err := a.store.UpdateEndUser(r.Context(), &upd); err != nil {
		return nil, storeError(err, "end user "+id, "user_id")
	}
	a.snap.PutEndUser(&upd)
	a.audit(r.Context(), p, action, "end_user", id, before, upd)
	return &upd, nil
}

func (a *API) customerUpdate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req customerRequest
	obj, err := decode(r, &req)
	if err != nil {
		return err
	}
	if req.UserID == "" {
		return apierror.BadRequest("user_id", "user_id is required")
	}
	if err := req.budgetFields.validate(); err != nil {
		return err
	}
	if req.Spend != nil {
		if err := checkUSD("spend", *req.Spend); err != nil {
			return err
		}
	}
	if err := req.checkBudget(a, r); err != nil {
		return err
	}
	if err := req.checkRegion(); err != nil {
		return err
	}
	e, err := a.editCustomer(w, r, p, req.UserID, "updated", func(e *store.EndUser) error {
		if obj.Has("alias") {
			e.Alias = deref(req.Alias)
		}
		if obj.Has("budget_id") {
			e.BudgetID = deref(req.BudgetID)
		}
		if obj.Has("allowed_model_region") {
			e.AllowedModelRegion = deref(req.AllowedModelRegion)
		}
		if obj.Has("blocked") && req.Blocked != nil {
			e.Blocked = *req.Blocked
		}
		a.applyBudget(obj, &req.budgetFields, &e.Limits, nil, &e.Metadata)
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, a.customerResponse(r.Context(), e))
}

func (a *API) customerBlock(block bool) handler {
	return func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
		var req struct {
			UserIDs []string `json:"user_ids"`
		}
		if _, err := decode(r, &req); err != nil {
			return err
		}
		if len(req.UserIDs) == 0 {
			return apierror.BadRequest("user_ids", "user_ids is required")
		}
		for _, id := range req.UserIDs {
			if _, err := a.editCustomer(w, r, p, id, map[bool]string{true: "blocked", false: "unblocked"}[block], func(e *store.EndUser) error {
				e.Blocked = block
				return nil
			}); err != nil {
				return err
			}
		}
		return writeJSON(w, map[string]any{"blocked_users": req.UserIDs, "blocked": block})
	}
}

func (a *API) customerDelete(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		UserIDs []string `json:"user_ids"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if len(req.UserIDs) == 0 {
		return apierror.BadRequest("user_ids", "user_ids is required")
	}
	for _, id := range req.UserIDs {
		if _, err := a.store.GetEndUser(r.Context(), id); err != nil {
			return storeError(err, "end user "+id, "user_ids")
		}
	}
	for _, id := range req.UserIDs {
		if err := a.store.DeleteEndUser(r.Context(), id); err != nil && !errors.Is(err, store.ErrNotFound) {
			return apierror.Internal(err)
		}
		a.snap.DeleteEndUser(id)
		a.audit(r.Context(), p, "deleted", "end_user", id, nil, nil)
	}
	return writeJSON(w, map[string]any{"deleted_end_users": req.UserIDs})
}

func (a *API) customerList(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	list, _, err := a.store.ListEndUsers(r.Context(), page(r))
	if err != nil {
		return apierror.Internal(err)
	}
	if list == nil {
		list = []*store.EndUser{}
	}
	return writeJSON(w, list)
}

// customerResponse is an end user as LiteLLM shows one: with
// litellm_budget_table, the budget object it names or, when it names none
// (LiteLLM would have made one of its max_budget), its own limits in that
// shape with a null budget_id.
func (a *API) customerResponse(ctx context.Context, e *store.EndUser) map[string]any {
	m := a.withBudgetTable(ctx, e, e.BudgetID)
	if e.BudgetID == "" && (e.MaxBudget != nil || e.TPMLimit != nil || e.RPMLimit != nil || e.MaxParallelRequests != nil || e.BudgetDuration != nil) {
		m["litellm_budget_table"] = map[string]any{"budget_id": nil, "max_budget": e.MaxBudget, "soft_budget": nil,
			"max_parallel_requests": e.MaxParallelRequests, "tpm_limit": e.TPMLimit, "rpm_limit": e.RPMLimit,
			"model_max_budget": nil, "budget_duration": e.BudgetDuration, "budget_reset_at": e.BudgetResetAt}
	}
	return m
}
