package server

import (
	"net/http"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/gateway"
)

// registerPassThrough mounts the provider pass-through routes and builds
// general_settings.pass_through_endpoints. A provider route lends the
// credentials of the provider's first deployment, so it follows the model
// list as reloads and /model/new change it.
func (s *Server) registerPassThrough(cfg *config.Config) error {
	s.pass = s.gw.NewPass(gateway.PassOptions{Clients: s.clients, Deployments: func() []config.Deployment {
		ds, _ := s.deployments()
		return ds
	}, DefaultVertex: func() *config.DefaultVertexConfig { return s.cfg.Load().DefaultVertexConfig }})
	s.pass.Register(inferenceMux{s})
	return s.pass.SetEndpoints(cfg.GeneralSettings.PassThroughEndpoints)
}

// warnShadowedPassThrough logs each configured pass-through endpoint whose
// path is also one of Tollgate's routes: requests that route takes are
// served by Tollgate, not passed through.
func (s *Server) warnShadowedPassThrough() {
	for _, path := range s.pass.Paths() {
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			r, _ := http.NewRequest(m, path, nil)
			if _, pattern := s.mux.Handler(r); pattern != "" && pattern != "/" {
				s.log.Warn("pass-through endpoint shadowed by a Tollgate route: requests it takes are not passed through", "path", path, "route", pattern)
			}
		}
	}
}
