package server

import (
	"errors"
	"net/http"
	"strings"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/hooks"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/metrics"
)

// mayReadMetrics is the check litellm_settings.require_auth_for_metrics_endpoint
// turns on: the master key, or a key whose user is proxy_admin or
// proxy_admin_viewer. /metrics shows every key's, user's and team's spend, so
// a key that may read only its own (internal_user, LiteLLM's default for any
// valid key) is refused.
func mayReadMetrics(authn *auth.Authenticator, r *http.Request) error {
	p, err := authn.Authenticate(r)
	switch {
	case errors.Is(err, auth.ErrUnverifiable) || errors.Is(err, hooks.ErrUnavailable):
		return apierror.Unavailable(err, "%v", err)
	case err != nil:
		return apierror.Unauthorized("the metrics endpoint needs the master key or an admin's key (litellm_settings.require_auth_for_metrics_endpoint): %v", err)
	case p.Master:
		return nil
	case p.Key == nil:
		return apierror.Unauthorized("the metrics endpoint needs the master key or an admin's key (litellm_settings.require_auth_for_metrics_endpoint)")
	}
	if role := p.Role(); role != auth.RoleProxyAdmin && role != auth.RoleProxyAdminViewer {
		return apierror.Forbidden("%s may not read /metrics (needs proxy_admin or proxy_admin_viewer)", role)
	}
	return nil
}

// logID is how an account appears in the log: a key's hash (alone or with
// a model) shortened to its metrics prefix.
func logID(kind ledger.Kind, id string) string {
	switch kind {
	case ledger.KindKey:
		return metrics.HashPrefix(id)
	case ledger.KindKeyModel: // hash + "/" + model
		if i := strings.IndexByte(id, '/'); i >= 0 {
			return metrics.HashPrefix(id[:i]) + id[i:]
		}
		return metrics.HashPrefix(id)
	}
	return id
}
