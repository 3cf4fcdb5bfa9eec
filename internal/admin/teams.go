package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/google/uuid"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/store"
)

// Team routes: proxy_admin writes every field; an org_admin writes the
// teams of her organization, within teamFields (policy.go). /team/info is
// open to the admin roles, the team's members (policy.go: membership) and
// its organization's org_admins. /team/member_add and /team/member_delete
// are open to the team's admin members too, for members of role "user"
// only.
func (a *API) registerTeams(mux Mux) {
	mux.Handle("POST /team/new", a.route(writeOwn, a.teamNew))
	mux.Handle("GET /team/info", a.route(readOwn, a.teamInfo))
	mux.Handle("POST /team/update", a.route(writeOwn, a.teamUpdate))
	mux.Handle("POST /team/delete", a.route(writeOwn, a.teamDelete))
	mux.Handle("GET /team/list", a.route(readAll, a.teamList))
	mux.Handle("POST /team/block", a.route(writeOwn, a.teamBlock(true)))
	mux.Handle("POST /team/unblock", a.route(writeOwn, a.teamBlock(false)))
	mux.Handle("POST /team/member_add", a.route(writeOwn, a.teamMemberAdd))
	mux.Handle("POST /team/member_delete", a.route(writeOwn, a.teamMemberDelete))
}

type teamRequest struct {
	TeamID         string             `json:"team_id"`
	OrganizationID *string            `json:"organization_id"`
	TeamAlias      *string            `json:"team_alias"`
	Models         []string           `json:"models"`
	Members        []store.TeamMember `json:"members_with_roles"`
	Blocked        *bool              `json:"blocked"`
	Spend          *float64           `json:"spend"`
	budgetFields
}

func validMembers(ms []store.TeamMember) error {
	for _, m := range ms {
		if m.UserID == "" {
			return apierror.BadRequest("members_with_roles", "every member needs a user_id")
		}
		if m.Role != "admin" && m.Role != "user" {
			return apierror.BadRequest("members_with_roles", "member role must be admin or user, got %q", m.Role)
		}
	}
	return nil
}

func (a *API) teamNew(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req teamRequest
	obj, err := decode(r, &req)
	if err != nil {
		return err
	}
	if !isAdmin(p) {
		if !a.isOrgAdmin(r.Context(), p, deref(req.OrganizationID)) {
			return apierror.Forbidden("%s may create a team only as an org_admin, in her organization (organization_id)", p.Role())
		}
		if err := refuseTeamFields(p, obj); err != nil {
			return err
		}
	}
	if err := req.budgetFields.validate(); err != nil {
		return err
	}
	if req.Spend != nil {
		if err := checkUSD("spend", *req.Spend); err != nil {
			return err
		}
	}
	for i := range req.Members {
		if req.Members[i].Role == "" {
			req.Members[i].Role = "user"
		}
	}
	if err := validMembers(req.Members); err != nil {
		return err
	}
	if err := a.checkMemberBudgets(r, p, nil, req.Members); err != nil {
		return err
	}
	t := &store.Team{TeamID: req.TeamID, OrganizationID: deref(req.OrganizationID), TeamAlias: deref(req.TeamAlias), Models: req.Models, Members: req.Members,
		MaxBudget: req.MaxBudget, MaxParallelRequests: req.MaxParallelRequests, TPMLimit: req.TPMLimit, RPMLimit: req.RPMLimit,
		Metadata: req.Metadata, Blocked: req.Blocked != nil && *req.Blocked}
	if t.TeamID == "" {
		t.TeamID = uuid.NewString()
	}
	t.BudgetDuration, t.BudgetResetAt = nextReset(a, req.BudgetDuration)
	fillTeamDefaults(t)
	if err := a.checkTeamInOrg(r.Context(), t); err != nil {
		return err
	}
	if err := a.store.CreateTeam(r.Context(), t); err != nil {
		return storeError(err, "team "+t.TeamID, "team_id")
	}
	a.snap.PutTeam(t)
	a.audit(r.Context(), p, "created", "team", t.TeamID, nil, t)
	return writeJSON(w, t)
}

