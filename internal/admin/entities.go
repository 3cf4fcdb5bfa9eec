package admin

import (
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// budgetFields are the budget and limit fields users, teams and end users share.
type budgetFields struct {
	MaxBudget           *float64       `json:"max_budget"`
	SoftBudget          *float64       `json:"soft_budget"`
	BudgetDuration      *string        `json:"budget_duration"`
	MaxParallelRequests *int64         `json:"max_parallel_requests"`
	TPMLimit            *int64         `json:"tpm_limit"`
	RPMLimit            *int64         `json:"rpm_limit"`
	Metadata            map[string]any `json:"metadata"`
}

func (b *budgetFields) validate() error {
	p := keyParams{MaxBudget: b.MaxBudget, SoftBudget: b.SoftBudget, BudgetDuration: b.BudgetDuration,
		MaxParallelRequests: b.MaxParallelRequests, TPMLimit: b.TPMLimit, RPMLimit: b.RPMLimit}
	return p.validate()
}

// nextReset is a budget_duration and its first calendar-aligned reset.
func nextReset(a *API, d *string) (*string, *time.Time) {
	if d == nil || *d == "" {
		return nil, nil
	}
	per, _ := ledger.ParsePeriod(*d)
	t := per.NextReset(a.now())
	return d, &t
}

// ---- users ----

type userRequest struct {
	keyParams
	UserEmail     *string  `json:"user_email"`
	UserRole      *string  `json:"user_role"`
	Teams         []string `json:"teams"`
	AutoCreateKey *bool    `json:"auto_create_key"`
	UserAlias     *string  `json:"user_alias"`
}

// User routes: proxy_admin writes every field; /user/info is open to a
// user's own keys and to both admin roles; /user/list to the admin roles.
func (a *API) registerUsers(mux Mux) {
	mux.Handle("POST /user/new", a.route(writeAll, a.userNew))
	mux.Handle("GET /user/info", a.route(readOwn, a.userInfo))
	mux.Handle("POST /user/update", a.route(writeAll, a.userUpdate))
	mux.Handle("POST /user/delete", a.route(writeAll, a.userDelete))
	mux.Handle("GET /user/list", a.route(readAll, a.userList))
}

func (a *API) userNew(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req userRequest
	obj, err := decode(r, &req)
	if err != nil {
		return err
	}
	if err := req.keyParams.validate(); err != nil {
		return err
	}
	if obj.Has("budget_id") {
		// keyParams carries it for keys; a user has no budget object.
		return apierror.BadRequest("budget_id", "budget_id is not supported on users (give it to their keys)")
	}
	role, ok := auth.CanonicalRole(deref(req.UserRole))
	if !ok {
		return apierror.BadRequest("user_role", "unknown user_role %q (proxy_admin, proxy_admin_viewer, internal_user, internal_user_viewer, or LiteLLM's admin, app_owner, app_user)", deref(req.UserRole))
	}
	u := &store.User{UserID: deref(req.UserID), UserEmail: deref(req.UserEmail), UserRole: role, Teams: req.Teams,
		Models: req.Models, Limits: store.Limits{MaxBudget: req.MaxBudget, MaxParallelRequests: req.MaxParallelRequests, TPMLimit: req.TPMLimit, RPMLimit: req.RPMLimit}, SoftBudget: req.SoftBudget,
		Metadata: req.Metadata}
	if u.UserID == "" {
		u.UserID = uuid.NewString()
	}
	if req.TeamID != nil && deref(req.TeamID) != "" {
		u.Teams = append(u.Teams, *req.TeamID)
	}
	for _, t := range a.teamsListing(u.UserID) { // teams made before her
		if !slices.Contains(u.Teams, t) {
			u.Teams = append(u.Teams, t)
		}
	}
	u.BudgetDuration, u.BudgetResetAt = nextReset(a, req.BudgetDuration)
	fillUserDefaults(u)
	if err := a.store.CreateUser(r.Context(), u); err != nil {
		return storeError(err, "user "+u.UserID, "user_id")
	}
	a.snap.PutUser(u)
	a.audit(r.Context(), p, "created", "user", u.UserID, nil, u)
	resp := map[string]any{"user_id": u.UserID, "user_email": u.UserEmail, "user_role": u.UserRole, "teams": u.Teams,
		"models": u.Models, "spend": 0.0, "max_budget": u.MaxBudget, "budget_duration": u.BudgetDuration,
		"budget_reset_at": u.BudgetResetAt, "tpm_limit": u.TPMLimit, "rpm_limit": u.RPMLimit,
		"max_parallel_requests": u.MaxParallelRequests, "metadata": u.Metadata, "key": nil, "key_name": nil, "expires": nil}
	if req.AutoCreateKey == nil || *req.AutoCreateKey {
		// The user's key: the budget is the user's, so the key carries none of its own.
		kp := req.keyParams
		kp.UserID = &u.UserID
		kp.MaxBudget, kp.SoftBudget, kp.BudgetDuration = nil, nil, nil
		kp.TPMLimit, kp.RPMLimit, kp.MaxParallelRequests = nil, nil, nil
		k, raw, err := a.createKey(r, p, &kp)
		if err != nil {
			return err
		}
		for f, v := range keyResponse(k, raw) {
			if _, taken := resp[f]; !taken || f == "key" || f == "key_name" || f == "expires" {
				resp[f] = v
			}
		}
	}
	return writeJSON(w, resp)
}

func fillUserDefaults(u *store.User) {
	if u.Models == nil {
		u.Models = []string{}
	}
	if u.Teams == nil {
		u.Teams = []string{}
	}
	if u.Metadata == nil {
		u.Metadata = map[string]any{}
	}
}

func (a *API) userInfo(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id := r.URL.Query().Get("user_id")
	if id == "" && p.Key != nil {
		id = p.Key.UserID
	}
	if id == "" {
		return apierror.BadRequest("user_id", "user_id is required")
	}
	if !seesAll(p) && (p.Key == nil || p.Key.UserID != id) {
		return apierror.Forbidden("%s may read only its own user", p.Role())
	}
	u, err := a.store.GetUser(r.Context(), id)
	if err != nil {
		return storeError(err, "user "+id, "user_id")
	}
	if id == auth.ProxyBudgetUser {
		if u.Spend, err = a.gatewaySpend(r.Context(), u.Spend); err != nil {
			return apierror.Internal(err)
		}
	}
	keys, _, err := a.store.ListKeys(r.Context(), store.KeyFilter{UserID: id, Page: store.Page{Size: 1000}})
	if err != nil {
		return apierror.Internal(err)
	}
	out := make([]any, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyResponse(k, ""))
	}
	teams, err := a.userTeams(r.Context(), u, keys)
	if err != nil {
		return err
	}
	return writeJSON(w, map[string]any{"user_id": id, "user_info": u, "keys": out, "teams": teams})
}

