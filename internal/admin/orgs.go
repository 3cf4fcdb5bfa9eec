package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/google/uuid"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/store"
)

// Organizations (LiteLLM's /organization/*) own teams. A team created in
// an organization uses models within the organization's, and every key of
// its teams is charged to the organization's budget too (the budget object
// it names). Members have an organization role: org_admin manages the
// organization's teams and members; internal_user and internal_user_viewer
// belong to it. Who may call what: routeRules (policy.go).
func (a *API) registerOrgs(mux Mux) {
	mux.Handle("POST /organization/new", a.route(writeAll, a.orgNew))
	for _, m := range []string{"PATCH", "POST"} { // LiteLLM: PATCH
		mux.Handle(m+" /organization/update", a.route(writeAll, a.orgUpdate))
		mux.Handle(m+" /organization/member_update", a.route(writeOwn, a.orgMemberUpdate))
	}
	for _, m := range []string{"DELETE", "POST"} { // LiteLLM: DELETE
		mux.Handle(m+" /organization/delete", a.route(writeAll, a.orgDelete))
		mux.Handle(m+" /organization/member_delete", a.route(writeOwn, a.orgMemberDelete))
	}
	mux.Handle("GET /organization/info", a.route(readOwn, a.orgInfo))
	mux.Handle("POST /organization/info", a.route(readOwn, a.orgInfoMany)) // LiteLLM's older form
	mux.Handle("GET /organization/list", a.route(readOwn, a.orgList))
	mux.Handle("POST /organization/member_add", a.route(writeOwn, a.orgMemberAdd))
}

// Organization roles.
const (
	orgAdmin        = "org_admin"
	orgUser         = auth.RoleInternalUser
	orgViewer       = auth.RoleInternalUserViewer
	orgRolesAllowed = "org_admin, internal_user or internal_user_viewer"
)

// orgRole is the role p's user has in o, or "" when she is not a member.
func orgRole(p *auth.Principal, o *store.Organization) string {
	if p.Key == nil || p.Key.UserID == "" {
		return ""
	}
	if i := slices.IndexFunc(o.Members, func(m store.OrgMember) bool { return m.UserID == p.Key.UserID }); i >= 0 {
		return o.Members[i].UserRole
	}
	return ""
}

// isOrgAdmin reports whether p is an org_admin of organization id.
func (a *API) isOrgAdmin(ctx context.Context, p *auth.Principal, id string) bool {
	if id == "" || p.Key == nil {
		return false
	}
	o, err := a.store.GetOrganization(ctx, id)
	return err == nil && orgRole(p, o) == orgAdmin
}

type orgRequest struct {
	OrganizationID    *string        `json:"organization_id"`
	OrganizationAlias *string        `json:"organization_alias"`
	Models            []string       `json:"models"`
	BudgetID          *string        `json:"budget_id"`
	Metadata          map[string]any `json:"metadata"`
	Blocked           *bool          `json:"blocked"`
	budgetRequest
}

func (a *API) orgNew(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req orgRequest
	obj, err := decode(r, &req)
	if err != nil {
		return err
	}
	if deref(req.OrganizationAlias) == "" {
		return apierror.BadRequest("organization_alias", "organization_alias is required")
	}
	if err := req.budgetRequest.validate(); err != nil {
		return err
	}
	ctx := r.Context()
	o := &store.Organization{OrganizationID: deref(req.OrganizationID), OrganizationAlias: *req.OrganizationAlias,
		Models: req.Models, Metadata: req.Metadata, Blocked: req.Blocked != nil && *req.Blocked,
		Members: []store.OrgMember{}, CreatedBy: actorName(p), UpdatedBy: actorName(p)}
	if o.OrganizationID == "" {
		o.OrganizationID = uuid.NewString()
	} else if _, err := a.store.GetOrganization(ctx, o.OrganizationID); err == nil {
		return apierror.BadRequest("organization_id", "organization %s already exists", o.OrganizationID)
	}
	fillOrgDefaults(o)
	limits := slices.ContainsFunc(budgetMembers, obj.Has)
	if id := deref(req.BudgetID); id != "" {
		if limits {
			return apierror.BadRequest("budget_id", "give either budget_id or the budget's limits (max_budget, tpm_limit, ...), not both")
		}
		if err := a.checkBudgetRef(ctx, id, "budget_id"); err != nil {
			return err
		}
		o.BudgetID = id
	} else {
		// As LiteLLM does: every organization has a budget; one is made
		// of the limits given (none: no limits).
		req.budgetRequest.BudgetID = nil
		b, err := a.newBudget(ctx, p, obj, &req.budgetRequest)
		if err != nil {
			return err
		}
		o.BudgetID = b.BudgetID
	}
	if err := a.store.CreateOrganization(ctx, o); err != nil {
		return storeError(err, "organization "+o.OrganizationID, "organization_id")
	}
	a.snap.PutOrganization(o)
	a.audit(ctx, p, "created", "organization", o.OrganizationID, nil, o)
	return writeJSON(w, a.withBudgetTable(ctx, o, o.BudgetID))
}