func fillTeamDefaults(t *store.Team) {
	if t.Models == nil {
		t.Models = []string{}
	}
	if t.Members == nil {
		t.Members = []store.TeamMember{}
	}
	if t.Metadata == nil {
		t.Metadata = map[string]any{}
	}
}

func (a *API) teamInfo(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id := r.URL.Query().Get("team_id")
	if id == "" {
		return apierror.BadRequest("team_id", "team_id is required")
	}
	t, err := a.store.GetTeam(r.Context(), id)
	if err != nil {
		return storeError(err, "team "+id, "team_id")
	}
	if !seesAll(p) && a.membership(r.Context(), p, t) == "" && !a.isOrgAdmin(r.Context(), p, t.OrganizationID) {
		return apierror.Forbidden("%s may read only its own teams", p.Role())
	}
	keys, _, err := a.store.ListKeys(r.Context(), store.KeyFilter{TeamID: id, Page: store.Page{Size: 1000}})
	if err != nil {
		return apierror.Internal(err)
	}
	out := make([]any, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyResponse(k, ""))
	}
	return writeJSON(w, map[string]any{"team_id": id, "team_info": t, "keys": out})
}

// editTeam loads a team, applies change, and writes it everywhere.
func (a *API) editTeam(w http.ResponseWriter, r *http.Request, p *auth.Principal, id, action string, change func(*store.Team) error) error {
	if id == "" {
		return apierror.BadRequest("team_id", "team_id is required")
	}
	t, err := a.store.GetTeam(r.Context(), id)
	if err != nil {
		return storeError(err, "team "+id, "team_id")
	}
	before, upd := *t, *t
	upd.Members = slices.Clone(t.Members)
	if err := change(&upd); err != nil {
		return err
	}
	fillTeamDefaults(&upd)
	// The organization's bounds are checked on what changes: lowering an
	// organization's budget must not lock its teams' other edits.
	if upd.OrganizationID != t.OrganizationID || !slices.Equal(upd.Models, t.Models) || !samePtr(upd.MaxBudget, t.MaxBudget) ||
		!samePtr(upd.TPMLimit, t.TPMLimit) || !samePtr(upd.RPMLimit, t.RPMLimit) {
		if err := a.checkTeamInOrg(r.Context(), &upd); err != nil {
			return err
		}
	}
	if err := a.store.UpdateTeam(r.Context(), &upd); err != nil {
		return storeError(err, "team "+id, "team_id")
	}
	a.snap.PutTeam(&upd)
	a.audit(r.Context(), p, action, "team", id, before, upd)
	return writeJSON(w, upd)
}

func (a *API) teamUpdate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req teamRequest
	obj, err := decode(r, &req)
	if err != nil {
		return err
	}
	if err := req.budgetFields.validate(); err != nil {
		return err
	}
	if req.Spend != nil {
		if err := checkUSD("spend", *req.Spend); err != nil {
			return err
		}
	}
	if err := validMembers(req.Members); err != nil {
		return err
	}
	if !isAdmin(p) {
		if err := refuseTeamFields(p, obj); err != nil {
			return err
		}
	}
	return a.editTeam(w, r, p, req.TeamID, "updated", func(t *store.Team) error {
		if err := a.mayManageTeam(r, p, t); err != nil {
			return err
		}
		if obj.Has("organization_id") && deref(req.OrganizationID) != t.OrganizationID {
			if !isAdmin(p) && !a.isOrgAdmin(r.Context(), p, deref(req.OrganizationID)) {
				return apierror.Forbidden("%s may move a team only into an organization she is org_admin of", p.Role())
			}
			t.OrganizationID = deref(req.OrganizationID)
		}
		if obj.Has("members_with_roles") {
			if err := a.checkMemberBudgets(r, p, t, req.Members); err != nil {
				return err
			}
		}
		if obj.Has("team_alias") {
			t.TeamAlias = deref(req.TeamAlias)
		}
		if obj.Has("models") {
			t.Models = req.Models
		}
		if obj.Has("members_with_roles") {
			t.Members = req.Members
		}
		if obj.Has("blocked") && req.Blocked != nil {
			t.Blocked = *req.Blocked
		}
		a.applyBudget(obj, &req.budgetFields, &t.MaxBudget, nil, &t.BudgetDuration, &t.BudgetResetAt,
			&t.MaxParallelRequests, &t.TPMLimit, &t.RPMLimit, &t.Metadata)
		if obj.Has("spend") && req.Spend != nil {
			if err := a.setSpend(r, store.KindTeam, t.TeamID, *req.Spend); err != nil {
				return err
			}
			t.Spend = *req.Spend
		}
		return nil
	})
}

