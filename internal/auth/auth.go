// Package auth identifies who is calling: it extracts the presented key,
// hashes it, and resolves it to a Principal without touching the database.
package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/hooks"
	"github.com/tollgate/tollgate/internal/store"
)

// Principal is the identity a request acts as.
type Principal struct {
	Master  bool   // the master key: every permission
	KeyHash string // sha256 hex of the presented key; "" when no key was needed
	Key     *store.Key
	User    *store.User // the key's user, when it has one
	Team    *store.Team // the key's team, when it has one
	// Org is the team's organization, and OrgBudget the budget object it
	// names: the organization's limits bound all its teams together.
	Org       *store.Organization
	OrgBudget *store.Budget
	// MemberBudget is the budget object the key's user's membership of
	// its team names (members_with_roles[].budget_id), or nil.
	MemberBudget *store.Budget
	// Static is set for a key from the config file (agentgateway apiKey).
	Static *config.StaticKey
	// Hooked: Key was built by custom_auth in replace mode from the hook's
	// answer; it has no row in the store (its spend is kept apart).
	Hooked bool
	// HookRole is the user_role a Python custom_auth's UserAPIKeyAuth
	// named (canonical; "" when none or unknown).
	HookRole string

	// A key found in the snapshot is read into the principal (the
	// snapshot holds keys packed): Key then points at key, and its hash,
	// alias and times at what follows. They stay valid as long as the
	// principal is not filled again.
	key     store.Key
	slots   keySlots
	hashBuf [64]byte
}

// setKey reads the snapshot's record r, whose digest is sum, into p.
func (p *Principal) setKey(r *keyRec, sum *[32]byte) {
	h := r.hash("")
	if h == "" {
		h = hexInto(&p.hashBuf, sum)
	}
	r.fill(&p.key, h, &p.slots)
	p.Key, p.KeyHash = &p.key, h
}

// Role is the principal's management role: proxy_admin for the master key,
// the user's role for a key with a user, else internal_user.
func (p *Principal) Role() string {
	switch {
	case p.Master:
		return RoleProxyAdmin
	case p.Hooked && p.HookRole != "":
		return p.HookRole
	case p.User != nil && p.User.UserRole != "":
		return p.User.UserRole
	}
	return RoleInternalUser
}

// Management roles. LiteLLM's older names (admin, app_owner, app_user) are
// accepted and mean proxy_admin, internal_user and internal_user_viewer.
const (
	RoleProxyAdmin         = "proxy_admin"
	RoleProxyAdminViewer   = "proxy_admin_viewer"
	RoleInternalUser       = "internal_user"
	RoleInternalUserViewer = "internal_user_viewer"
)

// CanonicalRole maps a role name to Tollgate's, reporting whether it is known.
func CanonicalRole(r string) (string, bool) {
	switch r {
	case RoleProxyAdmin, "admin":
		return RoleProxyAdmin, true
	case RoleProxyAdminViewer:
		return RoleProxyAdminViewer, true
	case RoleInternalUser, "app_owner", "":
		return RoleInternalUser, true
	case RoleInternalUserViewer, "app_user", "customer":
		return RoleInternalUserViewer, true
	}
	return "", false
}

// ExtractKey returns the key presented on r, from LiteLLM's
// x-litellm-api-key (which lets a client keep Authorization for something
// else), Authorization: Bearer, x-api-key (Anthropic clients) or api-key
// (Azure clients), in that order.
//
// The names are looked up in the canonical form the server keeps request
// headers in, as Header.Get would after canonicalising them (which costs a
// new string for each lower-case name, on every request).
func ExtractKey(r *http.Request) string {
	if v := firstValue(r.Header, "X-Litellm-Api-Key"); v != "" {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			v = v[7:]
		}
		return strings.TrimSpace(v)
	}
	if v := firstValue(r.Header, "Authorization"); v != "" {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			return strings.TrimSpace(v[7:])
		}
		return strings.TrimSpace(v)
	}
	if v := firstValue(r.Header, "X-Api-Key"); v != "" {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(firstValue(r.Header, "Api-Key"))
}