func (a *API) userUpdate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		UserID    string   `json:"user_id"`
		UserEmail *string  `json:"user_email"`
		UserRole  *string  `json:"user_role"`
		Models    []string `json:"models"`
		Spend     *float64 `json:"spend"`
		budgetFields
	}
	obj, err := decode(r, &req)
	if err != nil {
		return err
	}
	if req.UserID == "" {
		return apierror.BadRequest("user_id", "user_id is required")
	}
	if req.UserID == auth.ProxyBudgetUser && deref(req.BudgetDuration) != "" {
		// The gateway's budget has no period here; a sweep resetting this
		// user would reset the offset her spend column keeps instead.
		return apierror.BadRequest("budget_duration", "the gateway's budget (%s) has no budget_duration in Tollgate", auth.ProxyBudgetUser)
	}
	if err := req.budgetFields.validate(); err != nil {
		return err
	}
	if req.Spend != nil {
		if err := checkUSD("spend", *req.Spend); err != nil {
			return err
		}
	}
	u, err := a.store.GetUser(r.Context(), req.UserID)
	if errors.Is(err, store.ErrNotFound) {
		// As LiteLLM: an update of a user nobody created creates her.
		return a.userUpsert(w, r, p, obj, req.UserID, req.UserEmail, req.UserRole, req.Models, req.Spend, &req.budgetFields)
	}
	if err != nil {
		return storeError(err, "user "+req.UserID, "user_id")
	}
	role := ""
	if obj.Has("user_role") {
		var ok bool
		if role, ok = auth.CanonicalRole(deref(req.UserRole)); !ok {
			return apierror.BadRequest("user_role", "unknown user_role %q", deref(req.UserRole))
		}
	}
	// Conditional on her being as read: a team's change of her teams, or
	// another edit, in between is kept (she is read again and this edit
	// applied again).
	was, wrote, err := editUser(r.Context(), a.store, req.UserID, u, func(upd *store.User) (bool, error) {
		if obj.Has("user_role") {
			upd.UserRole = role
		}
		if obj.Has("user_email") {
			upd.UserEmail = deref(req.UserEmail)
		}
		if obj.Has("models") {
			upd.Models = req.Models
		}
		a.applyBudget(obj, &req.budgetFields, &upd.Limits, &upd.SoftBudget, &upd.Metadata)
		return true, nil
	})
	if err != nil {
		return userError(err, req.UserID, "user_id")
	}
	before, upd := *was, *wrote
	switch {
	case upd.UserID == auth.ProxyBudgetUser:
		// Her spend is the gateway's; what is stored is the offset.
		if obj.Has("spend") && req.Spend != nil {
			if err := a.setGatewaySpend(r, &upd, *req.Spend); err != nil {
				return apierror.Internal(err)
			}
		}
		a.snap.PutUser(&upd)
		a.audit(r.Context(), p, "updated", "user", upd.UserID, before, upd)
		shown := upd
		if shown.Spend, err = a.gatewaySpend(r.Context(), upd.Spend); err != nil {
			return apierror.Internal(err)
		}
		return writeJSON(w, shown)
	case obj.Has("spend") && req.Spend != nil:
		if err := a.setSpend(r, store.KindUser, upd.UserID, *req.Spend); err != nil {
			return err
		}
		upd.Spend = *req.Spend
	}
	a.snap.PutUser(&upd)
	a.audit(r.Context(), p, "updated", "user", upd.UserID, before, upd)
	return writeJSON(w, upd)
}

