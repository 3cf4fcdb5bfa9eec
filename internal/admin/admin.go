// Package admin serves the management API, wire-compatible with the LiteLLM
// proxy's: /key/*, /user/*, /team/*, /customer/* (and /end_user/*). Every
// write goes to the store first and then to the in-memory snapshot, so the
// very next request sees it, and lands in the audit log.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/cache"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/hooks"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/pricing"
	"github.com/tollgate/tollgate/internal/store"
)

// API is the management API.
type API struct {
	store store.Store
	book  *ledger.Book
	auth  *auth.Authenticator
	snap  *auth.Snapshot
	cfg   *config.Config
	log   *slog.Logger
	now   func() time.Time
	// price finds the price of a public model name, for /spend/calculate.
	price func(model string) (pricing.Price, bool)
	// models connects /model/* to the router; nil disables them.
	models *Models
	// shared holds budgets on Redis; an operator's spend edit reseeds it.
	shared *ledger.Shared
	// keyHook is general_settings.custom_key_generate.
	keyHook *hooks.Hook
	// cache is the response cache /cache/* manage; nil: the cache is off.
	cache cache.Backend
	// newKey is told of a key made here (generated or regenerated) before
	// it is in the snapshot; nil: nobody is.
	newKey func(ctx context.Context, k *store.Key)
	// flushSpend writes the spend this process has queued to the store;
	// nil: none is queued here.
	flushSpend func()
}

// WithSpendFlush gives the API the spend writer's flush: a key's queued
// spend reaches its record before /key/delete removes it, not a key made
// again with its secret.
func (a *API) WithSpendFlush(f func()) *API {
	a.flushSpend = f
	return a
}

// WithNewKey tells f of each key made here (/key/generate,
// /key/regenerate) before a request can find it in the snapshot: the
// server counts such a key as newer than the end users its snapshot lacks
// (one made on another replica before the key is read from the store),
// and reads what the key's limits come from that its snapshot lacks.
func (a *API) WithNewKey(f func(ctx context.Context, k *store.Key)) *API {
	a.newKey = f
	return a
}

// WithKeyHook makes /key/generate ask hook first.
func (a *API) WithKeyHook(h *hooks.Hook) *API {
	a.keyHook = h
	return a
}

// WithShared tells the API that budgets live on Redis too.
func (a *API) WithShared(s *ledger.Shared) *API {
	a.shared = s
	return a
}

// WithPricer sets how /spend/calculate prices a model name (the router's
// deployments, with their overrides); without one it reads the price table.
func (a *API) WithPricer(f func(model string) (pricing.Price, bool)) *API {
	a.price = f
	return a
}

// New returns the management API over st, publishing writes to a's snapshot.
func New(st store.Store, a *auth.Authenticator, book *ledger.Book, cfg *config.Config, log *slog.Logger) *API {
	return &API{store: st, book: book, auth: a, snap: a.Snapshot(), cfg: cfg, log: log, now: time.Now,
		price: func(m string) (pricing.Price, bool) { return pricing.Lookup("", m) }}
}

// access is what an endpoint requires of its caller.
type access int

const (
	readOwn  access = iota // any valid key; non-admins see only their own objects
	writeOwn               // a key whose role may write; non-admins only their own objects
	readAll                // admins and admin viewers
	writeAll               // admins only
)

type handler func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error

// Mux is where routes are registered (*http.ServeMux, or the server's
// recorder of patterns).
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Register mounts the management routes on mux.
func (a *API) Register(mux Mux) {
	a.registerKeys(mux)
	a.registerUsers(mux)
	a.registerTeams(mux)
	a.registerCustomers(mux)
	a.registerBudgets(mux)
	a.registerOrgs(mux)
	mux.Handle("GET /audit/list", a.route(readAll, a.auditList))
	a.registerSpend(mux)
	a.registerModels(mux)
	a.registerCache(mux)
}

// route authenticates the caller and checks its role before h runs.
func (a *API) route(need access, h handler) http.Handler {
	return apierror.Handler(a.log, func(w http.ResponseWriter, r *http.Request) error {
		p, err := a.auth.Authenticate(r)
		if errors.Is(err, auth.ErrUnverifiable) || errors.Is(err, hooks.ErrUnavailable) {
			return apierror.Unavailable(err, "%v", err)
		}
		if hd := (*auth.ErrHookDenied)(nil); errors.As(err, &hd) && hd.Status != 0 {
			return apierror.WithStatus(hd.Status, "%s", hd.Message)
		}
		if err != nil {
			return apierror.Unauthorized("%v", err)
		}
		if !p.Master && p.Key == nil {
			if a.auth.Open() && p.Static == nil {
				// No master key configured: LiteLLM lets anyone manage keys.
				p = &auth.Principal{Master: true}
			} else {
				return apierror.Unauthorized("the management API needs the master key or a virtual key")
			}
		}
		// Query strings name objects and filters; like bodies (decode),
		// they must be UTF-8 (PostgreSQL rejects anything else with a 500).
		for name, vs := range r.URL.Query() {
			for _, v := range vs {
				if !utf8.ValidString(name) || !utf8.ValidString(v) {
					return apierror.BadRequest(strings.ToValidUTF8(name, "\uFFFD"), "query parameter %q is not valid UTF-8", strings.ToValidUTF8(name, "\uFFFD"))
				}
			}
		}
		role := p.Role()
		isAdmin := role == auth.RoleProxyAdmin
		viewer := role == auth.RoleProxyAdminViewer || role == auth.RoleInternalUserViewer
		switch {
		case need == writeAll && !isAdmin, need == readAll && !isAdmin && role != auth.RoleProxyAdminViewer:
			return apierror.Forbidden("%s may not call %s (needs %s)", role, r.URL.Path, map[access]string{readAll: "proxy_admin or proxy_admin_viewer", writeAll: "proxy_admin"}[need])
		case need == writeOwn && viewer:
			return apierror.Forbidden("%s has read-only access and may not call %s", role, r.URL.Path)
		}
		return h(w, r, p)
	})
}

