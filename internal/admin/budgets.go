package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/store"
)

// Budgets as objects (LiteLLM's /budget/*): a named set of limits that end
// users, keys, team memberships and organizations refer to by budget_id.
// A key or end user is held to its budget's limits wherever its own record
// leaves them unset (auth.Snapshot derives them); an organization is held
// to its budget's max_budget across all its teams.
//
// Budget routes: proxy_admin writes; the admin roles read (routeRules).
func (a *API) registerBudgets(mux Mux) {
	mux.Handle("POST /budget/new", a.route(writeAll, a.budgetNew))
	mux.Handle("POST /budget/update", a.route(writeAll, a.budgetUpdate))
	mux.Handle("POST /budget/info", a.route(readAll, a.budgetInfo))
	mux.Handle("GET /budget/list", a.route(readAll, a.budgetList))
	mux.Handle("POST /budget/delete", a.route(writeAll, a.budgetDelete))
}

// budgetRequest is LiteLLM's BudgetNewRequest.
type budgetRequest struct {
	BudgetID            *string        `json:"budget_id"`
	MaxBudget           *float64       `json:"max_budget"`
	SoftBudget          *float64       `json:"soft_budget"`
	MaxParallelRequests *int64         `json:"max_parallel_requests"`
	TPMLimit            *int64         `json:"tpm_limit"`
	RPMLimit            *int64         `json:"rpm_limit"`
	BudgetDuration      *string        `json:"budget_duration"`
	ModelMaxBudget      map[string]any `json:"model_max_budget"`
	BudgetResetAt       *time.Time     `json:"budget_reset_at"`
}

// budgetMembers are the members of budgetRequest that are limits (all but
// budget_id): what /organization/new turns into a budget of its own.
var budgetMembers = []string{"max_budget", "soft_budget", "max_parallel_requests", "tpm_limit", "rpm_limit",
	"budget_duration", "model_max_budget", "budget_reset_at"}

// fields are the request's limits as any entity's request has them.
func (b *budgetRequest) fields() *budgetFields {
	return &budgetFields{MaxBudget: b.MaxBudget, SoftBudget: b.SoftBudget, BudgetDuration: b.BudgetDuration,
		MaxParallelRequests: b.MaxParallelRequests, TPMLimit: b.TPMLimit, RPMLimit: b.RPMLimit}
}

func (b *budgetRequest) validate() error {
	if err := b.fields().validate(); err != nil {
		return err
	}
	for m, v := range b.ModelMaxBudget {
		o, ok := v.(map[string]any)
		if !ok {
			return apierror.BadRequest("model_max_budget", "model_max_budget[%q] must be an object such as {\"max_budget\": 10}", m)
		}
		if mb, ok := o["max_budget"]; ok {
			f, ok := mb.(float64)
			if !ok {
				return apierror.BadRequest("model_max_budget", "model_max_budget[%q].max_budget must be a number", m)
			}
			if err := checkUSD("model_max_budget", f); err != nil {
				return err
			}
		}
	}
	return nil
}

// apply copies the members obj has onto b: the limits as on any entity
// (applyBudget), then what only a budget object has.
func (b *budgetRequest) apply(a *API, obj *jsonbody.Object, to *store.Budget) {
	a.applyBudget(obj, b.fields(), &to.Limits, &to.SoftBudget, nil)
	if obj.Has("model_max_budget") {
		to.ModelMaxBudget = b.ModelMaxBudget
	}
	if obj.Has("budget_reset_at") && b.BudgetResetAt != nil {
		at := b.BudgetResetAt.UTC()
		to.BudgetResetAt = &at
	}
}

// newBudget creates a budget from req (an id is made up when it has none).
func (a *API) newBudget(ctx context.Context, p *auth.Principal, obj *jsonbody.Object, req *budgetRequest) (*store.Budget, error) {
	b := &store.Budget{BudgetID: deref(req.BudgetID), CreatedBy: actorName(p), UpdatedBy: actorName(p)}
	if b.BudgetID == "" {
		b.BudgetID = uuid.NewString()
	}
	req.apply(a, obj, b)
	if err := a.store.CreateBudget(ctx, b); err != nil {
		return nil, storeError(err, "budget "+b.BudgetID, "budget_id")
	}
	a.snap.PutBudget(b)
	a.audit(ctx, p, "created", "budget", b.BudgetID, nil, b)
	return b, nil
}

// actorName is the user id LiteLLM records in created_by and updated_by.
func actorName(p *auth.Principal) string {
	if p.Key != nil && p.Key.UserID != "" {
		return p.Key.UserID
	}
	return "default_user_id"
}

func (a *API) budgetNew(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req budgetRequest
	obj, err := decode(r, &req)
	if err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	b, err := a.newBudget(r.Context(), p, obj, &req)
	if err != nil {
		return err
	}
	return writeJSON(w, b)
}

