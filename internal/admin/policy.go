package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/guardrail"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/store"
)

// Who may call what, and who may set which field.
//
// Roles (auth.Role*): proxy_admin (the master key, or a user with that role)
// may do everything. proxy_admin_viewer reads everything and writes nothing.
// internal_user (LiteLLM's app_owner too) manages her own keys within the
// rules below. internal_user_viewer (app_user) reads her own objects only.
// A key with no user counts as an internal_user that owns just itself.
//
// Routes: each route's access level is given where it is registered
// (readOwn, writeOwn, readAll, writeAll; see route). Users, teams and
// customers are written by proxy_admin only, every field, with three
// exceptions for a team's admin member (role "admin" in members_with_roles):
// /team/member_add, /team/member_update and /team/member_delete on her team,
// for members of role "user" only (teamRoutes). The key routes a non-admin
// may call are bound by keyFields.

// teamRoute is one row of the team and user table: who may call a route and
// which fields each may set. The columns are proxy_admin; an internal_user
// who is an admin member of the team named; and everyone else
// (proxy_admin_viewer, internal_user_viewer even as a team admin, an
// internal_user who is not the team's admin).
type teamRoute struct {
	route, admin, teamAdmin, others string
}

// teamRoutes is the rule for the team and user routes issue 22 reshaped.
// docs/security.md prints it; TestFieldTableIsDocumented keeps the two
// together, and TestRoutesByRole and TestTeamAdminManagesMembers call each
// route as each role.
var teamRoutes = []teamRoute{
	{"`/team/new`", "every field: `members_with_roles` (by `user_id` or `user_email`; an unknown email creates the user), `model_aliases`, budgets, limits; a proxy_admin user who calls it becomes the team's admin", "no", "no"},
	{"`/team/update`", "every field, `members_with_roles` and `model_aliases` included; `guardrails` added or removed", "`guardrails` alone (with `team_id`), only added to (configured names only), never a name removed", "no"},
	{"`/team/member_add`", "`member` (by `user_id` or `user_email`, any role), `max_budget_in_team`", "`member` of role `user` only, `max_budget_in_team` for them", "no"},
	{"`/team/member_update`", "`role`, `max_budget_in_team` of any member", "`max_budget_in_team` of a member of role `user`; `role` may only stay `user`", "no"},
	{"`/team/member_delete`", "any member (a non-member is a 400)", "a member of role `user`", "no"},
	{"`/user/update`", "every field; an unknown `user_id` creates the user; on `litellm-proxy-budget`, `max_budget` is the gateway's budget and `spend` resets the gateway's spend", "no", "no"},
	{"`/user/info`", "any user, `litellm-proxy-budget` included (the gateway's spend and budget)", "her own", "proxy_admin_viewer: any user; internal_user_viewer: her own"},
}

// TeamRouteTable renders teamRoutes as the markdown rows docs/security.md
// prints: | route | proxy_admin | the team's admin member | others |.
func TeamRouteTable() []string {
	rows := make([]string, 0, len(teamRoutes))
	for _, r := range teamRoutes {
		rows = append(rows, "| "+r.route+" | "+r.admin+" | "+r.teamAdmin+" | "+r.others+" |")
	}
	return rows
}

// setter says who, besides a proxy_admin, may set a key field.
type setter uint8

const (
	adminOnly    setter = iota // proxy_admin only
	owner                      // also the key's owner, freely
	ownerBounded               // also the owner, within the bound the rule's note gives
)

// keyField is one row of the field table: who may set the field on a key a
// non-admin creates for herself (/key/generate) and on a key of hers that
// exists (/key/update, and the fields /key/regenerate takes).
type keyField struct {
	name             string
	generate, update setter
	bound            string // what ownerBounded means for this field
}