// firstValue is h.Get(key) for a key already in canonical form.
func firstValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Hash is the sha256 of a raw key: the only form in which a key is kept.
func Hash(raw string) [32]byte {
	var buf [256]byte // keys fit: hashing them allocates nothing
	if len(raw) <= len(buf) {
		return sha256.Sum256(append(buf[:0], raw...))
	}
	return sha256.Sum256([]byte(raw))
}

// HashHex is Hash as lower-case hex, the `token` of LiteLLM's API.
func HashHex(raw string) string {
	h := Hash(raw)
	return hex.EncodeToString(h[:])
}

// Abbreviate is the display form of a key, "sk-...ABCD".
func Abbreviate(raw string) string {
	if len(raw) <= 4 {
		return "sk-..."
	}
	return "sk-..." + raw[len(raw)-4:]
}

// Authenticator resolves presented keys: the master key, static keys from
// the config file, and virtual keys from the snapshot. With neither a master
// key nor an apiKey policy the gateway is open: requests without a key, or
// with a key it does not know, are served anonymously (LiteLLM's behaviour
// without master_key). A known virtual key is always honoured, with its
// limits; a blocked or expired one is always refused.
type Authenticator struct {
	master    [32]byte
	hasMaster bool
	snap      *Snapshot
	static    map[string]*config.StaticKey
	mode      string // agentgateway apiKey mode: strict, optional or ""
	now       func() time.Time
	storeDown func() bool
	miss      func(ctx context.Context, hash string) (bool, error)
	endMiss   func(ctx context.Context, keyHash, id string) bool
	hook      *CustomAuth
}

// Options are what an Authenticator asks beyond its snapshot; each may be
// left out.
type Options struct {
	// StoreDown reports that the database is unreachable: a key missing
	// from the snapshot may then be one created meanwhile, so it gets
	// ErrUnverifiable (503) instead of ErrInvalidKey (401). Known keys keep
	// working from the snapshot.
	StoreDown func() bool
	// Miss is asked about a key missing from the snapshot (one created on
	// another replica a moment ago): it loads the key into the snapshot and
	// reports whether it exists; an error means the store could not be
	// asked.
	Miss func(ctx context.Context, hash string) (bool, error)
	// EndUserMiss is asked about an end user missing from the snapshot,
	// named by a request made with the key whose hash is keyHash: it may
	// load the end user into the snapshot, and reports whether it did. The
	// server reads the store only for a key newer than its snapshot (one
	// read through Miss since its last completed resync): an end user made
	// before that key may be missing too. For any other key a missing end
	// user is a new one (LiteLLM's come into being with their first
	// request), and it answers "no" without a store read.
	EndUserMiss func(ctx context.Context, keyHash, id string) bool
	// Custom is general_settings.custom_auth: a hook that decides after
	// virtual-key auth, or instead of it.
	Custom *CustomAuth
}

// CustomAuth runs an operator's hook on each request's key.
type CustomAuth struct {
	Hook    *hooks.Hook
	Replace bool // the hook alone decides (the master key still works)
}

// ErrHookDenied is a refusal by custom_auth.
type ErrHookDenied struct {
	Message string
	// Status is the status the hook asked for (a Python hook's
	// HTTPException or ProxyException, always 4xx/5xx); 0 means 401.
	Status int
}

func (e *ErrHookDenied) Error() string { return e.Message }

// hookInput is what custom_auth sees: the key, the request's headers
// (lower-case names; the key headers left out) and, after virtual-key
// auth, who the key belongs to.
func hookInput(r *http.Request, raw string, p *Principal) map[string]any {
	headers := make(map[string]any, len(r.Header))
	for k, v := range r.Header {
		lk := strings.ToLower(k)
		if lk == "authorization" || lk == "x-api-key" || lk == "api-key" || lk == "x-litellm-api-key" || len(v) == 0 {
			continue
		}
		headers[lk] = v[0]
	}
	principal := map[string]any{"known": false, "user_id": "", "team_id": "", "key_alias": ""}
	if p != nil && p.Key != nil {
		principal["known"], principal["user_id"], principal["team_id"] = true, p.Key.UserID, p.Key.TeamID
		if p.Key.KeyAlias != nil {
			principal["key_alias"] = *p.Key.KeyAlias
		}
	}
	return map[string]any{"key": raw, "headers": headers,
		"request": map[string]any{"method": r.Method, "path": r.URL.Path}, "principal": principal}
}

