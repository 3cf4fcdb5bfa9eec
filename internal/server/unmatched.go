package server

import (
	"net/http"
	"strings"

	"github.com/tollgate/tollgate/internal/apierror"
)

// unmatched is the mux's catch-all ("/"): a request that no route takes
// gets an answer in the OpenAI error shape where net/http would answer in
// plain text: 405 with Allow when the path is served under other methods,
// else 404 naming the method and path. Routes are matched once, by the
// mux, as before; this runs only for what nothing else matched.
func unmatched(mux *http.ServeMux) http.Handler {
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range methods {
			other := *r
			other.Method = m
			if _, pattern := mux.Handler(&other); pattern != "" && pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			e := apierror.NotFound("", "%s is not served for %s; allowed: %s", r.Method, r.URL.Path, strings.Join(allow, ", "))
			e.Status, e.Type, e.Code = http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed"
			apierror.Write(w, e)
			return
		}
		e := apierror.NotFound("", "Unknown route: %s %s (Tollgate serves the OpenAI and Anthropic APIs under /v1 and LiteLLM's management API; GET /routes lists them)", r.Method, r.URL.Path)
		e.Code = "route_not_found"
		apierror.Write(w, e)
	})
}