func (a *API) teamBlock(block bool) handler {
	return func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
		var req struct {
			TeamID string `json:"team_id"`
		}
		if _, err := decode(r, &req); err != nil {
			return err
		}
		return a.editTeam(w, r, p, req.TeamID, map[bool]string{true: "blocked", false: "unblocked"}[block], func(t *store.Team) error {
			if err := a.mayManageTeam(r, p, t); err != nil {
				return err
			}
			t.Blocked = block
			return nil
		})
	}
}

func (a *API) teamMemberAdd(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		TeamID string          `json:"team_id"`
		Member json.RawMessage `json:"member"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	var members []store.TeamMember
	if len(req.Member) > 0 && req.Member[0] == '[' {
		if err := json.Unmarshal(req.Member, &members); err != nil {
			return apierror.BadRequest("member", "member must be {user_id, role} or a list of them")
		}
	} else {
		var m store.TeamMember
		if err := json.Unmarshal(req.Member, &m); err != nil {
			return apierror.BadRequest("member", "member must be {user_id, role} or a list of them")
		}
		members = []store.TeamMember{m}
	}
	for i := range members {
		if members[i].Role == "" {
			members[i].Role = "user"
		}
	}
	if len(members) == 0 {
		return apierror.BadRequest("member", "member is required")
	}
	if err := validMembers(members); err != nil {
		return err
	}
	return a.editTeam(w, r, p, req.TeamID, "member_added", func(t *store.Team) error {
		if err := a.mayEditMembers(r, p, t, members); err != nil {
			return err
		}
		if err := a.checkMemberBudgets(r, p, t, members); err != nil {
			return err
		}
		for _, m := range members {
			i := slices.IndexFunc(t.Members, func(x store.TeamMember) bool { return x.UserID == m.UserID })
			if i >= 0 {
				t.Members[i] = m
			} else {
				t.Members = append(t.Members, m)
			}
		}
		return nil
	})
}

func (a *API) teamMemberDelete(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		TeamID string `json:"team_id"`
		UserID string `json:"user_id"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	return a.editTeam(w, r, p, req.TeamID, "member_deleted", func(t *store.Team) error {
		i := slices.IndexFunc(t.Members, func(x store.TeamMember) bool { return x.UserID == req.UserID })
		if i < 0 {
			if !isAdmin(p) && a.membership(r.Context(), p, t) != "admin" && !a.isOrgAdmin(r.Context(), p, t.OrganizationID) {
				return apierror.Forbidden("%s is not an admin of team %s", p.Role(), t.TeamID)
			}
			return apierror.NotFound("user_id", "user %q is not a member of team %s", req.UserID, t.TeamID)
		}
		if err := a.mayEditMembers(r, p, t, []store.TeamMember{t.Members[i]}); err != nil {
			return err
		}
		t.Members = slices.Delete(t.Members, i, i+1)
		return nil
	})
}

