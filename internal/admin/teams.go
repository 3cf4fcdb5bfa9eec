package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/store"
)

// Team routes: proxy_admin writes every field; an org_admin writes the
// teams of her organization, within teamFields (policy.go). /team/info is
// open to the admin roles, the team's members (policy.go: membership) and
// its organization's org_admins. /team/member_add, /team/member_update and
// /team/member_delete are open to the team's admin members too, for members
// of role "user" only (policy.go: routeRules). Membership is written both
// ways, as LiteLLM keeps it: a team's members_with_roles, and the `teams` of
// each member's user record.
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
	mux.Handle("POST /team/member_update", a.route(writeOwn, a.teamMemberUpdate))
}

type teamRequest struct {
	TeamID         string             `json:"team_id"`
	OrganizationID *string            `json:"organization_id"`
	TeamAlias      *string            `json:"team_alias"`
	Models         []string           `json:"models"`
	Members        []store.TeamMember `json:"members_with_roles"`
	Blocked        *bool              `json:"blocked"`
	Spend          *float64           `json:"spend"`
	ModelAliases   map[string]string  `json:"model_aliases"`
	// Guardrails is LiteLLM's top-level guardrails member: the guardrails
	// every call of the team's keys runs, kept in metadata.guardrails.
	Guardrails []string `json:"guardrails"`
	budgetFields
}

// withGuardrails is a copy of md with its guardrails set to names.
func withGuardrails(md map[string]any, names []string) map[string]any {
	out := make(map[string]any, len(md)+1)
	for n, v := range md {
		out[n] = v
	}
	l := make([]any, len(names))
	for i, n := range names {
		l[i] = n
	}
	out["guardrails"] = l
	return out
}

// validGuardrails refuses a guardrails member that names an empty string.
func validGuardrails(names []string) error {
	for _, n := range names {
		if strings.TrimSpace(n) == "" {
			return apierror.BadRequest("guardrails", "guardrails must be a list of guardrail names, with no empty name")
		}
	}
	return nil
}

// onlyGuardrails reports whether the body sets nothing but team_id and
// guardrails: what a team's admin member may send to /team/update.
func onlyGuardrails(obj *jsonbody.Object) bool {
	var fields map[string]json.RawMessage
	if json.Unmarshal(obj.Body(), &fields) != nil {
		return false
	}
	for f := range fields {
		if f != "team_id" && f != "guardrails" {
			return false
		}
	}
	return obj.Has("guardrails")
}

func validMembers(param string, ms []store.TeamMember) error {
	for _, m := range ms {
		if m.UserID == "" && m.UserEmail == "" {
			return apierror.BadRequest(param, "every member needs a user_id or a user_email")
		}
		if m.Role != "admin" && m.Role != "user" {
			return apierror.BadRequest(param, "member role must be admin or user, got %q", m.Role)
		}
	}
	return nil
}

func validAliases(m map[string]string) error {
	for from, to := range m {
		if from == "" || to == "" {
			return apierror.BadRequest("model_aliases", "model_aliases maps a model name to a model name; got %q: %q", from, to)
		}
	}
	return nil
}

// userByEmail finds the user with email in the snapshot.
func (a *API) userByEmail(email string) (*store.User, bool) {
	var found *store.User
	a.snap.RangeUsers(func(u *store.User) bool {
		if u.UserEmail == email {
			found = u
			return false
		}
		return true
	})
	return found, found != nil
}

// namedByEmail fills the user_id of members given by user_email whose user
// exists; it reports whether some are still unknown.
func (a *API) namedByEmail(ms []store.TeamMember) (unknown bool) {
	for i := range ms {
		if ms[i].UserID != "" || ms[i].UserEmail == "" {
			continue
		}
		if u, ok := a.userByEmail(ms[i].UserEmail); ok {
			ms[i].UserID = u.UserID
		} else {
			unknown = true
		}
	}
	return unknown
}

// emailsAgree refuses a member given by a user_id and a user_email that
// belongs to another user: creating her would give two users one email.
func (a *API) emailsAgree(param string, ms []store.TeamMember) error {
	for _, m := range ms {
		if m.UserID == "" || m.UserEmail == "" {
			continue
		}
		if u, ok := a.userByEmail(m.UserEmail); ok && u.UserID != m.UserID {
			return apierror.BadRequest(param, "user_email %s belongs to user %s, not to %s", m.UserEmail, u.UserID, m.UserID)
		}
	}
	return nil
}