func fillOrgDefaults(o *store.Organization) {
	if o.Models == nil {
		o.Models = []string{}
	}
	if o.Metadata == nil {
		o.Metadata = map[string]any{}
	}
	if o.Members == nil {
		o.Members = []store.OrgMember{}
	}
}

// orgTeams are the teams of organization id (from the snapshot: every team).
func (a *API) orgTeams(id string) []*store.Team {
	var out []*store.Team
	a.snap.RangeTeams(func(t *store.Team) bool {
		if t.OrganizationID == id {
			out = append(out, t)
		}
		return true
	})
	slices.SortFunc(out, func(x, y *store.Team) int { return x.CreatedAt.Compare(y.CreatedAt) })
	return out
}

// orgResponse is LiteLLM's LiteLLM_OrganizationTableWithMembers.
func (a *API) orgResponse(ctx context.Context, o *store.Organization) map[string]any {
	m := a.withBudgetTable(ctx, o, o.BudgetID)
	members := make([]map[string]any, 0, len(o.Members))
	for _, om := range o.Members {
		members = append(members, a.membershipResponse(ctx, o.OrganizationID, om))
	}
	m["members"] = members
	teams := a.orgTeams(o.OrganizationID)
	if teams == nil {
		teams = []*store.Team{}
	}
	m["teams"] = teams
	return m
}

// membershipResponse is LiteLLM's LiteLLM_OrganizationMembershipTable.
func (a *API) membershipResponse(ctx context.Context, orgID string, om store.OrgMember) map[string]any {
	m := a.withBudgetTable(ctx, om, om.BudgetID)
	m["organization_id"] = orgID
	m["spend"] = 0.0
	m["budget_id"] = nil
	if om.BudgetID != "" {
		m["budget_id"] = om.BudgetID
	}
	if u, ok := a.snap.User(om.UserID); ok && u.UserEmail != "" {
		m["user_email"] = u.UserEmail
	}
	return m
}

func (a *API) orgInfo(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id := r.URL.Query().Get("organization_id")
	if id == "" {
		return apierror.BadRequest("organization_id", "organization_id is required")
	}
	o, err := a.store.GetOrganization(r.Context(), id)
	if err != nil {
		return storeError(err, "organization "+id, "organization_id")
	}
	if !seesAll(p) && orgRole(p, o) != orgAdmin {
		return apierror.Forbidden("%s may read only organizations it is org_admin of", p.Role())
	}
	return writeJSON(w, a.orgResponse(r.Context(), o))
}