// keyFields is the single source of truth for what a non-admin may set on
// a key. A field not listed here is proxy_admin's only. On an existing key
// an admin-only field may still be sent with its current value (clients
// send whole records back); any change to it is a 403. docs/security.md
// prints this table; TestFieldTableIsDocumented keeps the two together.
var keyFields = []keyField{
	{"key", owner, owner, "generate: a custom key, never another key's hash, a static key or the master key; update: names the key"},
	{"key_alias", owner, owner, ""},
	{"metadata", owner, ownerBounded, "update: all but budget_enforcement, which an admin's strict mode binds; guardrails only added, a guardrails.modify_guardrails: false lock never lifted, max_input_bytes and max_input_tokens only lowered"},
	{"tags", owner, owner, ""},
	{"guardrails", owner, ownerBounded, "stored as metadata.guardrails; generate: any; update: only added to (a configured guardrail's name), never a name removed"},
	{"models", ownerBounded, ownerBounded, "generate: within her user's and the team's models; update: a subset of the key's current models (of her user's and the team's when the key has none)"},
	{"user_id", ownerBounded, ownerBounded, "her own user id only"},
	{"team_id", ownerBounded, ownerBounded, "a team she is a member of (and never cleared)"},
	{"duration", owner, adminOnly, "bounded by upperbound_key_generate_params"},
	{"budget_duration", owner, adminOnly, "bounded by upperbound_key_generate_params"},
	{"max_budget", ownerBounded, adminOnly, "at most her user's max_budget and upperbound_key_generate_params"},
	{"soft_budget", ownerBounded, adminOnly, "at most her user's soft_budget (or max_budget)"},
	{"max_parallel_requests", ownerBounded, adminOnly, "at most her user's limit"},
	{"tpm_limit", ownerBounded, adminOnly, "at most her user's limit"},
	{"rpm_limit", ownerBounded, adminOnly, "at most her user's limit"},
	{"model_max_budget", owner, adminOnly, ""},
	{"model_rpm_limit", owner, adminOnly, ""},
	{"model_tpm_limit", owner, adminOnly, ""},
	{"budget_id", adminOnly, adminOnly, "a budget object's limits apply where the key sets none"},
	{"aliases", adminOnly, adminOnly, ""},
	{"config", adminOnly, adminOnly, ""},
	{"spend", adminOnly, adminOnly, ""},
	{"blocked", adminOnly, adminOnly, "owners use /key/block; /key/unblock only undoes their own block"},
	{"allowed_cache_controls", owner, adminOnly, "applied: a request setting a cache control not listed is a 403; an owner may not lift a limit on her key"},
	{"permissions", owner, owner, "accepted, not applied"},
	{"key_type", owner, owner, "accepted, not applied"},
	{"send_invite_email", owner, owner, "accepted, not applied"},
}

// storedAs is the store.Key field a request field sets, when its name differs.
var storedAs = map[string]string{"duration": "expires", "key": "token"}

// refuseAdminFields returns a 403 for the first field in obj that the table
// reserves for proxy_admin in this operation. For update, before and after
// are the key as stored and as the request would leave it: an admin-only
// field sent with its current value passes.
func refuseAdminFields(p *auth.Principal, obj *jsonbody.Object, generate bool, before, after *store.Key) error {
	if isAdmin(p) {
		return nil
	}
	var old, upd map[string]json.RawMessage
	if !generate {
		old, upd = asFields(before), asFields(after)
	}
	for _, f := range keyFields {
		s := f.update
		if generate {
			s = f.generate
		}
		if s != adminOnly || !obj.Has(f.name) {
			continue
		}
		if !generate {
			col := f.name
			if c, ok := storedAs[f.name]; ok {
				col = c
			}
			if bytes.Equal(old[col], upd[col]) {
				continue
			}
		}
		return apierror.Forbidden("%s may be set only by proxy_admin (you are %s)", f.name, p.Role())
	}
	return nil
}

func asFields(k *store.Key) map[string]json.RawMessage {
	b, _ := json.Marshal(k)
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	return m
}

