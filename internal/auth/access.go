package auth

import "strings"

// ResolveModel applies the key's aliases (the seed's upgrade/downgrade),
// then its team's model_aliases: a key with {"gpt-3.5-turbo":
// "my-free-tier"} that asks for gpt-3.5-turbo is routed to my-free-tier.
func (p *Principal) ResolveModel(requested string) string {
	if p.Key != nil {
		if to, ok := p.Key.Aliases[requested]; ok && to != "" {
			return to
		}
	}
	if p.Team != nil { // the team's model_aliases, after the key's own
		if to, ok := p.Team.ModelAliases[requested]; ok && to != "" {
			return to
		}
	}
	return requested
}

// ProxyBudgetUser is the user that stands for the whole gateway's budget
// (litellm_settings.max_budget), as in LiteLLM: its max_budget is that
// budget and its spend the gateway's.
const ProxyBudgetUser = "litellm-proxy-budget"

// MayUse reports whether p may call the model group model, whose
// deployments belong to accessGroups. The key's models, its team's models
// and its user's models each bound it; an empty list allows everything.
// Entries match a model name, an access group, or a pattern ending in "*";
// "all-team-models" on a key defers to the team's list.
func (p *Principal) MayUse(model string, accessGroups []string) bool {
	if p.Key != nil && !allowed(p.Key.Models, model, accessGroups) {
		return false
	}
	if p.Team != nil && !allowed(p.Team.Models, model, accessGroups) {
		return false
	}
	if p.User != nil && !allowed(p.User.Models, model, accessGroups) {
		return false
	}
	// An organization's models bound every team under it.
	if p.Org != nil && !allowed(p.Org.Models, model, accessGroups) {
		return false
	}
	return true
}

func allowed(list []string, model string, groups []string) bool {
	if len(list) == 0 {
		return true
	}
	for _, m := range list {
		switch {
		case m == model, m == "*", m == "all-proxy-models", m == "all-team-models":
			return true
		case strings.HasSuffix(m, "*") && strings.HasPrefix(model, m[:len(m)-1]):
			return true
		}
		for _, g := range groups {
			if g == m {
				return true
			}
		}
	}
	return false
}