// maxHookBody bounds the body a Python custom_auth is shown.
const maxHookBody = 1 << 20

// pythonRequest is what a Python custom_auth's fastapi Request holds:
// method, URL, path, query, every header (as LiteLLM's hook sees them, the
// key's included), the caller's address (client: host, port, Starlette's
// request.client) and the body, read here and put back for the handler.
// The body travels base64-encoded (body_b64), so the hook's body() is the
// exact bytes sent; one over maxHookBody is passed empty with
// body_truncated set.
func pythonRequest(r *http.Request) map[string]any {
	headers := make(map[string]string, len(r.Header))
	for k, v := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(v, ", ")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	qp := make(map[string]string)
	for k, v := range r.URL.Query() {
		qp[k] = v[0]
	}
	req := map[string]any{"method": r.Method, "url": scheme + "://" + r.Host + r.URL.RequestURI(), "path": r.URL.Path,
		"query": r.URL.RawQuery, "query_params": qp, "headers": headers, "body_b64": ""}
	if host, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		n, _ := strconv.Atoi(port)
		req["client"] = map[string]any{"host": host, "port": n}
	}
	if r.Body != nil && r.Body != http.NoBody {
		buf, err := io.ReadAll(io.LimitReader(r.Body, maxHookBody+1))
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		switch {
		case err != nil:
		case len(buf) > maxHookBody:
			req["body_truncated"] = true
		default:
			req["body_b64"] = base64.StdEncoding.EncodeToString(buf)
		}
	}
	return req
}

// HookVars are the CEL variables custom_auth expressions may use.
var HookVars = []string{"key", "headers", "request", "principal"}

// custom runs the hook. A denial is an *ErrHookDenied; a hook that cannot
// answer is a hooks.ErrUnavailable error — never an allow.
func (a *Authenticator) custom(r *http.Request, raw, h string, p *Principal) (*Principal, error) {
	in := hookInput(r, raw, p)
	// Decisions are cached per identical input (key, headers, request,
	// principal): a decision never outlives what it was made on. A Python
	// hook's (LiteLLM's user_api_key_auth(request, api_key)) are cached per
	// key and route (method and path: a hook that refuses /key/* but allows
	// chat must be asked again on /key/*) when
	// tollgate_python_hooks.cache_ttl asks for it.
	var ck []byte
	if a.hook.Hook.IsPython() {
		in["request"] = pythonRequest(r)
		ck = []byte("python\x00" + raw + "\x00" + r.Method + "\x00" + r.URL.Path)
	} else {
		ck, _ = json.Marshal(in)
	}
	d, err := a.hook.Hook.Decide(r.Context(), in, string(ck))
	if err != nil {
		return nil, err
	}
	if !d.Allow {
		msg := d.Message
		if msg == "" {
			msg = "denied by general_settings.custom_auth"
		}
		return nil, &ErrHookDenied{Message: msg, Status: d.Status}
	}
	if p != nil {
		return p, nil
	}
	// replace mode: the hook's answer is the identity.
	k := &store.Key{TokenHash: h, KeyName: "custom-auth", UserID: d.UserID, TeamID: d.TeamID, Models: d.Models, Metadata: d.Metadata,
		Limits: store.Limits{MaxBudget: d.MaxBudget, RPMLimit: d.RPMLimit, TPMLimit: d.TPMLimit, MaxParallelRequests: d.MaxParallelRequests}}
	if d.KeyAlias != "" {
		k.KeyAlias = &d.KeyAlias
	}
	np := &Principal{KeyHash: h, Key: k, Hooked: true}
	if role, ok := CanonicalRole(d.UserRole); ok && d.UserRole != "" {
		np.HookRole = role
	}
	if d.UserID != "" {
		np.User, _ = a.snap.User(d.UserID)
	}
	if d.TeamID != "" {
		np.Team, _ = a.snap.Team(d.TeamID)
		np.Org, np.OrgBudget = a.snap.TeamOrganization(np.Team)
		np.MemberBudget = a.snap.MemberBudget(np.Team, d.UserID)
	}
	if why := keyUsable(k, np.Team, a.now()); why != "" {
		return nil, Error(why) // a blocked team stays blocked whoever vouches for the key
	}
	if why := orgUsable(np.Org); why != "" {
		return nil, Error(why)
	}
	return np, nil
}