// createByEmail creates, as LiteLLM does, a user for each member given by
// an email no user has (an internal_user without a key), and names the
// member by her new user_id.
func (a *API) createByEmail(r *http.Request, p *auth.Principal, ms []store.TeamMember) error {
	for i := range ms {
		if ms[i].UserID != "" {
			continue
		}
		u := &store.User{UserID: uuid.NewString(), UserEmail: ms[i].UserEmail, UserRole: auth.RoleInternalUser}
		fillUserDefaults(u)
		if err := a.store.CreateUser(r.Context(), u); err != nil {
			return storeError(err, "user "+u.UserID, "user_email")
		}
		a.snap.PutUser(u)
		a.audit(r.Context(), p, "created", "user", u.UserID, nil, u)
		ms[i].UserID = u.UserID
	}
	return nil
}

// createByID creates, as LiteLLM does, a user for each member named by a
// user_id no user has (an internal_user without a key).
func (a *API) createByID(r *http.Request, p *auth.Principal, ms []store.TeamMember) error {
	for _, m := range ms {
		if _, ok := a.snap.User(m.UserID); ok || m.UserID == "" {
			continue
		}
		u := &store.User{UserID: m.UserID, UserEmail: m.UserEmail, UserRole: auth.RoleInternalUser}
		fillUserDefaults(u)
		if err := a.store.CreateUser(r.Context(), u); errors.Is(err, store.ErrConflict) {
			continue // the store has her; the snapshot will
		} else if err != nil {
			return storeError(err, "user "+u.UserID, "member")
		}
		a.snap.PutUser(u)
		a.audit(r.Context(), p, "created", "user", u.UserID, nil, u)
	}
	return nil
}

// teamsListing are the teams whose members_with_roles list user.
func (a *API) teamsListing(user string) []string {
	var ids []string
	a.snap.RangeTeams(func(t *store.Team) bool {
		if slices.ContainsFunc(t.Members, func(m store.TeamMember) bool { return m.UserID == user }) {
			ids = append(ids, t.TeamID)
		}
		return true
	})
	slices.Sort(ids)
	return ids
}