func isAdmin(p *auth.Principal) bool { return p.Role() == auth.RoleProxyAdmin }

func seesAll(p *auth.Principal) bool {
	r := p.Role()
	return r == auth.RoleProxyAdmin || r == auth.RoleProxyAdminViewer
}

// decode reads a JSON body into v strictly: unknown fields and wrong types
// are 400s naming the field. The trailing commas and # comments of LiteLLM's
// curl examples are accepted. It returns the raw top-level members too, so
// that "absent" and "null" can be told apart.
func decode(r *http.Request, v any) (*jsonbody.Object, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err != nil {
		var e *apierror.Error // the body deadline (408)
		if errors.As(err, &e) {
			return nil, e
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, apierror.TooLarge(tooBig.Limit)
		}
		return nil, apierror.BadRequest("", "could not read body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	// Once for every string of every management body: encoding/json would
	// quietly turn invalid UTF-8 (and a lone surrogate escape) into U+FFFD,
	// storing something other than what was sent.
	if !utf8.Valid(body) {
		return nil, apierror.BadRequest("", "the request body is not valid UTF-8")
	}
	if loneSurrogate(body) {
		return nil, apierror.BadRequest("", "the request body has a \\u escape of a lone UTF-16 surrogate, which is not a character")
	}
	obj, err := jsonbody.Scan(body)
	if err != nil {
		relaxed, changed := jsonbody.Relax(body)
		if !changed {
			return nil, apierror.BadRequest("", "%v", err)
		}
		if obj, err = jsonbody.Scan(relaxed); err != nil {
			return nil, apierror.BadRequest("", "%v", err)
		}
		body = relaxed
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, apierror.BadRequest(te.Field, "%s must be %s, got %s", te.Field, jsonType(te.Type.Kind().String()), te.Value)
		}
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			f = strings.Trim(f, `"`)
			return nil, apierror.BadRequest(f, "unknown field %q", f)
		}
		return nil, apierror.BadRequest("", "%v", err)
	}
	return obj, nil
}

// loneSurrogate reports whether a JSON text escapes a UTF-16 surrogate
// (\uD800-\uDFFF) that is not a high surrogate followed by a low one.
func loneSurrogate(b []byte) bool {
	hex4 := func(i int) (rune, bool) {
		if i+4 > len(b) {
			return 0, false
		}
		var r rune
		for _, c := range b[i : i+4] {
			switch {
			case c >= '0' && c <= '9':
				r = r<<4 | rune(c-'0')
			case c >= 'a' && c <= 'f':
				r = r<<4 | rune(c-'a'+10)
			case c >= 'A' && c <= 'F':
				r = r<<4 | rune(c-'A'+10)
			default:
				return 0, false
			}
		}
		return r, true
	}
	inString := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			inString = !inString
		case c == '\\' && inString && i+1 < len(b):
			if b[i+1] != 'u' {
				i++ // skip the escaped character (\" among them)
				continue
			}
			r, ok := hex4(i + 2)
			if !ok || r < 0xD800 || r > 0xDFFF {
				i++
				continue
			}
			if r >= 0xDC00 { // a low surrogate first
				return true
			}
			if i+7 >= len(b) || b[i+6] != '\\' || b[i+7] != 'u' {
				return true
			}
			if lo, ok := hex4(i + 8); !ok || lo < 0xDC00 || lo > 0xDFFF {
				return true
			}
			i += 11
		}
	}
	return false
}

func jsonType(kind string) string {
	switch kind {
	case "float64", "float32":
		return "a number"
	case "int64", "int", "int32":
		return "an integer"
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "slice":
		return "a list"
	case "map":
		return "an object"
	}
	return kind
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// storeError maps store errors to API errors.
func storeError(err error, what, param string) error {
	var gone *store.OwnerDeletedError
	switch {
	case errors.As(err, &gone):
		// A key write that waited for its user's or team's deletion.
		return apierror.NotFound(string(gone.Kind)+"_id", "%s", gone.Error())
	case errors.Is(err, store.ErrNotFound):
		return apierror.NotFound(param, "%s not found", what)
	case errors.Is(err, store.ErrConflict):
		return apierror.BadRequest(param, "%s already exists", what)
	}
	return apierror.Internal(err)
}

// audit records a write; a failure to record is logged, the write stands.
func (a *API) audit(ctx context.Context, p *auth.Principal, action, objType, id string, before, after any) {
	e := store.AuditEntry{Actor: actor(p), Action: action, ObjectType: objType, ObjectID: id, At: a.now().UTC()}
	if before != nil {
		b, _ := json.Marshal(before)
		e.Before = string(b)
	}
	if after != nil {
		b, _ := json.Marshal(after)
		e.After = string(b)
	}
	if err := a.store.AppendAudit(ctx, e); err != nil {
		a.log.Error("audit log write failed", "action", action, "object", objType, "err", err)
	}
}

func actor(p *auth.Principal) string {
	if p.Master && p.KeyHash == "" {
		return "open-gateway"
	}
	if p.Master {
		return "master_key"
	}
	return p.KeyHash
}

func (a *API) auditList(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	list, total, err := a.store.ListAudit(r.Context(), page(r))
	if err != nil {
		return apierror.Internal(err)
	}
	if list == nil {
		list = []store.AuditEntry{}
	}
	return writeJSON(w, map[string]any{"audit_logs": list, "total_count": total})
}
