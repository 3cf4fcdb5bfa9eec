// Package router maps the model a client asks for to the deployments that
// can serve it, and picks one per attempt.
package router

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
)

// Router is immutable once built; a config reload builds a new one.
type Router struct {
	groups    map[string]*Group
	wildcards []*Group // patterns, most specific (longest literal prefix) first
	aliases   map[string]string
	disabled  []Disabled
	// unservable are model names all of whose deployments are disabled,
	// and alias targets no deployment serves.
	unservable map[string]string
	// dangling are the aliases whose target no deployment serves.
	dangling []string
}

// Disabled is a deployment the router does not serve, and why.
type Disabled struct {
	D      *config.Deployment
	Reason string
}

// Group is the set of deployments behind one public model name.
type Group struct {
	Name         string
	Targets      []*provider.Target
	AccessGroups []string // model_info.access_groups of its deployments

	health       *Health
	strategy     string
	allowedFails int
	cooldown     time.Duration
	// singleThreshold is Settings.SingleDeploymentThreshold when the
	// group has one deployment, else 0.
	singleThreshold int
}

// Settings are the router_settings a router is built with.
type Settings struct {
	Aliases  map[string]string // model_group_alias
	Strategy string            // routing_strategy; "" is simple-shuffle
	// AllowedFails failures within a minute put a deployment in cooldown
	// for Cooldown.
	AllowedFails int
	Cooldown     time.Duration
	// SingleDeploymentThreshold, when above 0, spares the only deployment
	// of a group the AllowedFails rule, as LiteLLM does (its
	// SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD): cooling it down would
	// refuse every request of the group, so it cools down only when every
	// attempt it finished in the current minute failed and they number at
	// least this. 0 applies AllowedFails to it like to any deployment (as
	// LiteLLM does when router_settings.allowed_fails is set).
	SingleDeploymentThreshold int
	// Health is the run-time state shared across rebuilds; nil disables
	// cooldowns and the stateful strategies.
	Health *Health
	// Clients is the HTTP client pool shared across rebuilds; nil gives
	// the router a pool of its own.
	Clients *provider.Clients
}

// Strategies lists the routing strategies.
var Strategies = []string{SimpleShuffle, LeastBusy, LatencyBased, UsageBased, CostBased}

// New builds the router for deps.
func New(deps []config.Deployment, set Settings) (*Router, error) {
	if set.Strategy != "" && !slices.Contains(Strategies, set.Strategy) {
		return nil, fmt.Errorf("router_settings.routing_strategy: unknown strategy %q (one of %s)", set.Strategy, strings.Join(Strategies, ", "))
	}
	aliases := set.Aliases
	pool := set.Clients
	if pool == nil {
		pool = provider.NewClients()
	}
	r := &Router{groups: map[string]*Group{}, aliases: aliases, unservable: map[string]string{}}
	for i := range deps {
		d := &deps[i]
		if !provider.Supported(d.Provider) {
			// A LiteLLM config may name any of LiteLLM's providers: one
			// Tollgate cannot forward to disables its deployment, and the
			// rest of the model list is served.
			r.disabled = append(r.disabled, Disabled{D: d, Reason: fmt.Sprintf(
				"provider %q is not served by Tollgate (model %s/%s); this deployment is disabled", d.Provider, d.Provider, d.Model)})
			continue
		}
		t, err := provider.Build(d, pool)
		if errors.Is(err, provider.ErrUnusable) {
			r.disabled = append(r.disabled, Disabled{D: d, Reason: err.Error() + "; this deployment is disabled"})
			continue
		}
		if err != nil {
			return nil, err
		}
		g, ok := r.groups[d.ModelName]
		if !ok {
			g = &Group{Name: d.ModelName}
			r.groups[d.ModelName] = g
			if isPattern(d.ModelName) {
				r.wildcards = append(r.wildcards, g)
			}
		}
		g.Targets = append(g.Targets, t)
		for _, ag := range d.AccessGroups {
			if !slices.Contains(g.AccessGroups, ag) {
				g.AccessGroups = append(g.AccessGroups, ag)
			}
		}
	}
	for _, g := range r.groups {
		g.health, g.strategy = set.Health, set.Strategy
		g.allowedFails, g.cooldown = set.AllowedFails, set.Cooldown
		if len(g.Targets) == 1 {
			g.singleThreshold = set.SingleDeploymentThreshold
		}
	}
	slices.SortStableFunc(r.wildcards, func(a, b *Group) int {
		return len(literalPrefix(b.Name)) - len(literalPrefix(a.Name))
	})
	for _, x := range r.disabled {
		if _, ok := r.groups[x.D.ModelName]; !ok {
			if _, seen := r.unservable[x.D.ModelName]; !seen {
				r.unservable[x.D.ModelName] = x.Reason
			}
		}
	}
	for alias, target := range aliases {
		if _, disabled := r.unservable[target]; disabled {
			continue
		}
		if _, ok := r.groups[target]; !ok && r.matchPattern(target) == nil {
			// Not fatal: the target may be a model added through the API
			// that was deleted since (a rebuild that failed here would keep
			// serving the deleted model, and the next start would fail).
			// Requests for the alias get a 404 that says why.
			why := fmt.Sprintf("router_settings.model_group_alias %q points at %q, which no deployment serves", alias, target)
			r.unservable[target] = why
			r.dangling = append(r.dangling, why)
		}
	}
	slices.Sort(r.dangling)
	return r, nil
}