// Team membership. A user is a member of a team when the team's
// members_with_roles lists her user_id, or her user's `teams` lists the team
// (both are written only by proxy admins). Only members_with_roles makes her
// a team admin. A key's own team_id does not make its holder a member: that
// would let whoever put a key in a team read the team.

// membership is the role ("admin" or "user") p's user has in team t, or ""
// when she is not a member.
func (a *API) membership(ctx context.Context, p *auth.Principal, t *store.Team) string {
	if p.Key == nil || p.Key.UserID == "" {
		return ""
	}
	uid := p.Key.UserID
	if i := slices.IndexFunc(t.Members, func(m store.TeamMember) bool { return m.UserID == uid }); i >= 0 {
		return t.Members[i].Role
	}
	u := p.User
	if u == nil {
		var err error
		if u, err = a.store.GetUser(ctx, uid); err != nil {
			return ""
		}
	}
	if slices.Contains(u.Teams, t.TeamID) {
		return "user"
	}
	return ""
}

// requireMember refuses a non-admin that is not a member of team id (an
// unknown team included: a key may not wait for a team to be created).
func (a *API) requireMember(ctx context.Context, p *auth.Principal, id string) error {
	if isAdmin(p) {
		return nil
	}
	t, err := a.store.GetTeam(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return apierror.Forbidden("%s may use only teams it is a member of; team %s does not exist", p.Role(), id)
	}
	if err != nil {
		return apierror.Internal(err)
	}
	if a.membership(ctx, p, t) == "" {
		return apierror.Forbidden("%s is not a member of team %s", p.Role(), id)
	}
	return nil
}

// callerUser is the caller's user record, or nil.
func (a *API) callerUser(ctx context.Context, p *auth.Principal) *store.User {
	if p.User != nil {
		return p.User
	}
	if p.Key == nil || p.Key.UserID == "" {
		return nil
	}
	u, err := a.store.GetUser(ctx, p.Key.UserID)
	if err != nil {
		return nil
	}
	return u
}