// mayEditMembers: a proxy_admin edits any membership; a team's admin member
// adds, removes and keeps members of role "user" of her team, never admins
// (she may not make or unmake her peers).
func (a *API) mayEditMembers(r *http.Request, p *auth.Principal, t *store.Team, members []store.TeamMember) error {
	if isAdmin(p) || a.isOrgAdmin(r.Context(), p, t.OrganizationID) {
		return nil
	}
	if a.membership(r.Context(), p, t) != "admin" {
		return apierror.Forbidden("%s is not an admin of team %s", p.Role(), t.TeamID)
	}
	for _, m := range members {
		cur := slices.IndexFunc(t.Members, func(x store.TeamMember) bool { return x.UserID == m.UserID })
		if m.Role != "user" || (cur >= 0 && t.Members[cur].Role != "user") {
			return apierror.Forbidden("a team admin manages members of role user only; ask a proxy_admin about %s", m.UserID)
		}
	}
	return nil
}

func (a *API) teamDelete(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		TeamIDs []string `json:"team_ids"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if len(req.TeamIDs) == 0 {
		return apierror.BadRequest("team_ids", "team_ids is required")
	}
	for _, id := range req.TeamIDs {
		t, err := a.store.GetTeam(r.Context(), id)
		if err != nil {
			if !isAdmin(p) {
				return apierror.Forbidden("%s may delete only teams of an organization she is org_admin of", p.Role())
			}
			return storeError(err, "team "+id, "team_ids")
		}
		if err := a.mayManageTeam(r, p, t); err != nil {
			return err
		}
	}
	for _, id := range req.TeamIDs {
		// The store deletes the team's keys with it (as LiteLLM does);
		// this replica forgets them before the team, so a blocked team's
		// keys never outlive its block.
		if err := a.store.DeleteTeam(r.Context(), id); err != nil && !errors.Is(err, store.ErrNotFound) {
			return apierror.Internal(err)
		}
		a.dropKeys(r, p, func(k *store.Key) bool { return k.TeamID == id })
		a.snap.DeleteTeam(id)
		a.audit(r.Context(), p, "deleted", "team", id, nil, nil)
	}
	return writeJSON(w, map[string]any{"deleted_teams": req.TeamIDs})
}

func (a *API) teamList(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	teams, _, err := a.store.ListTeams(r.Context(), page(r))
	if err != nil {
		return apierror.Internal(err)
	}
	if teams == nil {
		teams = []*store.Team{}
	}
	return writeJSON(w, teams)
}

// mayManageTeam: a proxy_admin manages every team, an org_admin the teams
// of her organization.
func (a *API) mayManageTeam(r *http.Request, p *auth.Principal, t *store.Team) error {
	if isAdmin(p) || a.isOrgAdmin(r.Context(), p, t.OrganizationID) {
		return nil
	}
	return apierror.Forbidden("%s may not manage team %s (needs proxy_admin, or org_admin of its organization)", p.Role(), t.TeamID)
}

// checkMemberBudgets refuses a membership budget_id that names no budget,
// and one set by a team admin (a budget is an admin's or org_admin's call).
// t is the team as it is (nil when new).
func (a *API) checkMemberBudgets(r *http.Request, p *auth.Principal, t *store.Team, members []store.TeamMember) error {
	for _, m := range members {
		cur := ""
		if t != nil {
			if i := slices.IndexFunc(t.Members, func(x store.TeamMember) bool { return x.UserID == m.UserID }); i >= 0 {
				cur = t.Members[i].BudgetID
			}
		}
		if m.BudgetID == cur {
			continue
		}
		if t != nil && !isAdmin(p) && !a.isOrgAdmin(r.Context(), p, t.OrganizationID) {
			return apierror.Forbidden("a team admin may not set a member's budget_id; ask a proxy_admin")
		}
		if err := a.checkBudgetRef(r.Context(), m.BudgetID, "budget_id"); err != nil {
			return err
		}
	}
	return nil
}

func samePtr[T comparable](a, b *T) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}
