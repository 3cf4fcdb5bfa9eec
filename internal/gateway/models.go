package gateway

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/pricing"
	"github.com/tollgate/tollgate/internal/router"
)

// models is GET /models and /v1/models: the model names the caller may
// use, in OpenAI's list shape, with LiteLLM's filters:
//
//   - team_id: the models of that team (a proxy admin or viewer: any team;
//     others: their key's own team);
//   - include_model_access_groups: the access groups the caller may use
//     are listed too; only_model_access_groups: only they are;
//   - return_wildcard_routes: a wildcard deployment's route ("openai/*")
//     is listed beside the price table's models it matches (which are
//     listed either way);
//   - include_metadata (with fallback_type general, context_window or
//     content_policy): each entry gets metadata.fallbacks;
//   - scope=expand: a proxy admin or viewer sees every model, whatever
//     the key's own list.
func (g *Gateway) models(w http.ResponseWriter, r *http.Request) error {
	p, err := g.authenticate(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var flags [4]bool
	for i, name := range []string{"include_model_access_groups", "only_model_access_groups", "return_wildcard_routes", "include_metadata"} {
		v := q.Get(name)
		if v == "" {
			continue
		}
		var ok bool
		if flags[i], ok = config.QueryFlag(v); !ok {
			return apierror.BadRequest(name, "%s must be true or false; got %q", name, clip(v))
		}
	}
	withGroups, onlyGroups, wildcards, withMeta := flags[0], flags[1], flags[2], flags[3]
	fallbackType := q.Get("fallback_type")
	switch fallbackType {
	case "":
		fallbackType = "general"
	case "general", "context_window", "content_policy":
	default:
		return apierror.BadRequest("fallback_type", "fallback_type must be general, context_window or content_policy; got %q", clip(fallbackType))
	}
	switch s := q.Get("scope"); s {
	case "":
	case "expand":
		if seesEveryModel(p) {
			p = &auth.Principal{Master: true}
		}
	default:
		return apierror.BadRequest("scope", "scope must be expand; got %q", clip(s))
	}
	if id := q.Get("team_id"); id != "" {
		t, ok := g.auth.Snapshot().Team(id)
		switch {
		case p.Team != nil && p.Team.TeamID == id:
		case !seesEveryModel(p):
			return apierror.Forbidden("team_id %q: a key may list only its own team's models", clip(id))
		case !ok:
			e := apierror.NotFound("team_id", "no team %q", clip(id))
			e.Code = "team_not_found"
			return e
		default:
			p = &auth.Principal{Team: t}
		}
	}

	rt := g.Router()
	var names []string
	if !onlyGroups {
		for _, n := range rt.Names() {
			if grp, ok := rt.Group(n); ok && p.MayUse(n, grp.AccessGroups) {
				names = append(names, n)
			}
		}
		names = append(names, wildcardModels(rt, p, wildcards)...)
	}
	if withGroups || onlyGroups {
		for _, ag := range accessGroups(rt) {
			if p.MayUse(ag, nil) && !slices.Contains(names, ag) {
				names = append(names, ag)
			}
		}
	}
	pol := g.routing.Load()
	out := make([]byte, 0, 64+len(names)*80)
	out = append(out, `{"object":"list","data":[`...)
	for i, n := range names {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, `{"id":`...)
		out = append(out, quote(n)...)
		out = append(out, `,"object":"model","created":1677610602,"owned_by":"tollgate"`...)
		if withMeta {
			var fb []string
			switch fallbackType {
			case "general":
				fb = fallbacksFor(pol.Fallbacks, n, pol.DefaultFallbacks)
			case "context_window":
				fb = fallbacksFor(pol.ContextWindowFallbacks, n, nil)
			}
			out = append(out, `,"metadata":{"fallbacks":[`...)
			for j, f := range fb {
				if j > 0 {
					out = append(out, ',')
				}
				out = append(out, quote(f)...)
			}
			out = append(out, "]}"...)
		}
		out = append(out, '}')
	}
	out = append(out, "]}"...)
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(out)
	return err
}

// seesEveryModel: the master key, open mode, and the proxy admin roles.
func seesEveryModel(p *auth.Principal) bool {
	if p.Master || p.Key == nil {
		return true
	}
	r := p.Role()
	return r == auth.RoleProxyAdmin || r == auth.RoleProxyAdminViewer
}