// NewAuthenticator returns an Authenticator for cfg's master key and static
// keys over snap.
func NewAuthenticator(cfg *config.Config, snap *Snapshot, opts Options) *Authenticator {
	a := &Authenticator{snap: snap, static: map[string]*config.StaticKey{}, mode: cfg.APIKeyMode, now: time.Now,
		storeDown: opts.StoreDown, miss: opts.Miss, endMiss: opts.EndUserMiss, hook: opts.Custom}
	if mk := cfg.MasterKey(); mk != "" {
		a.master, a.hasMaster = Hash(mk), true
	}
	for i := range cfg.StaticKeys {
		a.static[cfg.StaticKeys[i].Hash] = &cfg.StaticKeys[i]
	}
	if a.snap == nil {
		a.snap = NewSnapshot(nil)
	}
	return a
}

// Snapshot is the key cache the authenticator reads.
func (a *Authenticator) Snapshot() *Snapshot { return a.snap }

// EndUser is the end user a request's `user` names, or nil when there is
// none (a new end user): from the snapshot, else, when the request's key p
// is newer than the snapshot, through Options.EndUserMiss (an end user
// created on another replica before that key), so that its budget and
// limits hold on this replica's first request naming it with that key.
// With the database unreachable, or without a key, the snapshot alone
// answers.
func (a *Authenticator) EndUser(ctx context.Context, p *Principal, id string) *store.EndUser {
	e, ok := a.snap.EndUser(id)
	if ok || id == "" || a.endMiss == nil || p == nil || p.KeyHash == "" || (a.storeDown != nil && a.storeDown()) {
		return e
	}
	if a.endMiss(ctx, p.KeyHash, id) {
		e, _ = a.snap.EndUser(id)
	}
	return e
}

// Open reports whether requests without a key are served.
func (a *Authenticator) Open() bool {
	// custom_auth closes the gateway: every request goes through the hook.
	return !a.hasMaster && (a.mode == "" || a.mode == "optional") && a.hook == nil
}

// IsMaster reports whether raw is the master key (constant time).
func (a *Authenticator) IsMaster(raw string) bool {
	h := Hash(raw)
	return a.hasMaster && subtle.ConstantTimeCompare(h[:], a.master[:]) == 1
}

// IsStatic reports whether hash (sha256 hex) is a key from the config file.
func (a *Authenticator) IsStatic(hash string) bool {
	_, ok := a.static[strings.ToLower(hash)]
	return ok
}

// ErrNoKey and ErrInvalidKey are the plain ways authentication fails; a
// blocked or expired key gets an Error saying which.
var (
	ErrNoKey      = Error("no API key: pass it as Authorization: Bearer <key>, x-litellm-api-key, x-api-key or api-key")
	ErrInvalidKey = Error("invalid API key")
	// ErrUnverifiable: the key is not in the cached snapshot and the
	// database, which might know it, is unreachable.
	ErrUnverifiable = Error("cannot verify this API key: the database is unreachable; retry shortly")
)

// Error is an authentication failure; its text is safe to show the client.
type Error string

func (e Error) Error() string { return string(e) }

// after runs custom_auth, when set, on a principal virtual-key auth accepted.
func (a *Authenticator) after(r *http.Request, raw, h string, p *Principal) (*Principal, error) {
	if a.hook == nil {
		return p, nil
	}
	return a.custom(r, raw, h, p)
}