// orgInfoMany is LiteLLM's deprecated POST /organization/info
// {"organizations": [...]}: a list, each with its budget table.
func (a *API) orgInfoMany(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		Organizations []string `json:"organizations"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if len(req.Organizations) == 0 {
		return apierror.BadRequest("organizations", "organizations is required: the list of organization ids to read")
	}
	out := []map[string]any{}
	for _, id := range req.Organizations {
		o, err := a.store.GetOrganization(r.Context(), id)
		if err != nil {
			return storeError(err, "organization "+id, "organizations")
		}
		if !seesAll(p) && orgRole(p, o) != orgAdmin {
			return apierror.Forbidden("%s may read only organizations it is org_admin of", p.Role())
		}
		out = append(out, a.orgResponse(r.Context(), o))
	}
	return writeJSON(w, out)
}

func (a *API) orgList(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	list, _, err := a.store.ListOrganizations(r.Context(), page(r))
	if err != nil {
		return apierror.Internal(err)
	}
	out := []map[string]any{}
	for _, o := range list {
		if seesAll(p) || orgRole(p, o) != "" { // members see theirs, as in LiteLLM
			out = append(out, a.orgResponse(r.Context(), o))
		}
	}
	return writeJSON(w, out)
}

func (a *API) orgUpdate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		OrganizationID    string         `json:"organization_id"`
		OrganizationAlias *string        `json:"organization_alias"`
		BudgetID          *string        `json:"budget_id"`
		Spend             *float64       `json:"spend"`
		Metadata          map[string]any `json:"metadata"`
		Models            []string       `json:"models"`
		Blocked           *bool          `json:"blocked"`
		UpdatedBy         *string        `json:"updated_by"`
	}
	obj, err := decode(r, &req)
	if err != nil {
		return err
	}
	if req.Spend != nil {
		if err := checkUSD("spend", *req.Spend); err != nil {
			return err
		}
	}
	if obj.Has("organization_alias") && deref(req.OrganizationAlias) == "" {
		return apierror.BadRequest("organization_alias", "organization_alias may not be empty")
	}
	if obj.Has("budget_id") {
		if deref(req.BudgetID) == "" {
			return apierror.BadRequest("budget_id", "an organization always has a budget; name another one")
		}
		if err := a.checkBudgetRef(r.Context(), *req.BudgetID, "budget_id"); err != nil {
			return err
		}
	}
	return a.editOrg(w, r, p, req.OrganizationID, "updated", func(o *store.Organization) error {
		if obj.Has("organization_alias") {
			o.OrganizationAlias = *req.OrganizationAlias
		}
		if obj.Has("budget_id") {
			o.BudgetID = *req.BudgetID
		}
		if obj.Has("metadata") {
			o.Metadata = req.Metadata
		}
		if obj.Has("blocked") && req.Blocked != nil {
			o.Blocked = *req.Blocked
		}
		if obj.Has("models") {
			// Teams keep models within their organization's.
			for _, t := range a.orgTeams(o.OrganizationID) {
				if err := modelsWithin(req.Models, t.Models, "team "+t.TeamID); err != nil {
					return err
				}
			}
			o.Models = req.Models
		}
		o.UpdatedBy = actorName(p)
		if deref(req.UpdatedBy) != "" {
			o.UpdatedBy = *req.UpdatedBy
		}
		if obj.Has("spend") && req.Spend != nil {
			if err := a.setSpend(r, store.KindOrganization, o.OrganizationID, *req.Spend); err != nil {
				return err
			}
			o.Spend = *req.Spend
		}
		return nil
	})
}

// modelsWithin refuses models of whose (a team) outside org's models (an
// empty list allows every model).
func modelsWithin(org, models []string, whose string) error {
	if len(org) == 0 {
		return nil
	}
	if len(models) == 0 {
		return nil // the team's "every model" is bounded by the organization's at request time
	}
	for _, m := range models {
		if !containsModel(org, m) {
			return apierror.BadRequest("models", "%s uses model %q, which is not in the organization's models %v", whose, m, org)
		}
	}
	return nil
}

// editOrg loads an organization, applies change, and writes it everywhere.
func (a *API) editOrg(w http.ResponseWriter, r *http.Request, p *auth.Principal, id, action string, change func(*store.Organization) error) error {
	o, err := a.changeOrg(r, p, id, action, change)
	if err != nil {
		return err
	}
	return writeJSON(w, a.orgResponse(r.Context(), o))
}

func (a *API) changeOrg(r *http.Request, p *auth.Principal, id, action string, change func(*store.Organization) error) (*store.Organization, error) {
	if id == "" {
		return nil, apierror.BadRequest("organization_id", "organization_id is required")
	}
	o, err := a.store.GetOrganization(r.Context(), id)
	if err != nil {
		return nil, storeError(err, "organization "+id, "organization_id")
	}
	before, upd := *o, *o
	upd.Members = slices.Clone(o.Members)
	if err := change(&upd); err != nil {
		return nil, err
	}
	fillOrgDefaults(&upd)
	if err := a.store.UpdateOrganization(r.Context(), &upd); err != nil {
		return nil, storeError(err, "organization "+id, "organization_id")
	}
	a.snap.PutOrganization(&upd)
	a.audit(r.Context(), p, action, "organization", id, before, upd)
	return &upd, nil
}

// orgDelete deletes organizations and, as LiteLLM does, their teams (and
// with them the teams' keys).
func (a *API) orgDelete(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		OrganizationIDs []string `json:"organization_ids"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if len(req.OrganizationIDs) == 0 {
		return apierror.BadRequest("organization_ids", "organization_ids is required")
	}
	var deleted []map[string]any
	for _, id := range req.OrganizationIDs {
		o, err := a.store.GetOrganization(r.Context(), id)
		if err != nil {
			return storeError(err, "organization "+id, "organization_ids")
		}
		deleted = append(deleted, a.orgResponse(r.Context(), o))
	}
	a.flushQueued() // the keys the store deletes with their teams
	for _, id := range req.OrganizationIDs {
		for _, t := range a.orgTeams(id) {
			if err := a.store.DeleteTeam(r.Context(), t.TeamID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return apierror.Internal(err)
			}
			a.dropKeys(r, p, func(k *store.Key) bool { return k.TeamID == t.TeamID })
			a.snap.DeleteTeam(t.TeamID, t.CreatedAt)
			a.audit(r.Context(), p, "deleted", "team", t.TeamID, nil, nil)
		}
		if err := a.store.DeleteOrganization(r.Context(), id); err != nil && !errors.Is(err, store.ErrNotFound) {
			return apierror.Internal(err)
		}
		a.snap.DeleteOrganization(id)
		a.audit(r.Context(), p, "deleted", "organization", id, nil, nil)
	}
	return writeJSON(w, deleted)
}