// syncUserTeams writes a change of team's members into their user records:
// a user who joined gets the team in her `teams`, one who left loses it.
// A member without a user record gets it when she is created (/user/new).
// done says what the route has written of the team ("team t was
// updated"): a user record that could not be written (other edits of her
// won each attempt, editUser) ends the route in a 409 that says so, and
// which users' records were written before her.
func (a *API) syncUserTeams(r *http.Request, p *auth.Principal, team, done string, before, after []store.TeamMember) error {
	var synced []string
	in := func(ms []store.TeamMember, id string) bool {
		return slices.ContainsFunc(ms, func(m store.TeamMember) bool { return m.UserID == id })
	}
	edit := func(id string, join bool) error {
		// Conditional on her being as read (editUser): a /user/update, or
		// another team's change of her teams, in between is kept.
		u, upd, err := editUser(r.Context(), a.store, id, nil, func(upd *store.User) (bool, error) {
			if slices.Contains(upd.Teams, team) == join {
				return false, nil
			}
			if join {
				upd.Teams = append(slices.Clone(upd.Teams), team)
			} else {
				upd.Teams = slices.DeleteFunc(slices.Clone(upd.Teams), func(t string) bool { return t == team })
			}
			return true, nil
		})
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil // no user record, or deleted meanwhile: nothing to keep in step
		case errors.Is(err, errUserBusy):
			also := ""
			if len(synced) > 0 {
				also = fmt.Sprintf("; users %s were", strings.Join(synced, ", "))
			}
			return apierror.WithStatus(http.StatusConflict, "%s; user %s's teams were not (she changed on each of %d attempts: other edits of her at the same time)%s: send the change of members again", done, id, userEditAttempts, also)
		case err != nil:
			return userError(err, id, "user_id")
		case upd == nil:
			return nil
		}
		synced = append(synced, id)
		a.snap.PutUser(upd)
		a.audit(r.Context(), p, "updated", "user", id, u, *upd)
		return nil
	}
	for _, m := range after {
		if !in(before, m.UserID) {
			if err := edit(m.UserID, true); err != nil {
				return err
			}
		}
	}
	for _, m := range before {
		if !in(after, m.UserID) {
			if err := edit(m.UserID, false); err != nil {
				return err
			}
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
	if err := req.validate(); err != nil {
		return err
	}
	if err := a.checkMemberBudgets(r, p, nil, req.Members); err != nil {
		return err
	}
	// As LiteLLM: a user who creates a team is its admin.
	if p.Key != nil && p.Key.UserID != "" && !slices.ContainsFunc(req.Members, func(m store.TeamMember) bool { return m.UserID == p.Key.UserID }) {
		req.Members = append(req.Members, store.TeamMember{UserID: p.Key.UserID, Role: "admin"})
	}
	t := &store.Team{TeamID: req.TeamID, OrganizationID: deref(req.OrganizationID), TeamAlias: deref(req.TeamAlias), Models: req.Models, Members: req.Members,
		Limits:   store.Limits{MaxBudget: req.MaxBudget, MaxParallelRequests: req.MaxParallelRequests, TPMLimit: req.TPMLimit, RPMLimit: req.RPMLimit},
		Metadata: req.Metadata, Blocked: req.Blocked != nil && *req.Blocked, ModelAliases: req.ModelAliases}
	if obj.Has("guardrails") && req.Guardrails != nil {
		t.Metadata = withGuardrails(t.Metadata, req.Guardrails)
	}
	if !isAdmin(p) {
		// An org_admin may not take a guardrail off later: each must be a
		// configured one (policy.go: ownerKeepsGuards).
		if err := a.ownerKeepsGuards(p, "team", nil, t.Metadata); err != nil {
			return err
		}
	}
	if t.TeamID == "" {
		t.TeamID = uuid.NewString()
	} else if _, err := a.store.GetTeam(r.Context(), t.TeamID); err == nil {
		return apierror.BadRequest("team_id", "team %s already exists", t.TeamID)
	}
	t.BudgetDuration, t.BudgetResetAt = nextReset(a, req.BudgetDuration)
	fillTeamDefaults(t)
	if err := a.checkTeamInOrg(r.Context(), t); err != nil {
		return err
	}
	if err := a.emailsAgree("members_with_roles", t.Members); err != nil {
		return err
	}
	a.namedByEmail(t.Members)
	if err := a.createByEmail(r, p, t.Members); err != nil {
		return err
	}
	if err := a.store.CreateTeam(r.Context(), t); err != nil {
		return storeError(err, "team "+t.TeamID, "team_id")
	}
	a.snap.PutTeam(t)
	a.audit(r.Context(), p, "created", "team", t.TeamID, nil, t)
	if err := a.syncUserTeams(r, p, t.TeamID, "team "+t.TeamID+" was created", nil, t.Members); err != nil {
		return err
	}
	return writeJSON(w, a.teamJSON(t, nil))
}

// teamJSON is a team as LiteLLM's LiteLLM_TeamTable shows it: the record,
// its model_aliases as litellm_model_table, and (when memberships is not
// nil) its members' budgets as team_memberships.
func (a *API) teamJSON(t *store.Team, memberships []map[string]any) map[string]any {
	b, _ := json.Marshal(t)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	delete(out, "member_budgets")
	// LiteLLM keeps a team's guardrails in its metadata; they are shown
	// at the top level too, as /team/new and /team/update take them.
	out["guardrails"] = metaNames(t.Metadata["guardrails"])
	out["model_id"] = nil
	out["litellm_model_table"] = nil
	if len(t.ModelAliases) > 0 {
		out["model_id"] = t.TeamID
		out["litellm_model_table"] = map[string]any{"model_aliases": t.ModelAliases}
	}
	if memberships != nil {
		out["team_memberships"] = memberships
	}
	return out
}

// memberships are the budgets of t's members (of user only, when user is
// set) as LiteLLM_TeamMembership rows with their litellm_budget_table;
// spend is what this replica's ledger holds.
func (a *API) memberships(t *store.Team, user string) []map[string]any {
	out := []map[string]any{}
	for _, m := range t.Members {
		if (user != "" && m.UserID != user) || m.UserID == "" {
			continue
		}
		// The budget enforced on her: max_budget_in_team, the budget object
		// her membership names, or the lower of the two.
		b := a.snap.MemberBudget(t, m.UserID)
		if b == nil {
			continue
		}
		spend := 0.0
		if acct, ok := a.book.Lookup(store.KindTeamMember, store.MemberBudgetID(t.TeamID, m.UserID)); ok {
			spend = acct.Spent().Dollars()
		}
		out = append(out, map[string]any{"user_id": m.UserID, "team_id": t.TeamID, "budget_id": b.BudgetID, "spend": spend,
			"litellm_budget_table": map[string]any{"budget_id": b.BudgetID, "max_budget": b.MaxBudget, "soft_budget": b.SoftBudget,
				"max_parallel_requests": b.MaxParallelRequests, "tpm_limit": b.TPMLimit, "rpm_limit": b.RPMLimit,
				"model_max_budget": b.ModelMaxBudget, "budget_duration": b.BudgetDuration}})
	}
	return out
}

// userTeams are u's teams as /user/info shows them (LiteLLM's
// TeamListResponseObject): each team with u's memberships in it and those of
// keys (u's own) that are in it, ordered by alias.
func (a *API) userTeams(ctx context.Context, u *store.User, keys []*store.Key) ([]map[string]any, error) {
	ids := slices.Clone(u.Teams)
	for _, id := range a.teamsListing(u.UserID) {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	var teams []*store.Team
	for _, id := range ids {
		t, err := a.store.GetTeam(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, apierror.Internal(err)
		}
		teams = append(teams, t)
	}
	slices.SortStableFunc(teams, func(x, y *store.Team) int { return strings.Compare(x.TeamAlias, y.TeamAlias) })
	out := make([]map[string]any, 0, len(teams))
	for _, t := range teams {
		o := a.teamJSON(t, a.memberships(t, u.UserID))
		tk := []any{}
		for _, k := range keys {
			if k.TeamID == t.TeamID {
				tk = append(tk, keyResponse(k, ""))
			}
		}
		o["keys"] = tk
		out = append(out, o)
	}
	return out, nil
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
	return writeJSON(w, map[string]any{"team_id": id, "team_info": a.teamJSON(t, nil), "keys": out, "team_memberships": a.memberships(t, "")})
}

// editTeam loads a team, applies change, writes it everywhere and answers
// with the team.
func (a *API) editTeam(w http.ResponseWriter, r *http.Request, p *auth.Principal, id, action string, change func(*store.Team) error) error {
	t, err := a.changeTeam(r, p, id, action, change)
	if err != nil {
		return err
	}
	return writeJSON(w, a.teamJSON(t, nil))
}

// teamEditAttempts bounds how often changeTeam redoes a change on a team
// that other writes keep changing under it.
const teamEditAttempts = 5

// changeTeam loads a team, applies change, and writes it everywhere: the
// store, the snapshot, the audit log, and its members' user records. The
// store write is conditional on the team being as read (store.UpdateTeam):
// when another edit, or a /user/delete taking a member out, wrote it in
// between, the team is read again and change applied again to it, so that
// neither write is lost. change must be safe to run again on a fresh copy.
func (a *API) changeTeam(r *http.Request, p *auth.Principal, id, action string, change func(*store.Team) error) (*store.Team, error) {
	if id == "" {
		return nil, apierror.BadRequest("team_id", "team_id is required")
	}
	var before, upd store.Team
	for attempt := 1; ; attempt++ {
		t, err := a.store.GetTeam(r.Context(), id)
		if err != nil {
			return nil, storeError(err, "team "+id, "team_id")
		}
		before, upd = *t, *t
		upd.Members = slices.Clone(t.Members)
		upd.MemberBudgets = slices.Clone(t.MemberBudgets)
		if err := change(&upd); err != nil {
			return nil, err
		}
		// A member who left takes her budget in the team with her.
		upd.MemberBudgets = slices.DeleteFunc(upd.MemberBudgets, func(b store.MemberBudget) bool {
			return !slices.ContainsFunc(upd.Members, func(m store.TeamMember) bool { return m.UserID == b.UserID })
		})
		fillTeamDefaults(&upd)
		// The organization's bounds are checked on what changes: lowering an
		// organization's budget must not lock its teams' other edits.
		if upd.OrganizationID != t.OrganizationID || !slices.Equal(upd.Models, t.Models) || !samePtr(upd.MaxBudget, t.MaxBudget) ||
			!samePtr(upd.TPMLimit, t.TPMLimit) || !samePtr(upd.RPMLimit, t.RPMLimit) {
			if err := a.checkTeamInOrg(r.Context(), &upd); err != nil {
				return nil, err
			}
		}
		err = a.store.UpdateTeam(r.Context(), &upd)
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrChanged) {
			return nil, storeError(err, "team "+id, "team_id")
		}
		if attempt == teamEditAttempts {
			return nil, apierror.WithStatus(http.StatusConflict, "team %s changed on each of %d attempts to write this edit (other edits of it at the same time); the team was not changed: send it again", id, teamEditAttempts)
		}
	}
	a.snap.PutTeam(&upd)
	a.audit(r.Context(), p, action, "team", id, before, upd)
	if err := a.syncUserTeams(r, p, id, "team "+id+" was updated", before.Members, upd.Members); err != nil {
		return nil, err
	}
	return &upd, nil
}

func (a *API) teamUpdate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req teamRequest
	obj, err := decode(r, &req)
	if err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	if !isAdmin(p) {
		if err := refuseTeamFields(p, obj); err != nil {
			return err
		}
	}
	setSpend := obj.Has("spend") && req.Spend != nil
	t, err := a.changeTeam(r, p, req.TeamID, "updated", func(t *store.Team) error {
		if err := a.mayManageTeam(r, p, t); err != nil {
			// A team's admin member may add guardrails to her team, and
			// send nothing else (policy.go: teamRoutes).
			if !onlyGuardrails(obj) || a.membership(r.Context(), p, t) != "admin" {
				return err
			}
		}
		before := t.Metadata
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
		if obj.Has("model_aliases") {
			t.ModelAliases = req.ModelAliases
		}
		if obj.Has("team_alias") {
			t.TeamAlias = deref(req.TeamAlias)
		}
		if obj.Has("models") {
			t.Models = req.Models
		}
		if obj.Has("members_with_roles") {
			t.Members = req.Members
			if err := a.emailsAgree("members_with_roles", t.Members); err != nil {
				return err
			}
			a.namedByEmail(t.Members)
			if err := a.createByEmail(r, p, t.Members); err != nil {
				return err
			}
		}
		if obj.Has("blocked") && req.Blocked != nil {
			t.Blocked = *req.Blocked
		}
		a.applyBudget(obj, &req.budgetFields, &t.Limits, nil, &t.Metadata)
		if setSpend {
			// Written (SetSpend, the ledger) once the team's write landed:
			// an edit refused (a 409, a check below) leaves the spend as it was.
			t.Spend = *req.Spend
		}
		if obj.Has("guardrails") && req.Guardrails != nil {
			t.Metadata = withGuardrails(t.Metadata, req.Guardrails)
		}
		if !isAdmin(p) {
			return a.ownerKeepsGuards(p, "team", before, t.Metadata)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if setSpend {
		if err := a.setSpend(r, store.KindTeam, t.TeamID, *req.Spend); err != nil {
			return err
		}
	}
	return writeJSON(w, a.teamJSON(t, nil))
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
		TeamID          string          `json:"team_id"`
		Member          json.RawMessage `json:"member"`
		MaxBudgetInTeam *float64        `json:"max_budget_in_team"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	var members []store.TeamMember
	strict := func(b []byte, v any) error {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		return dec.Decode(v)
	}
	if len(req.Member) > 0 && req.Member[0] == '[' {
		if err := strict(req.Member, &members); err != nil {
			return apierror.BadRequest("member", "member must be {user_id or user_email, role} or a list of them")
		}
	} else {
		var m store.TeamMember
		if err := strict(req.Member, &m); err != nil {
			return apierror.BadRequest("member", "member must be {user_id or user_email, role} or a list of them")
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
	if err := validMembers("member", members); err != nil {
		return err
	}
	if req.MaxBudgetInTeam != nil {
		if err := checkUSD("max_budget_in_team", *req.MaxBudgetInTeam); err != nil {
			return err
		}
	}
	if err := a.emailsAgree("member", members); err != nil {
		return err
	}
	unknown := a.namedByEmail(members)
	t, err := a.changeTeam(r, p, req.TeamID, "member_added", func(t *store.Team) error {
		if err := a.mayEditMembers(r, p, t, members); err != nil {
			return err
		}
		if err := a.checkMemberBudgets(r, p, t, members); err != nil {
			return err
		}
		for _, m := range members {
			if m.UserID != "" && slices.ContainsFunc(t.Members, func(x store.TeamMember) bool { return x.UserID == m.UserID }) {
				return apierror.BadRequest("member", "user %s is already a member of team %s: change her role or budget with /team/member_update", m.UserID, t.TeamID)
			}
		}
		if unknown {
			if err := a.createByEmail(r, p, members); err != nil {
				return err
			}
		}
		if err := a.createByID(r, p, members); err != nil {
			return err
		}
		for _, m := range members {
			i := slices.IndexFunc(t.Members, func(x store.TeamMember) bool { return x.UserID == m.UserID })
			if i >= 0 {
				t.Members[i] = m
			} else {
				t.Members = append(t.Members, m)
			}
			if req.MaxBudgetInTeam != nil {
				setMemberBudget(t, m.UserID, *req.MaxBudgetInTeam)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// LiteLLM's TeamAddMemberResponse: the team, the users it updated and
	// the memberships with a budget it wrote.
	out := a.teamJSON(t, nil)
	users := []any{}
	tms := []map[string]any{}
	for _, m := range members {
		if u, ok := a.snap.User(m.UserID); ok {
			users = append(users, u)
		}
		if req.MaxBudgetInTeam != nil {
			tms = append(tms, a.memberships(t, m.UserID)...)
		}
	}
	out["updated_users"], out["updated_team_memberships"] = users, tms
	return writeJSON(w, out)
}

// setMemberBudget gives user a budget of max within t.
func setMemberBudget(t *store.Team, user string, max float64) {
	i := slices.IndexFunc(t.MemberBudgets, func(b store.MemberBudget) bool { return b.UserID == user })
	if i >= 0 {
		t.MemberBudgets[i].MaxBudget = max
		return
	}
	t.MemberBudgets = append(t.MemberBudgets, store.MemberBudget{UserID: user, BudgetID: uuid.NewString(), MaxBudget: max})
}

// memberIndex finds the member a request names by user_id or user_email.
func memberIndex(t *store.Team, userID, email string) int {
	return slices.IndexFunc(t.Members, func(m store.TeamMember) bool {
		return (userID != "" && m.UserID == userID) || (userID == "" && email != "" && m.UserEmail == email)
	})
}

func (a *API) teamMemberDelete(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		TeamID    string `json:"team_id"`
		UserID    string `json:"user_id"`
		UserEmail string `json:"user_email"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if req.UserID == "" && req.UserEmail == "" {
		return apierror.BadRequest("user_id", "user_id or user_email is required")
	}
	if req.UserID == "" {
		if u, ok := a.userByEmail(req.UserEmail); ok {
			req.UserID = u.UserID
		}
	}
	return a.editTeam(w, r, p, req.TeamID, "member_deleted", func(t *store.Team) error {
		i := memberIndex(t, req.UserID, req.UserEmail)
		if i < 0 {
			if !isAdmin(p) && a.membership(r.Context(), p, t) != "admin" && !a.isOrgAdmin(r.Context(), p, t.OrganizationID) {
				return apierror.Forbidden("%s is not an admin of team %s", p.Role(), t.TeamID)
			}
			who := req.UserID
			if who == "" {
				who = req.UserEmail
			}
			return apierror.BadRequest("user_id", "user %q is not a member of team %s", who, t.TeamID)
		}
		if err := a.mayEditMembers(r, p, t, []store.TeamMember{t.Members[i]}); err != nil {
			return err
		}
		t.Members = slices.Delete(t.Members, i, i+1)
		return nil
	})
}

// teamMemberUpdate changes a member's role or her max_budget_in_team, as
// LiteLLM's /team/member_update does.
func (a *API) teamMemberUpdate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		TeamID          string   `json:"team_id"`
		UserID          string   `json:"user_id"`
		UserEmail       string   `json:"user_email"`
		Role            *string  `json:"role"`
		MaxBudgetInTeam *float64 `json:"max_budget_in_team"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if req.UserID == "" && req.UserEmail == "" {
		return apierror.BadRequest("user_id", "user_id or user_email is required")
	}
	if req.Role != nil && *req.Role != "admin" && *req.Role != "user" {
		return apierror.BadRequest("role", "role must be admin or user, got %q", *req.Role)
	}
	if req.MaxBudgetInTeam != nil {
		if err := checkUSD("max_budget_in_team", *req.MaxBudgetInTeam); err != nil {
			return err
		}
	}
	var who store.TeamMember
	_, err := a.changeTeam(r, p, req.TeamID, "member_updated", func(t *store.Team) error {
		i := memberIndex(t, req.UserID, req.UserEmail)
		if i < 0 {
			if !isAdmin(p) && a.membership(r.Context(), p, t) != "admin" {
				return apierror.Forbidden("%s is not an admin of team %s", p.Role(), t.TeamID)
			}
			return apierror.BadRequest("user_id", "user %q is not a member of team %s", req.UserID+req.UserEmail, t.TeamID)
		}
		after := t.Members[i]
		if req.Role != nil {
			after.Role = *req.Role
		}
		if err := a.mayEditMembers(r, p, t, []store.TeamMember{after}); err != nil {
			return err
		}
		t.Members[i] = after
		if req.MaxBudgetInTeam != nil {
			setMemberBudget(t, after.UserID, *req.MaxBudgetInTeam)
		}
		who = after
		return nil
	})
	if err != nil {
		return err
	}
	var email any
	if who.UserEmail != "" {
		email = who.UserEmail
	}
	return writeJSON(w, map[string]any{"team_id": req.TeamID, "user_id": who.UserID, "user_email": email, "max_budget_in_team": req.MaxBudgetInTeam})
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
	var gone []*store.Team
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
		gone = append(gone, t)
	}
	for _, t := range gone { // its members' users no longer list it
		if err := a.syncUserTeams(r, p, t.TeamID, "team "+t.TeamID+" was not deleted", t.Members, nil); err != nil {
			return err
		}
	}
	a.flushQueued() // the keys the store deletes with the teams
	for i, id := range req.TeamIDs {
		// The store deletes the team's keys with it (as LiteLLM does);
		// this replica forgets them before the team, so a blocked team's
		// keys never outlive its block.
		if err := a.store.DeleteTeam(r.Context(), id); err != nil && !errors.Is(err, store.ErrNotFound) {
			return apierror.Internal(err)
		}
		a.dropKeys(r, p, func(k *store.Key) bool { return k.TeamID == id })
		a.snap.DeleteTeam(id, gone[i].CreatedAt)
		a.audit(r.Context(), p, "deleted", "team", id, nil, nil)
	}
	return writeJSON(w, map[string]any{"deleted_teams": req.TeamIDs})
}

func (a *API) teamList(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	teams, _, err := a.store.ListTeams(r.Context(), page(r))
	if err != nil {
		return apierror.Internal(err)
	}
	out := make([]map[string]any, 0, len(teams))
	for _, t := range teams {
		out = append(out, a.teamJSON(t, a.memberships(t, "")))
	}
	return writeJSON(w, out)
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

// validate checks a /team/new or /team/update body's values (not who may
// set them) and gives members without a role "user".
func (req *teamRequest) validate() error {
	if err := req.budgetFields.validate(); err != nil {
		return err
	}
	if err := checkTags(nil, req.Metadata); err != nil {
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
	if err := validMembers("members_with_roles", req.Members); err != nil {
		return err
	}
	if err := validAliases(req.ModelAliases); err != nil {
		return err
	}
	if err := validGuardrails(req.Guardrails); err != nil {
		return err
	}
	return nil
}