// userUpsert is /user/update of a user that does not exist: she is created
// with the fields sent (no key), and joins the teams that list her.
func (a *API) userUpsert(w http.ResponseWriter, r *http.Request, p *auth.Principal, obj *jsonbody.Object, id string,
	email, role *string, models []string, spend *float64, b *budgetFields) error {
	canon, ok := auth.CanonicalRole(deref(role))
	if !ok {
		return apierror.BadRequest("user_role", "unknown user_role %q", deref(role))
	}
	u := &store.User{UserID: id, UserEmail: deref(email), UserRole: canon, Models: models}
	a.applyBudget(obj, b, &u.Limits, &u.SoftBudget, &u.Metadata)
	u.Teams = a.teamsListing(id)
	fillUserDefaults(u)
	if spend != nil && id != auth.ProxyBudgetUser {
		u.Spend = *spend
	}
	if err := a.store.CreateUser(r.Context(), u); err != nil {
		return storeError(err, "user "+id, "user_id")
	}
	if spend != nil && id == auth.ProxyBudgetUser {
		if err := a.setGatewaySpend(r, u, *spend); err != nil {
			return apierror.Internal(err)
		}
	}
	a.snap.PutUser(u)
	a.audit(r.Context(), p, "created", "user", id, nil, u)
	shown := *u
	if id == auth.ProxyBudgetUser {
		var err error
		if shown.Spend, err = a.gatewaySpend(r.Context(), u.Spend); err != nil {
			return apierror.Internal(err)
		}
	}
	return writeJSON(w, shown)
}

// applyBudget copies the budget fields present in the request to an
// entity's limits l, its soft budget and its metadata (nil: it has none).
func (a *API) applyBudget(obj *jsonbody.Object, b *budgetFields, l *store.Limits, soft **float64, meta *map[string]any) {
	if obj.Has("max_budget") {
		l.MaxBudget = b.MaxBudget
	}
	if obj.Has("soft_budget") && soft != nil {
		*soft = b.SoftBudget
	}
	if obj.Has("budget_duration") {
		l.BudgetDuration, l.BudgetResetAt = nextReset(a, b.BudgetDuration)
	}
	if obj.Has("max_parallel_requests") {
		l.MaxParallelRequests = b.MaxParallelRequests
	}
	if obj.Has("tpm_limit") {
		l.TPMLimit = b.TPMLimit
	}
	if obj.Has("rpm_limit") {
		l.RPMLimit = b.RPMLimit
	}
	if obj.Has("metadata") && meta != nil {
		*meta = b.Metadata
	}
}