func (a *API) budgetUpdate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req budgetRequest
	obj, err := decode(r, &req)
	if err != nil {
		return err
	}
	if deref(req.BudgetID) == "" {
		return apierror.BadRequest("budget_id", "budget_id is required")
	}
	if err := req.validate(); err != nil {
		return err
	}
	b, err := a.store.GetBudget(r.Context(), *req.BudgetID)
	if err != nil {
		return storeError(err, "budget "+*req.BudgetID, "budget_id")
	}
	before, upd := *b, *b
	req.apply(a, obj, &upd)
	upd.UpdatedBy = actorName(p)
	if err := a.store.UpdateBudget(r.Context(), &upd); err != nil {
		return storeError(err, "budget "+upd.BudgetID, "budget_id")
	}
	a.snap.PutBudget(&upd)
	a.audit(r.Context(), p, "updated", "budget", upd.BudgetID, before, upd)
	return writeJSON(w, upd)
}

func (a *API) budgetInfo(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		Budgets []string `json:"budgets"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if len(req.Budgets) == 0 {
		return apierror.BadRequest("budgets", "budgets is required: the list of budget ids to read")
	}
	out := []*store.Budget{}
	for _, id := range req.Budgets {
		b, err := a.store.GetBudget(r.Context(), id)
		if err != nil {
			return storeError(err, "budget "+id, "budgets")
		}
		out = append(out, b)
	}
	return writeJSON(w, out)
}

func (a *API) budgetList(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	list, _, err := a.store.ListBudgets(r.Context(), page(r))
	if err != nil {
		return apierror.Internal(err)
	}
	if list == nil {
		list = []*store.Budget{}
	}
	return writeJSON(w, list)
}

// budgetDelete refuses a budget something still refers to (LiteLLM's
// database refuses it too, by foreign key): its limits would vanish from
// under them.
func (a *API) budgetDelete(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		ID string `json:"id"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if req.ID == "" {
		return apierror.BadRequest("id", "id is required: the budget id to delete")
	}
	b, err := a.store.GetBudget(r.Context(), req.ID)
	if err != nil {
		return storeError(err, "budget "+req.ID, "id")
	}
	if user := a.budgetUser(req.ID); user != "" {
		return apierror.BadRequest("id", "budget %s is in use by %s; point it at another budget first", req.ID, user)
	}
	if err := a.store.DeleteBudget(r.Context(), req.ID); err != nil {
		return storeError(err, "budget "+req.ID, "id")
	}
	a.snap.DeleteBudget(req.ID)
	a.audit(r.Context(), p, "deleted", "budget", req.ID, b, nil)
	return writeJSON(w, b)
}

// budgetUser names something that refers to budget id, or is "".
func (a *API) budgetUser(id string) string {
	found := ""
	a.snap.RangeKeys(func(k *store.Key) bool {
		if k.BudgetID == id {
			found = "key " + k.KeyName
		}
		return found == ""
	})
	if found != "" {
		return found
	}
	a.snap.RangeEndUsers(func(e *store.EndUser) bool {
		if e.BudgetID == id {
			found = "end user " + e.UserID
		}
		return found == ""
	})
	if found != "" {
		return found
	}
	a.snap.RangeOrganizations(func(o *store.Organization) bool {
		if o.BudgetID == id {
			found = "organization " + o.OrganizationID
		}
		for _, m := range o.Members {
			if m.BudgetID == id {
				found = "the membership of " + m.UserID + " in organization " + o.OrganizationID
			}
		}
		return found == ""
	})
	if found != "" {
		return found
	}
	a.snap.RangeTeams(func(t *store.Team) bool {
		if i := slices.IndexFunc(t.Members, func(m store.TeamMember) bool { return m.BudgetID == id }); i >= 0 {
			found = "the membership of " + t.Members[i].UserID + " in team " + t.TeamID
		}
		return found == ""
	})
	return found
}

// checkBudgetRef refuses a budget_id that names no budget (param names the
// request field).
func (a *API) checkBudgetRef(ctx context.Context, id, param string) error {
	if id == "" {
		return nil
	}
	b, err := a.store.GetBudget(ctx, id)
	if err != nil {
		return storeError(err, "budget "+id, param)
	}
	// A budget made on another replica may not have reached this one's
	// snapshot yet (its next resync): the record written here next names
	// it, and without it would be served with no budget until then
	// (TestBudgetRefFromAnotherReplica).
	if _, ok := a.snap.Budget(id); !ok {
		a.snap.PutBudget(b)
	}
	return nil
}

// withBudgetTable is v (a record) as a JSON object with LiteLLM's
// litellm_budget_table: the budget it names, or null.
func (a *API) withBudgetTable(ctx context.Context, v any, budgetID string) map[string]any {
	b, _ := json.Marshal(v)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	m["litellm_budget_table"] = nil
	if budgetID != "" {
		if bt, err := a.store.GetBudget(ctx, budgetID); err == nil {
			m["litellm_budget_table"] = bt
		}
	}
	return m
}

// withKeyBudget adds LiteLLM's litellm_budget_table to a key's response
// when the key names a budget.
func (a *API) withKeyBudget(m map[string]any, k *store.Key) map[string]any {
	if k.BudgetID != "" {
		m["litellm_budget_table"] = nil
		if b, ok := a.snap.Budget(k.BudgetID); ok {
			m["litellm_budget_table"] = b
		}
	}
	return m
}
