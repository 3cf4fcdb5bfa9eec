package server

import (
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/hooks"
	"github.com/tollgate/tollgate/internal/metrics"
	"github.com/tollgate/tollgate/internal/store"
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
	case hookStatus(err) != 0:
		return apierror.WithStatus(hookStatus(err), "%v", err)
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

// hookStatus is the status a custom_auth refusal asked for (0: none).
func hookStatus(err error) int {
	var hd *auth.ErrHookDenied
	if errors.As(err, &hd) {
		return hd.Status
	}
	return 0
}

// logID is how an account appears in the log: a key's hash (alone or with
// a model) shortened to its metrics prefix.
func logID(kind store.Kind, id string) string {
	switch kind {
	case store.KindKey:
		return metrics.HashPrefix(id)
	case store.KindKeyModel: // hash + "/" + model
		if i := strings.IndexByte(id, '/'); i >= 0 {
			return metrics.HashPrefix(id[:i]) + id[i:]
		}
		return metrics.HashPrefix(id)
	}
	return id
}

// bodyDeadline bounds how long a client may take to send a request body:
// the connection's read deadline is set to d from the moment the handler
// starts and cleared as soon as the body has been read to its end, so that
// it never limits how long the response (a long stream) may take. A body
// still incomplete at the deadline fails with a 408 to whoever reads it,
// and a body the handler left unread is not waited for past it either.
// (http.Server.ReadTimeout would do the first half but stay armed after the
// body, and its expiry would then cancel the request's context mid-stream.)
func bodyDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			if setReadDeadline(w, time.Now().Add(d)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, w: w, limit: d}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// setReadDeadline is http.ResponseController's SetReadDeadline (the same
// walk through Unwrap) without the controller, which escapes: one
// allocation on every request with a body.
func setReadDeadline(w http.ResponseWriter, t time.Time) error {
	for {
		switch rw := w.(type) {
		case interface{ SetReadDeadline(time.Time) error }:
			return rw.SetReadDeadline(t)
		case interface{ Unwrap() http.ResponseWriter }:
			w = rw.Unwrap()
		default:
			return http.ErrNotSupported
		}
	}
}

// deadlineBody clears the read deadline at the end of the body and turns
// its expiry into a 408.
type deadlineBody struct {
	io.ReadCloser
	w     http.ResponseWriter
	limit time.Duration
	done  bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF && !b.done:
		b.done = true
		_ = setReadDeadline(b.w, time.Time{})
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		err = apierror.BodyTimeout(b.limit)
	}
	return n, err
}

// pageCSP is the Content-Security-Policy of every page the gateway serves
// (the admin UI): scripts, styles and requests only from this origin, no
// inline script, no plugins, no framing. The docs page replaces it with its
// own, which allows its inline script and style by hash.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// pageHeaders wraps the handlers of the UI and docs routes: their pages may
// not be framed (clickjacking a page that holds a key), sniffed into
// another type, or leak their URL in a Referer.
func pageHeaders(handle func(string, http.Handler)) func(string, http.Handler) {
	return func(pattern string, h http.Handler) {
		handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hd := w.Header()
			hd.Set("Content-Security-Policy", pageCSP)
			hd.Set("X-Frame-Options", "DENY")
			hd.Set("X-Content-Type-Options", "nosniff")
			hd.Set("Referrer-Policy", "no-referrer")
			h.ServeHTTP(w, r)
		}))
	}
}