func (a *API) userDelete(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		UserIDs []string `json:"user_ids"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if len(req.UserIDs) == 0 {
		return apierror.BadRequest("user_ids", "user_ids is required")
	}
	created := make([]time.Time, len(req.UserIDs)) // her incarnation (Snapshot.DeleteUser)
	for i, id := range req.UserIDs {
		u, err := a.store.GetUser(r.Context(), id)
		if err != nil {
			return storeError(err, "user "+id, "user_ids")
		}
		created[i] = u.CreatedAt
	}
	a.flushQueued() // the keys the store deletes with her
	for i, id := range req.UserIDs {
		// The store deletes the user's keys with it (as LiteLLM does) and
		// takes her out of her teams, in one transaction; this replica
		// forgets them at once, others at their next resync.
		if err := a.store.DeleteUser(r.Context(), id); err != nil && !errors.Is(err, store.ErrNotFound) {
			return apierror.Internal(err)
		}
		a.dropKeys(r, p, func(k *store.Key) bool { return k.UserID == id })
		a.snap.DeleteUser(id, created[i])
		a.audit(r.Context(), p, "deleted", "user", id, nil, nil)
		a.leaveTeams(r, p, id)
	}
	return writeJSON(w, map[string]any{"deleted_users": req.UserIDs})
}

// dropKeys removes from the snapshot the keys match selects, which the store
// has deleted, and audits each.
func (a *API) dropKeys(r *http.Request, p *auth.Principal, match func(*store.Key) bool) {
	var gone []*store.Key
	a.snap.RangeKeys(func(k *store.Key) bool {
		if match(k) {
			gone = append(gone, k)
		}
		return true
	})
	for _, k := range gone {
		a.snap.DeleteKey(k.TokenHash)
	}
	// All at once: an owner of thousands of keys costs a few Redis
	// scripts, not a round trip (up to its timeout) per key.
	ForgetKeys(r.Context(), a.book, a.shared, a.log, gone)
	for _, k := range gone {
		a.audit(r.Context(), p, "deleted", "key", k.TokenHash, k, nil)
	}
}

// leaveTeams brings the snapshot's teams that listed a deleted user up to
// date. The store took her out of their members and member budgets in the
// transaction that deleted her (a user created later under the same id is
// no member by inheritance); done here, after it, a failure left the
// deletion half applied. A team the store cannot be read for now stays as
// it is in the snapshot until the next resync, which brings the change:
// the deletion stands and is answered as done.
func (a *API) leaveTeams(r *http.Request, p *auth.Principal, userID string) {
	var before []*store.Team
	a.snap.RangeTeams(func(t *store.Team) bool {
		if slices.ContainsFunc(t.Members, func(m store.TeamMember) bool { return m.UserID == userID }) ||
			slices.ContainsFunc(t.MemberBudgets, func(b store.MemberBudget) bool { return b.UserID == userID }) {
			before = append(before, t)
		}
		return true
	})
	for _, t := range before {
		upd, err := a.store.GetTeam(r.Context(), t.TeamID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			a.log.Warn("team not re-read after a member's deletion; the resync brings it", "team", t.TeamID, "user", userID, "err", err)
			continue
		}
		a.snap.PutTeam(upd)
		a.audit(r.Context(), p, "member_deleted", "team", t.TeamID, t, upd)
	}
}

func (a *API) userList(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	pg := page(r)
	users, total, err := a.store.ListUsers(r.Context(), pg)
	if err != nil {
		return apierror.Internal(err)
	}
	if users == nil {
		users = []*store.User{}
	}
	limit, _ := pg.PageBounds()
	return writeJSON(w, map[string]any{"users": users, "total": total, "page": max(pg.Number, 1), "page_size": limit, "total_pages": (total + limit - 1) / limit})
}