// orgMember is LiteLLM's OrgMember.
type orgMember struct {
	Role      string  `json:"role"`
	UserID    *string `json:"user_id"`
	UserEmail *string `json:"user_email"`
}

func validOrgRole(role string) error {
	switch role {
	case orgAdmin, orgUser, orgViewer:
		return nil
	}
	return apierror.BadRequest("role", "organization role must be %s, got %q", orgRolesAllowed, role)
}

// mayEditOrgMember: a proxy_admin edits any membership; an org_admin of
// the organization adds, changes and removes its internal_user and
// internal_user_viewer members, never an org_admin (she may not make or
// unmake her peers). from is the member's current role ("" when new), to
// the role she would have ("" when removed).
func mayEditOrgMember(p *auth.Principal, o *store.Organization, from, to string) error {
	if isAdmin(p) {
		return nil
	}
	if orgRole(p, o) != orgAdmin {
		return apierror.Forbidden("%s is not an org_admin of organization %s", p.Role(), o.OrganizationID)
	}
	if from == orgAdmin || to == orgAdmin {
		return apierror.Forbidden("an org_admin manages internal_user and internal_user_viewer members only; ask a proxy_admin to make or unmake an org_admin")
	}
	return nil
}

// findUser is the user named by id or, without one, by email; nil when
// there is none.
func (a *API) findUser(ctx context.Context, id, email string) (*store.User, error) {
	if id != "" {
		u, err := a.store.GetUser(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		return u, err
	}
	var found []*store.User
	a.snap.RangeUsers(func(u *store.User) bool {
		if u.UserEmail == email {
			found = append(found, u)
		}
		return true
	})
	if len(found) > 1 {
		return nil, apierror.BadRequest("user_email", "%d users have the email %s; name the member by user_id", len(found), email)
	}
	if len(found) == 0 {
		return nil, nil
	}
	return found[0], nil
}

// memberBudget sets up the budget of a membership for
// max_budget_in_organization: its own budget, created or updated.
func (a *API) memberBudget(ctx context.Context, p *auth.Principal, current string, max float64) (string, error) {
	if err := checkUSD("max_budget_in_organization", max); err != nil {
		return "", err
	}
	if current != "" {
		if b, err := a.store.GetBudget(ctx, current); err == nil {
			upd := *b
			upd.MaxBudget, upd.UpdatedBy = &max, actorName(p)
			if err := a.store.UpdateBudget(ctx, &upd); err != nil {
				return "", apierror.Internal(err)
			}
			a.snap.PutBudget(&upd)
			a.audit(ctx, p, "updated", "budget", upd.BudgetID, b, upd)
			return current, nil
		}
	}
	b := &store.Budget{BudgetID: uuid.NewString(), Limits: store.Limits{MaxBudget: &max}, CreatedBy: actorName(p), UpdatedBy: actorName(p)}
	if err := a.store.CreateBudget(ctx, b); err != nil {
		return "", apierror.Internal(err)
	}
	a.snap.PutBudget(b)
	a.audit(ctx, p, "created", "budget", b.BudgetID, nil, b)
	return b.BudgetID, nil
}

func (a *API) orgMemberAdd(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		OrganizationID          string          `json:"organization_id"`
		Member                  json.RawMessage `json:"member"`
		MaxBudgetInOrganization *float64        `json:"max_budget_in_organization"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	var members []orgMember
	bad := apierror.BadRequest("member", "member must be {role, user_id or user_email} or a list of them")
	if len(req.Member) > 0 && req.Member[0] == '[' {
		if err := json.Unmarshal(req.Member, &members); err != nil {
			return bad
		}
	} else {
		var m orgMember
		if len(req.Member) == 0 || json.Unmarshal(req.Member, &m) != nil {
			return bad
		}
		members = []orgMember{m}
	}
	if len(members) == 0 {
		return apierror.BadRequest("member", "member is required")
	}
	for _, m := range members {
		if deref(m.UserID) == "" && deref(m.UserEmail) == "" {
			return apierror.BadRequest("member", "every member needs a user_id or a user_email")
		}
		if err := validOrgRole(m.Role); err != nil {
			return err
		}
	}
	if req.MaxBudgetInOrganization != nil {
		if err := checkUSD("max_budget_in_organization", *req.MaxBudgetInOrganization); err != nil {
			return err
		}
	}
	ctx := r.Context()
	o, err := a.store.GetOrganization(ctx, req.OrganizationID)
	if err != nil {
		if req.OrganizationID == "" {
			return apierror.BadRequest("organization_id", "organization_id is required")
		}
		return storeError(err, "organization "+req.OrganizationID, "organization_id")
	}
	// Every check before any write: users are found, not yet created.
	users := make([]*store.User, len(members))
	for i, m := range members {
		u, err := a.findUser(ctx, deref(m.UserID), deref(m.UserEmail))
		if err != nil {
			var ae *apierror.Error
			if errors.As(err, &ae) {
				return err
			}
			return apierror.Internal(err)
		}
		users[i] = u
		from := ""
		if u != nil {
			if j := slices.IndexFunc(o.Members, func(x store.OrgMember) bool { return x.UserID == u.UserID }); j >= 0 {
				from = o.Members[j].UserRole
			}
		}
		if err := mayEditOrgMember(p, o, from, m.Role); err != nil {
			return err
		}
	}
	for i, m := range members {
		if users[i] != nil {
			continue
		}
		// As LiteLLM does: a member who is not a user yet becomes one.
		u := &store.User{UserID: deref(m.UserID), UserEmail: deref(m.UserEmail), UserRole: auth.RoleInternalUser}
		if u.UserID == "" {
			u.UserID = uuid.NewString()
		}
		fillUserDefaults(u)
		if err := a.store.CreateUser(ctx, u); err != nil {
			return storeError(err, "user "+u.UserID, "member")
		}
		a.snap.PutUser(u)
		a.audit(ctx, p, "created", "user", u.UserID, nil, u)
		users[i] = u
	}
	now := a.now().UTC()
	var memberships []map[string]any
	upd, err := a.changeOrg(r, p, o.OrganizationID, "member_added", func(o *store.Organization) error {
		for i, m := range members {
			uid := users[i].UserID
			j := slices.IndexFunc(o.Members, func(x store.OrgMember) bool { return x.UserID == uid })
			if j < 0 {
				o.Members = append(o.Members, store.OrgMember{UserID: uid, CreatedAt: now})
				j = len(o.Members) - 1
			}
			o.Members[j].UserRole, o.Members[j].UpdatedAt = m.Role, now
			if req.MaxBudgetInOrganization != nil {
				id, err := a.memberBudget(ctx, p, o.Members[j].BudgetID, *req.MaxBudgetInOrganization)
				if err != nil {
					return err
				}
				o.Members[j].BudgetID = id
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, u := range users {
		j := slices.IndexFunc(upd.Members, func(x store.OrgMember) bool { return x.UserID == u.UserID })
		memberships = append(memberships, a.membershipResponse(ctx, upd.OrganizationID, upd.Members[j]))
	}
	return writeJSON(w, map[string]any{"organization_id": upd.OrganizationID, "updated_users": users,
		"updated_organization_memberships": memberships})
}

// memberIn resolves the member a request names (user_id, else user_email).
func (a *API) memberIn(ctx context.Context, o *store.Organization, userID, email string) (int, error) {
	if userID == "" && email == "" {
		return -1, apierror.BadRequest("user_id", "user_id or user_email is required")
	}
	if userID == "" {
		u, err := a.findUser(ctx, "", email)
		if err != nil {
			return -1, err
		}
		if u == nil {
			return -1, apierror.NotFound("user_email", "no user has the email %s", email)
		}
		userID = u.UserID
	}
	i := slices.IndexFunc(o.Members, func(x store.OrgMember) bool { return x.UserID == userID })
	if i < 0 {
		return -1, apierror.NotFound("user_id", "user %q is not a member of organization %s", userID, o.OrganizationID)
	}
	return i, nil
}

func (a *API) orgMemberUpdate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		OrganizationID          string   `json:"organization_id"`
		UserID                  *string  `json:"user_id"`
		UserEmail               *string  `json:"user_email"`
		Role                    *string  `json:"role"`
		MaxBudgetInOrganization *float64 `json:"max_budget_in_organization"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if req.Role != nil {
		if err := validOrgRole(*req.Role); err != nil {
			return err
		}
	}
	if req.MaxBudgetInOrganization != nil {
		if err := checkUSD("max_budget_in_organization", *req.MaxBudgetInOrganization); err != nil {
			return err
		}
	}
	ctx := r.Context()
	var member store.OrgMember
	upd, err := a.changeOrg(r, p, req.OrganizationID, "member_updated", func(o *store.Organization) error {
		i, err := a.memberIn(ctx, o, deref(req.UserID), deref(req.UserEmail))
		if err != nil {
			if !isAdmin(p) && orgRole(p, o) != orgAdmin {
				return apierror.Forbidden("%s is not an org_admin of organization %s", p.Role(), o.OrganizationID)
			}
			return err
		}
		to := o.Members[i].UserRole
		if req.Role != nil {
			to = *req.Role
		}
		if err := mayEditOrgMember(p, o, o.Members[i].UserRole, to); err != nil {
			return err
		}
		o.Members[i].UserRole, o.Members[i].UpdatedAt = to, a.now().UTC()
		if req.MaxBudgetInOrganization != nil {
			id, err := a.memberBudget(ctx, p, o.Members[i].BudgetID, *req.MaxBudgetInOrganization)
			if err != nil {
				return err
			}
			o.Members[i].BudgetID = id
		}
		member = o.Members[i]
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, a.membershipResponse(ctx, upd.OrganizationID, member))
}

func (a *API) orgMemberDelete(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		OrganizationID string  `json:"organization_id"`
		UserID         *string `json:"user_id"`
		UserEmail      *string `json:"user_email"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	var gone store.OrgMember
	upd, err := a.changeOrg(r, p, req.OrganizationID, "member_deleted", func(o *store.Organization) error {
		i, err := a.memberIn(ctx, o, deref(req.UserID), deref(req.UserEmail))
		if err != nil {
			if !isAdmin(p) && orgRole(p, o) != orgAdmin {
				return apierror.Forbidden("%s is not an org_admin of organization %s", p.Role(), o.OrganizationID)
			}
			return err
		}
		if err := mayEditOrgMember(p, o, o.Members[i].UserRole, ""); err != nil {
			return err
		}
		gone = o.Members[i]
		o.Members = slices.Delete(o.Members, i, i+1)
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, a.membershipResponse(ctx, upd.OrganizationID, gone))
}

// checkTeamInOrg applies an organization's bounds to a team in it: the
// organization exists, the team's models are within its models, and the
// team's max_budget, tpm_limit and rpm_limit are at most its budget's.
func (a *API) checkTeamInOrg(ctx context.Context, t *store.Team) error {
	if t.OrganizationID == "" {
		return nil
	}
	o, err := a.store.GetOrganization(ctx, t.OrganizationID)
	if err != nil {
		return storeError(err, "organization "+t.OrganizationID, "organization_id")
	}
	if err := modelsWithin(o.Models, t.Models, "team "+t.TeamID); err != nil {
		return err
	}
	b, err := a.store.GetBudget(ctx, o.BudgetID)
	if err != nil {
		return nil // an organization whose budget is gone bounds nothing more
	}
	if t.MaxBudget != nil && b.MaxBudget != nil && *t.MaxBudget > *b.MaxBudget {
		return apierror.BadRequest("max_budget", "team max_budget %v is above organization %s's max_budget %v", *t.MaxBudget, o.OrganizationID, *b.MaxBudget)
	}
	if t.TPMLimit != nil && b.TPMLimit != nil && *t.TPMLimit > *b.TPMLimit {
		return apierror.BadRequest("tpm_limit", "team tpm_limit %d is above organization %s's tpm_limit %d", *t.TPMLimit, o.OrganizationID, *b.TPMLimit)
	}
	if t.RPMLimit != nil && b.RPMLimit != nil && *t.RPMLimit > *b.RPMLimit {
		return apierror.BadRequest("rpm_limit", "team rpm_limit %d is above organization %s's rpm_limit %d", *t.RPMLimit, o.OrganizationID, *b.RPMLimit)
	}
	return nil
}
