package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
)

// readiness is GET /health/readiness (public, for load balancers) and
// /health/readiness/details (any key), in LiteLLM's shape: status, db
// ("connected", "unreachable", or LiteLLM's "Not connected" without a
// database), cache (null: Tollgate keeps no response cache), its version as
// litellm_version (and version), success_callbacks (the callbacks served
// here that hear of successful requests), log_level and is_detailed_debug. A database
// that does not answer within 2 s makes it a 503 with status "unhealthy".
func (s *Server) readiness(w http.ResponseWriter, r *http.Request) {
	db, status, code := "Not connected", "healthy", http.StatusOK
	if s.opts.Store != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		db = "connected"
		if err := s.opts.Store.Ping(ctx); err != nil {
			db, status, code = "unreachable", "unhealthy", http.StatusServiceUnavailable
		}
	}
	level := "ERROR"
	for _, l := range []struct {
		lvl  slog.Level
		name string
	}{{slog.LevelDebug, "DEBUG"}, {slog.LevelInfo, "INFO"}, {slog.LevelWarn, "WARNING"}} {
		if s.log.Enabled(r.Context(), l.lvl) {
			level = l.name
			break
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "db": db, "cache": nil, "litellm_version": Version, "version": Version,
		"success_callbacks": s.successCallbacks, "use_aiohttp_transport": false, "log_level": level, "is_detailed_debug": level == "DEBUG"})
}

// routeInfo is one entry of GET /routes, in LiteLLM's shape.
type routeInfo struct {
	Path     string   `json:"path"`
	Methods  []string `json:"methods"`
	Name     string   `json:"name"`
	Endpoint string   `json:"endpoint"`
}

// listRoutes is GET /routes: every route this server registered, one entry
// per path with its methods ({"routes": [{"path", "methods", "name",
// "endpoint"}]}; name and endpoint are the path, as there are no Python
// function names here). Any valid key may call it.
func (s *Server) listRoutes(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.authn.Authenticate(r); err != nil {
		return apierror.Unauthorized("%v", err)
	}
	byPath := map[string]*routeInfo{}
	var out []*routeInfo
	for _, pattern := range s.routes {
		method, path, ok := strings.Cut(pattern, " ")
		if !ok {
			method, path = "GET", pattern
		}
		path = strings.TrimSuffix(path, "{$}")
		ri, seen := byPath[path]
		if !seen {
			ri = &routeInfo{Path: path, Name: path, Endpoint: path}
			byPath[path] = ri
			out = append(out, ri)
		}
		if !slices.Contains(ri.Methods, method) {
			ri.Methods = append(ri.Methods, method)
		}
	}
	slices.SortFunc(out, func(a, b *routeInfo) int { return strings.Compare(a.Path, b.Path) })
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]any{"routes": out})
}
