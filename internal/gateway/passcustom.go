package gateway

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
)

// Fallback serves general_settings.pass_through_endpoints for requests no
// route of the gateway's took, and hands the rest to next.
func (p *Pass) Fallback(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e, ok := p.match(r.URL.Path); ok {
			apierror.Handler(p.g.log, func(w http.ResponseWriter, r *http.Request) error {
				return p.serveCustom(w, r, e)
			}).ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// customEndpoint is one configured pass-through endpoint, built.
type customEndpoint struct {
	cfg    config.PassThroughEndpoint
	target *provider.Target // nil: no target is configured
}

// SetEndpoints builds general_settings.pass_through_endpoints and swaps
// them in (at start, and on a config reload); calls in flight finish on
// the endpoints they started with. The config has checked them.
func (p *Pass) SetEndpoints(eps []config.PassThroughEndpoint) error {
	built := make([]*customEndpoint, 0, len(eps))
	for _, e := range eps {
		ce := &customEndpoint{cfg: e}
		if e.Target != "" {
			u, err := url.Parse(string(e.Target))
			if err != nil {
				return err
			}
			h := http.Header{}
			for k, v := range e.Headers {
				h.Set(k, string(v))
			}
			zero := 0.0
			d := &config.Deployment{ID: "pass-through" + e.Path, ModelName: e.Path, Model: "*", Provider: "pass_through", APIBase: provider.ShownBase(u.String()),
				InputCostPerToken: &zero, OutputCostPerToken: &zero}
			ce.target = provider.PassTarget(d, u.String(), h, p.opts.Clients)
		}
		built = append(built, ce)
	}
	// The longest path first: /a/b is matched before /a.
	for i := 1; i < len(built); i++ {
		for j := i; j > 0 && len(built[j].cfg.Path) > len(built[j-1].cfg.Path); j-- {
			built[j], built[j-1] = built[j-1], built[j]
		}
	}
	p.custom.Store(&built)
	return nil
}

// Paths are the configured endpoints' paths.
func (p *Pass) Paths() []string {
	var out []string
	for _, e := range *p.custom.Load() {
		out = append(out, e.cfg.Path)
	}
	return out
}

// match finds the endpoint serving path.
func (p *Pass) match(path string) (*customEndpoint, bool) {
	for _, e := range *p.custom.Load() {
		if path == e.cfg.Path || (e.cfg.IncludeSubpath && strings.HasPrefix(path, e.cfg.Path+"/")) {
			return e, true
		}
	}
	return nil, false
}

// serveCustom forwards a request to a configured endpoint: with auth, a
// virtual key is required and governed as on the provider routes (and
// charged cost_per_request); without, anyone may call it, as in LiteLLM.
func (p *Pass) serveCustom(w http.ResponseWriter, r *http.Request, e *customEndpoint) error {
	pr := &auth.Principal{}
	if e.cfg.Auth {
		var err error
		if pr, err = p.authenticate(r); err != nil {
			return err
		}
	}
	if e.target == nil {
		return apierror.Unavailable(nil, "pass-through endpoint %s has no target configured (general_settings.pass_through_endpoints)", e.cfg.Path)
	}
	h := http.Header{}
	if e.cfg.ForwardHeaders {
		h = upstreamHeader(r.Header)
		if !e.cfg.Auth { // the client's own credentials are for the target
			for _, k := range credentialHeaders {
				if v := r.Header.Values(k); len(v) > 0 {
					h[k] = v
				}
			}
		}
	} else {
		for _, k := range []string{"Content-Type", "Accept"} {
			if v := r.Header.Get(k); v != "" {
				h.Set(k, v)
			}
		}
	}
	// The sub-path as the client encoded it (the configured path is plain).
	rest := strings.TrimPrefix(r.URL.EscapedPath(), e.cfg.Path)
	pc := passCall{path: rest, query: r.URL.RawQuery, header: h, governed: e.cfg.Auth}
	if e.cfg.Auth { // the virtual key may have come as ?key=
		pc.query = withoutKeyParam(pc.query)
		if c := e.cfg.CostPerRequest; c != nil {
			pc.fixed = *c
		}
	}
	return p.run(w, r, pr, e.target, pc)
}