// Dangling lists, one sentence each, the aliases whose target no
// deployment serves (for the log).
func (r *Router) Dangling() []string { return r.dangling }

// Disabled lists the deployments the router does not serve, in config order.
func (r *Router) Disabled() []Disabled { return r.disabled }

// DisabledReason is why the deployment with this id is not served; "" when
// it is served (or unknown).
func (r *Router) DisabledReason(id string) string {
	for _, x := range r.disabled {
		if x.D.ID == id {
			return x.Reason
		}
	}
	return ""
}

// Unservable says why model (a model name or an alias of one) has no
// deployment left to serve it, with the access groups its deployments
// named; "" when it has one, or is unknown.
func (r *Router) Unservable(model string) (reason string, accessGroups []string) {
	if target, ok := r.aliases[model]; ok {
		model = target
	}
	if _, ok := r.Group(model); ok {
		return "", nil
	}
	reason = r.unservable[model]
	if reason != "" {
		for _, x := range r.disabled {
			if x.D.ModelName == model {
				accessGroups = append(accessGroups, x.D.AccessGroups...)
			}
		}
	}
	return reason, accessGroups
}

// Group returns the group serving model: an exact model_name, then a
// model_group_alias, then the most specific wildcard pattern.
func (r *Router) Group(model string) (*Group, bool) {
	if g, ok := r.groups[model]; ok {
		return g, true
	}
	if target, ok := r.aliases[model]; ok {
		if g, ok := r.groups[target]; ok {
			return g, true
		}
		model = target
	}
	if g := r.matchPattern(model); g != nil {
		return g, true
	}
	return nil, false
}

func (r *Router) matchPattern(model string) *Group {
	for _, g := range r.wildcards {
		if strings.HasPrefix(model, literalPrefix(g.Name)) {
			return g
		}
	}
	return nil
}

// GroupNames lists every group's name, patterns included, sorted.
func (r *Router) GroupNames() []string {
	names := make([]string, 0, len(r.groups))
	for n := range r.groups {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Names lists the public model names (patterns excluded, aliases included), sorted.
func (r *Router) Names() []string {
	names := make([]string, 0, len(r.groups)+len(r.aliases))
	for n := range r.groups {
		if !isPattern(n) {
			names = append(names, n)
		}
	}
	for a := range r.aliases {
		if _, dup := r.groups[a]; !dup {
			names = append(names, a)
		}
	}
	slices.Sort(names)
	return names
}

// weight uses the first of weight, rpm, tpm that every deployment of the
// group sets, so mixed groups fall back to an even split.
func weight(d *config.Deployment, all []*provider.Target) float64 {
	every := func(f func(*config.Deployment) float64) bool {
		for _, t := range all {
			if f(t.D) <= 0 {
				return false
			}
		}
		return true
	}
	for _, f := range []func(*config.Deployment) float64{
		func(d *config.Deployment) float64 { return d.Weight },
		func(d *config.Deployment) float64 { return float64(d.RPM) },
		func(d *config.Deployment) float64 { return float64(d.TPM) },
	} {
		if every(f) {
			return f(d)
		}
	}
	return 1
}

func isPattern(name string) bool { return strings.Contains(name, "*") }

func literalPrefix(pattern string) string {
	if i := strings.IndexByte(pattern, '*'); i >= 0 {
		return pattern[:i]
	}
	return pattern
}
