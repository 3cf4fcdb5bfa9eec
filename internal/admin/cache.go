package admin

import (
	"errors"
	"net/http"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/cache"
)

// WithCache gives /cache/* the response cache's backend (nil: it is off).
func (a *API) WithCache(b cache.Backend) *API {
	a.cache = b
	return a
}

// registerCache mounts LiteLLM's cache management routes: /cache/ping
// (proxy_admin and proxy_admin_viewer) and /cache/delete and
// /cache/flushall (proxy_admin).
func (a *API) registerCache(mux Mux) {
	mux.Handle("GET /cache/ping", a.route(readAll, a.cachePing))
	mux.Handle("POST /cache/delete", a.route(writeAll, a.cacheDelete))
	mux.Handle("POST /cache/flushall", a.route(writeAll, a.cacheFlush))
}

// errCacheOff answers /cache/* when litellm_settings.cache is off, as
// LiteLLM does (503).
func errCacheOff() error {
	return apierror.Unavailable(errors.New("cache off"), "the response cache is not on: set litellm_settings.cache: true")
}

func (a *API) cachePing(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	if a.cache == nil {
		return errCacheOff()
	}
	if err := a.cache.Ping(r.Context()); err != nil {
		return apierror.Unavailable(err, "the %s cache does not answer: %v", a.cache.Name(), err)
	}
	return writeJSON(w, map[string]any{"status": "healthy", "cache_type": a.cache.Name(), "ping_response": true})
}

func (a *API) cacheDelete(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	if a.cache == nil {
		return errCacheOff()
	}
	var req struct {
		Keys []string `json:"keys"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if len(req.Keys) == 0 {
		return apierror.BadRequest("keys", "keys must name the cache keys to delete (x-litellm-cache-key of their answers)")
	}
	if err := a.cache.Delete(r.Context(), req.Keys...); err != nil {
		return apierror.Unavailable(err, "the %s cache did not delete: %v", a.cache.Name(), err)
	}
	return writeJSON(w, map[string]any{"status": "success"})
}

func (a *API) cacheFlush(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	if a.cache == nil {
		return errCacheOff()
	}
	if err := a.cache.Flush(r.Context()); err != nil {
		return apierror.Unavailable(err, "the %s cache did not flush: %v", a.cache.Name(), err)
	}
	return writeJSON(w, map[string]any{"status": "success"})
}