// Authenticate resolves the key on r. The comparison with the master key is
// on sha256 digests in constant time; every other lookup is by digest too.
func (a *Authenticator) Authenticate(r *http.Request) (*Principal, error) {
	if a.Open() && ExtractKey(r) == "" {
		// An open gateway's request without a key: the one empty principal
		// (read only) instead of 640 bytes a request for nothing.
		return &keyless, nil
	}
	p := &Principal{}
	if err := a.AuthenticateInto(r, p); err != nil {
		return nil, err
	}
	return p, nil
}

// keyless is the principal of every request without a key on an open
// gateway: all its fields are zero, and nothing may write to it. Outside
// this package a Principal is only read (the gateway's files.owner builds
// its own); inside it, only AuthenticateInto fills one, never this.
// TestKeylessPrincipalStaysEmpty serves such requests through every
// feature and checks it is still zero.
var keyless Principal

// AuthenticateInto is Authenticate filling the caller's Principal: for a
// known virtual key it allocates nothing (the digest indexes the snapshot;
// the key is read into p, its hex hash formatted into p). Filling p again
// changes what an earlier fill's p.Key and p.KeyHash show: a caller that
// reuses p must be done with them.
func (a *Authenticator) AuthenticateInto(r *http.Request, p *Principal) error {
	*p = Principal{}
	raw := ExtractKey(r)
	if raw == "" {
		if a.Open() {
			return nil
		}
		return ErrNoKey
	}
	sum := Hash(raw)
	if a.hasMaster && subtle.ConstantTimeCompare(sum[:], a.master[:]) == 1 {
		*p = Principal{Master: true, KeyHash: hex.EncodeToString(sum[:])}
		return nil
	}
	if a.hook == nil || !a.hook.Replace {
		if rec := a.snap.recBySum(&sum); rec != nil { // the hot path
			p.setKey(rec, &sum)
			return a.known(r, raw, p)
		}
	}
	h := hex.EncodeToString(sum[:])
	fill := func(np *Principal, err error) error {
		if err != nil {
			return err
		}
		*p = *np
		return nil
	}
	if a.hook != nil && a.hook.Replace {
		return fill(a.custom(r, raw, h, nil))
	}
	if sk, ok := a.static[h]; ok {
		return fill(a.after(r, raw, h, &Principal{KeyHash: h, Static: sk}))
	}
	k, ok := a.snap.Key(h)
	if !ok && !a.Open() && a.miss != nil && (a.storeDown == nil || !a.storeDown()) {
		found, err := a.miss(r.Context(), h)
		if err != nil {
			return ErrUnverifiable
		}
		if found {
			k, ok = a.snap.Key(h)
		}
	}
	if ok {
		*p = Principal{KeyHash: k.TokenHash, Key: k}
		return a.known(r, raw, p)
	}
	if a.Open() {
		p.KeyHash = h
		return nil
	}
	if a.storeDown != nil && a.storeDown() {
		return ErrUnverifiable
	}
	return ErrInvalidKey
}

// known fills the rest of p for a virtual key found in the snapshot (p.Key).
func (a *Authenticator) known(r *http.Request, raw string, p *Principal) error {
	k := p.Key
	if k.UserID != "" {
		p.User, _ = a.snap.User(k.UserID)
	}
	if k.TeamID != "" {
		p.Team, _ = a.snap.Team(k.TeamID)
		p.Org, p.OrgBudget = a.snap.TeamOrganization(p.Team)
		p.MemberBudget = a.snap.MemberBudget(p.Team, k.UserID)
	}
	if why := keyUsable(k, p.Team, a.now()); why != "" {
		return Error(why)
	}
	if why := orgUsable(p.Org); why != "" {
		return Error(why)
	}
	if a.hook == nil {
		return nil
	}
	np, err := a.custom(r, raw, k.TokenHash, p)
	if err != nil {
		return err
	}
	*p = *np
	return nil
}