// accessGroups are the access groups of the served deployments, sorted.
func accessGroups(rt *router.Router) []string {
	var out []string
	for _, n := range rt.GroupNames() {
		if grp, ok := rt.Group(n); ok {
			for _, ag := range grp.AccessGroups {
				if !slices.Contains(out, ag) {
					out = append(out, ag)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// wildcardModels are, for each wildcard route the caller may use
// ("openai/*", "anthropic/claude-*"), the price table's models of that
// provider that it matches, as "provider/model"; with routes, the route
// itself too, as LiteLLM lists them.
func wildcardModels(rt *router.Router, p *auth.Principal, routes bool) []string {
	var out []string
	table, _ := pricing.Table()
	for _, n := range rt.GroupNames() {
		if !strings.Contains(n, "*") {
			continue
		}
		grp, ok := rt.Group(n)
		if !ok || !p.MayUse(n, grp.AccessGroups) {
			continue
		}
		if routes {
			out = append(out, n)
		}
		prefix, _, _ := strings.Cut(n, "*")
		provider, rest, ok := strings.Cut(prefix, "/")
		if !ok {
			continue // "*": every provider; LiteLLM lists nothing for it
		}
		var known []string
		for name, price := range table {
			bare := strings.TrimPrefix(name, provider+"/")
			if price.Provider == provider && strings.HasPrefix(bare, rest) && !strings.Contains(bare, "/") {
				known = append(known, provider+"/"+bare)
			}
		}
		slices.Sort(known)
		for _, m := range slices.Compact(known) {
			if p.MayUse(m, grp.AccessGroups) {
				out = append(out, m)
			}
		}
	}
	return out
}

// modelGroupInfo is GET /model_group/info: LiteLLM's ModelGroupInfo for
// each model group the caller may use (or only model_group), from the
// deployments and the price table: {"data": [{"model_group", "providers",
// "max_input_tokens", "max_output_tokens", "input_cost_per_token",
// "output_cost_per_token", "mode", "tpm", "rpm", "supports_*",
// "supported_openai_params"}]}. Capabilities the price table does not
// record are false.
func (g *Gateway) modelGroupInfo(w http.ResponseWriter, r *http.Request) error {
	p, err := g.authenticate(r)
	if err != nil {
		return err
	}
	only := r.URL.Query().Get("model_group")
	rt := g.Router()
	data := []modelGroup{}
	for _, n := range rt.GroupNames() {
		if only != "" && n != only {
			continue
		}
		grp, ok := rt.Group(n)
		if !ok || !p.MayUse(n, grp.AccessGroups) {
			continue
		}
		data = append(data, describeGroup(grp))
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]any{"data": data})
}

// modelGroup is LiteLLM's ModelGroupInfo.
type modelGroup struct {
	ModelGroup                      string   `json:"model_group"`
	Providers                       []string `json:"providers"`
	MaxInputTokens                  *int64   `json:"max_input_tokens"`
	MaxOutputTokens                 *int64   `json:"max_output_tokens"`
	InputCostPerToken               *float64 `json:"input_cost_per_token"`
	OutputCostPerToken              *float64 `json:"output_cost_per_token"`
	Mode                            string   `json:"mode"`
	TPM                             *int64   `json:"tpm"`
	RPM                             *int64   `json:"rpm"`
	SupportsParallelFunctionCalling bool     `json:"supports_parallel_function_calling"`
	SupportsVision                  bool     `json:"supports_vision"`
	SupportsFunctionCalling         bool     `json:"supports_function_calling"`
	SupportsWebSearch               bool     `json:"supports_web_search"`
	SupportsReasoning               bool     `json:"supports_reasoning"`
	SupportedOpenAIParams           []string `json:"supported_openai_params"`
	ConfigurableClientsideAuth      []string `json:"configurable_clientside_auth_params"`
	IsPublicModelGroup              bool     `json:"is_public_model_group"`
}

func describeGroup(grp *router.Group) modelGroup {
	m := modelGroup{ModelGroup: grp.Name, Providers: []string{}, Mode: "chat", SupportedOpenAIParams: []string{}}
	var tpm, rpm int64
	for _, t := range grp.Targets {
		if !slices.Contains(m.Providers, t.D.Provider) {
			m.Providers = append(m.Providers, t.D.Provider)
		}
		tpm += t.D.TPM
		rpm += t.D.RPM
		price, ok := t.PriceFor(t.UpstreamModel(grp.Name))
		if !ok {
			continue
		}
		if m.InputCostPerToken == nil {
			in, out := price.InputPerToken, price.OutputPerToken
			m.InputCostPerToken, m.OutputCostPerToken = &in, &out
			if price.Mode != "" {
				m.Mode = price.Mode
			}
		}
		if n := price.MaxInputTokens; n > 0 && (m.MaxInputTokens == nil || n > *m.MaxInputTokens) {
			m.MaxInputTokens = &n
		}
		if n := price.MaxOutputTokens; n > 0 && (m.MaxOutputTokens == nil || n > *m.MaxOutputTokens) {
			m.MaxOutputTokens = &n
		}
	}
	if tpm > 0 {
		m.TPM = &tpm
	}
	if rpm > 0 {
		m.RPM = &rpm
	}
	return m
}