// checkOwnNewKey applies the bounded rules of keyFields to a key a non-admin
// creates for herself: models within her user's and team's, budgets and
// limits no higher than her user's own. The upper bounds of the config are
// applied later, for everyone.
func (a *API) checkOwnNewKey(ctx context.Context, p *auth.Principal, obj *jsonbody.Object, req *keyParams) error {
	if isAdmin(p) {
		return nil
	}
	if err := refuseAdminFields(p, obj, true, nil, nil); err != nil {
		return err
	}
	if obj.Has("team_id") && deref(req.TeamID) != "" {
		if err := a.requireMember(ctx, p, *req.TeamID); err != nil {
			return err
		}
	}
	u := a.callerUser(ctx, p)
	if u == nil {
		return nil
	}
	if len(u.Models) > 0 {
		for _, m := range req.Models {
			if !containsModel(u.Models, m) {
				return apierror.Forbidden("model %q is not in your user's models %v", m, u.Models)
			}
		}
	}
	overF := func(name string, v, limit *float64) error {
		if v != nil && limit != nil && *v > *limit {
			return apierror.Forbidden("%s %v is above your user's %v", name, *v, *limit)
		}
		return nil
	}
	overI := func(name string, v, limit *int64) error {
		if v != nil && limit != nil && *v > *limit {
			return apierror.Forbidden("%s %d is above your user's %d", name, *v, *limit)
		}
		return nil
	}
	soft := u.SoftBudget
	if soft == nil {
		soft = u.MaxBudget
	}
	for _, err := range []error{overF("max_budget", req.MaxBudget, u.MaxBudget), overF("soft_budget", req.SoftBudget, soft),
		overI("max_parallel_requests", req.MaxParallelRequests, u.MaxParallelRequests),
		overI("tpm_limit", req.TPMLimit, u.TPMLimit), overI("rpm_limit", req.RPMLimit, u.RPMLimit)} {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkOwnKeyUpdate applies keyFields to a non-admin's change of her key k
// into updated.
func (a *API) checkOwnKeyUpdate(ctx context.Context, p *auth.Principal, obj *jsonbody.Object, k, updated *store.Key) error {
	if isAdmin(p) {
		return nil
	}
	if err := refuseAdminFields(p, obj, false, k, updated); err != nil {
		return err
	}
	// An admin-only field sent unchanged is not applied: budget_duration
	// sent back as it was must not move the budget's reset.
	updated.BudgetResetAt = k.BudgetResetAt
	// metadata is hers, except budget_enforcement: a strict mode an admin
	// set binds her like any other limit.
	if obj.Has("metadata") && !reflect.DeepEqual(k.Metadata["budget_enforcement"], updated.Metadata["budget_enforcement"]) {
		return apierror.Forbidden("metadata.budget_enforcement may be set only by proxy_admin (you are %s)", p.Role())
	}
	if err := a.ownerKeepsGuards(p, "key", k.Metadata, updated.Metadata); err != nil {
		return err
	}
	if obj.Has("models") && !slices.Equal(k.Models, updated.Models) {
		if len(updated.Models) == 0 && len(k.Models) > 0 {
			return apierror.Forbidden("%s may only narrow a key's models; an empty list allows every model", p.Role())
		}
		if len(k.Models) > 0 {
			for _, m := range updated.Models {
				if !containsModel(k.Models, m) {
					return apierror.Forbidden("%s may only narrow a key's models: %q is not in %v", p.Role(), m, k.Models)
				}
			}
		} else if u := a.callerUser(ctx, p); u != nil && len(u.Models) > 0 {
			for _, m := range updated.Models {
				if !containsModel(u.Models, m) {
					return apierror.Forbidden("model %q is not in your user's models %v", m, u.Models)
				}
			}
		}
		if t, err := a.store.GetTeam(ctx, updated.TeamID); err == nil && len(t.Models) > 0 {
			for _, m := range updated.Models {
				if !containsModel(t.Models, m) {
					return apierror.Forbidden("model %q is not in team %s's models %v", m, t.TeamID, t.Models)
				}
			}
		}
	}
	if obj.Has("team_id") && updated.TeamID != k.TeamID {
		if updated.TeamID == "" {
			return apierror.Forbidden("%s may not take a key out of its team", p.Role())
		}
		if err := a.requireMember(ctx, p, updated.TeamID); err != nil {
			return err
		}
	}
	return nil
}

// KeyFieldTable renders keyFields as the markdown rows docs/security.md
// prints: | field | on her new key | on her existing key |.
func KeyFieldTable() []string { return fieldRows(keyFields, "owner") }

func fieldRows(fields []keyField, who string) []string {
	name := map[setter]string{adminOnly: "proxy_admin only", owner: who, ownerBounded: who + ", bounded"}
	rows := make([]string, 0, len(fields))
	for _, f := range fields {
		row := "| `" + f.name + "` | " + name[f.generate] + " | " + name[f.update] + " |"
		if f.bound != "" {
			row += " " + f.bound + " |"
		} else {
			row += "  |"
		}
		rows = append(rows, row)
	}
	return rows
}

// Organizations. An org_admin (user_role "org_admin" in an organization's
// members) manages the teams of that organization and its members; she is
// otherwise an internal_user. teamFields says which team fields she may set
// on a team of her organization (/team/new, /team/update); a field not
// listed is proxy_admin's only. The organization's bounds (models, budget)
// apply to every caller, proxy_admin included. docs/security.md prints
// this table; TestFieldTableIsDocumented keeps the two together.
var teamFields = []keyField{
	{"team_id", ownerBounded, ownerBounded, "new: any unused id; update: names a team of her organization"},
	{"organization_id", ownerBounded, ownerBounded, "an organization she is org_admin of (never cleared)"},
	{"team_alias", owner, owner, ""},
	{"models", ownerBounded, ownerBounded, "within the organization's models"},
	{"members_with_roles", owner, owner, "a member's budget_id must name a budget"},
	{"max_budget", ownerBounded, ownerBounded, "at most the organization's max_budget"},
	{"tpm_limit", ownerBounded, ownerBounded, "at most the organization's tpm_limit"},
	{"rpm_limit", ownerBounded, ownerBounded, "at most the organization's rpm_limit"},
	{"max_parallel_requests", owner, owner, ""},
	{"budget_duration", owner, owner, ""},
	{"soft_budget", owner, owner, "accepted, not applied on teams"},
	{"metadata", owner, ownerBounded, "update: guardrails only added, a guardrails.modify_guardrails: false lock never lifted, max_input_bytes and max_input_tokens only lowered"},
	{"guardrails", owner, ownerBounded, "stored as metadata.guardrails and applied to the team's keys' calls; a configured guardrail's name; update: only added to, never a name removed"},
	{"blocked", owner, owner, ""},
	{"spend", adminOnly, adminOnly, ""},
}

// refuseTeamFields returns a 403 for the first member of obj that
// teamFields keeps from an org_admin (a team body has the same fields on
// /team/new and /team/update).
func refuseTeamFields(p *auth.Principal, obj *jsonbody.Object) error {
	for _, f := range teamFields {
		if f.update == adminOnly && obj.Has(f.name) {
			return apierror.Forbidden("%s may be set on a team only by proxy_admin (you are %s)", f.name, p.Role())
		}
	}
	return nil
}

// TeamFieldTable renders teamFields as the rows docs/security.md prints:
// | field | org_admin on /team/new | org_admin on /team/update | bound |.
func TeamFieldTable() []string { return fieldRows(teamFields, "org_admin") }

// routeRule is one row of the route table of budgets and organizations:
// who besides proxy_admin may call the route.
type routeRule struct {
	routes      string
	adminViewer string // proxy_admin_viewer
	orgAdmin    string // an internal_user who is org_admin of the organization
	member      string // any other internal_user (or viewer)
}

// routeRules is who may call the budget and organization routes (each is
// registered with the access level these imply, and the handlers check the
// organization role). docs/security.md prints it; TestFieldTableIsDocumented
// keeps the two together.
var routeRules = []routeRule{
	{"`/budget/new`, `/budget/update`, `/budget/delete`", "no", "no", "no"},
	{"`/budget/info`, `/budget/list`", "yes", "no", "no"},
	{"`/organization/new`, `/organization/update`, `/organization/delete`", "no", "no", "no"},
	{"`/organization/info` (GET, and LiteLLM's older POST form)", "yes", "her organization", "no"},
	{"`/organization/list`", "all", "organizations she is a member of", "organizations she is a member of"},
	{"`/organization/member_add`, `/organization/member_update`, `/organization/member_delete`", "no", "her organization's internal_user and internal_user_viewer members (never an org_admin)", "no"},
	{"`/team/new`", "no", "in her organization, per the team field table", "no"},
	{"`/team/update`, `/team/delete`, `/team/block`, `/team/unblock`", "no", "teams of her organization, per the team field table", "no"},
	{"`/team/member_add`, `/team/member_delete`", "no", "teams of her organization, any member", "as the team's admin, members of role `user`"},
	{"`/team/info`", "yes", "teams of her organization", "teams she is a member of"},
}

// RouteTable renders routeRules as the rows docs/security.md prints:
// | routes | proxy_admin_viewer | org_admin | other users |.
func RouteTable() []string {
	rows := make([]string, 0, len(routeRules))
	for _, r := range routeRules {
		rows = append(rows, "| "+r.routes+" | "+r.adminViewer+" | "+r.orgAdmin+" | "+r.member+" |")
	}
	return rows
}

// readRoute is one row of the table of the read-only routes any key may
// call (served by the gateway and the server, not this package, but ruled
// here with the rest): what each role gets, and what a request without a
// key gets.
type readRoute struct {
	route, proxyAdmin, adminViewer, internalUser, internalViewer, noKey string
}

// readRoutes is who may call the model, route and readiness routes of
// issue 22. docs/security.md prints it; TestFieldTableIsDocumented keeps
// the two together, and the server's TestModelRoutesByRole calls each as
// each role.
var readRoutes = []readRoute{
	{"`/models`, `/v1/models`", "the models its key may use (every model with `scope=expand`); `team_id`: any team", "as proxy_admin", "the models her key may use; `team_id`: her key's team only (else 403)", "as internal_user", "401 (on an open gateway, every model)"},
	{"`/model_group/info`", "the groups its key may use", "as proxy_admin", "the groups her key may use", "as internal_user", "401"},
	{"`/routes`", "yes", "yes", "yes", "yes", "401"},
	{"`/health/readiness/details`", "yes", "yes", "yes", "yes", "401"},
	{"`/health/readiness`", "yes", "yes", "yes", "yes", "yes (no secret in it)"},
}

// ReadRouteTable renders readRoutes as the rows docs/security.md prints:
// | route | proxy_admin | proxy_admin_viewer | internal_user | internal_user_viewer | no key |.
func ReadRouteTable() []string {
	rows := make([]string, 0, len(readRoutes))
	for _, r := range readRoutes {
		rows = append(rows, "| "+r.route+" | "+r.proxyAdmin+" | "+r.adminViewer+" | "+r.internalUser+" | "+r.internalViewer+" | "+r.noKey+" |")
	}
	return rows
}

// configuredGuardrail refuses a name no guardrail of the config has
// (with no guardrails configured, calls read no names: any is kept).
func (a *API) configuredGuardrail(name string) error {
	if len(a.cfg.Guardrails) == 0 {
		return nil
	}
	var names []string
	for _, g := range a.cfg.Guardrails {
		if g.GuardrailName == name {
			return nil
		}
		names = append(names, g.GuardrailName)
	}
	return apierror.BadRequest("guardrails", "unknown guardrail %q (configured: %s)", name, strings.Join(names, ", "))
}

// metaNames are the strings of a metadata list ([] for anything else).
func metaNames(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// ownerKeepsGuards refuses a non-admin's key (or team) update that would remove a
// guardrail from the key's metadata.guardrails (the top-level guardrails
// member writes there too) or lift one of its input limits
// (metadata.max_input_bytes, max_input_tokens): an admin may have pinned
// them, and they bind her like any other limit. She may add guardrails
// and lower limits.
//
// What she adds must be a configured guardrail's name (exactly): a call
// naming an unknown guardrail is refused, and as she may not remove it
// again, an unknown name would lock the key or team until a proxy_admin
// came.
func (a *API) ownerKeepsGuards(p *auth.Principal, what string, before, after map[string]any) error {
	// LiteLLM's lock on per-request guardrail changes binds her like a
	// guardrail: she may set it, not lift it (a top-level guardrails list
	// written over it would lift it too).
	if guardrail.ModifyLocked(before) && !guardrail.ModifyLocked(after) {
		return apierror.Forbidden("metadata.guardrails.modify_guardrails may be lifted on a %s only by proxy_admin (you are %s)", what, p.Role())
	}
	now := metaNames(after["guardrails"])
	was := metaNames(before["guardrails"])
	for _, n := range was {
		if !slices.Contains(now, n) {
			return apierror.Forbidden("%s may add guardrails to a %s, not remove them: %q would be removed (metadata.guardrails)", p.Role(), what, n)
		}
	}
	for _, n := range now {
		if !slices.Contains(was, n) {
			if err := a.configuredGuardrail(n); err != nil {
				return err
			}
		}
	}
	num := func(v any) (float64, bool) {
		f, ok := v.(float64)
		return f, ok && f > 0
	}
	for _, f := range []string{"max_input_bytes", "max_input_tokens"} {
		old, ok := num(before[f])
		if !ok {
			continue
		}
		if nw, ok := num(after[f]); !ok || nw > old {
			return apierror.Forbidden("%s may only lower metadata.%s on a %s (now %v)", p.Role(), f, what, old)
		}
	}
	return nil
}
