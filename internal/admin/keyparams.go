package admin

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// keyParams are /key/generate's fields (also /key/update's and /user/new's).
type keyParams struct {
	Key      *string           `json:"key"`
	KeyAlias *string           `json:"key_alias"`
	Duration *string           `json:"duration"`
	Models   []string          `json:"models"`
	Aliases  map[string]string `json:"aliases"`
	Config   map[string]any    `json:"config"`
	Metadata map[string]any    `json:"metadata"`
	Tags     []string          `json:"tags"`
	// Guardrails is LiteLLM's top-level guardrails member: the names of
	// the guardrails every call of the key runs, kept (as LiteLLM keeps
	// them) in the key's metadata.guardrails.
	Guardrails           []string                   `json:"guardrails"`
	Spend                *float64                   `json:"spend"`
	MaxBudget            *float64                   `json:"max_budget"`
	SoftBudget           *float64                   `json:"soft_budget"`
	BudgetDuration       *string                    `json:"budget_duration"`
	MaxParallelRequests  *int64                     `json:"max_parallel_requests"`
	TPMLimit             *int64                     `json:"tpm_limit"`
	RPMLimit             *int64                     `json:"rpm_limit"`
	ModelMaxBudget       map[string]json.RawMessage `json:"model_max_budget"`
	ModelRPMLimit        map[string]int64           `json:"model_rpm_limit"`
	ModelTPMLimit        map[string]int64           `json:"model_tpm_limit"`
	UserID               *string                    `json:"user_id"`
	TeamID               *string                    `json:"team_id"`
	Blocked              *bool                      `json:"blocked"`
	AllowedCacheControls []string                   `json:"allowed_cache_controls"`
	Permissions          map[string]any             `json:"permissions"`
	KeyType              *string                    `json:"key_type"`
	SendInviteEmail      *bool                      `json:"send_invite_email"`
	// BudgetID names a budget object whose limits apply where the key's
	// own are unset.
	BudgetID *string `json:"budget_id"`
}

// validate checks the values a key may not have (see limits.go); nothing
// has been written.
func (p *keyParams) validate() error {
	for _, f := range []struct {
		name string
		v    *float64
	}{{"max_budget", p.MaxBudget}, {"soft_budget", p.SoftBudget}, {"spend", p.Spend}} {
		if f.v != nil {
			if err := checkUSD(f.name, *f.v); err != nil {
				return err
			}
		}
	}
	for _, f := range []struct {
		name string
		v    *int64
	}{{"max_parallel_requests", p.MaxParallelRequests}, {"tpm_limit", p.TPMLimit}, {"rpm_limit", p.RPMLimit}} {
		if f.v != nil {
			if err := checkRate(f.name, *f.v); err != nil {
				return err
			}
		}
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"duration", p.Duration}, {"budget_duration", p.BudgetDuration}} {
		if f.v != nil && *f.v != "" {
			if _, err := checkPeriod(f.name, *f.v); err != nil {
				return err
			}
		}
	}
	for _, f := range []struct {
		name string
		m    map[string]int64
	}{{"model_rpm_limit", p.ModelRPMLimit}, {"model_tpm_limit", p.ModelTPMLimit}} {
		for m, v := range f.m {
			if err := checkRate(f.name, v); err != nil {
				return apierror.BadRequest(f.name, "%s[%s]: %v", f.name, m, err)
			}
		}
	}
	if _, err := p.modelBudgets(); err != nil {
		return err
	}
	if p.Key != nil && len(*p.Key) < 8 {
		return apierror.BadRequest("key", "a custom key must be at least 8 characters")
	}
	if p.KeyAlias != nil && strings.TrimSpace(*p.KeyAlias) == "" {
		return apierror.BadRequest("key_alias", "key_alias must not be empty")
	}
	return checkTags(p.Tags, p.Metadata)
}

// modelBudgets reads model_max_budget in either of LiteLLM's shapes:
// {"gpt-4": 0.5} or {"gpt-4": {"budget_limit": 0.5, "time_period": "30d"}}.
func (p *keyParams) modelBudgets() (map[string]float64, error) {
	if p.ModelMaxBudget == nil {
		return nil, nil
	}
	out := make(map[string]float64, len(p.ModelMaxBudget))
	for m, raw := range p.ModelMaxBudget {
		var f float64
		if err := json.Unmarshal(raw, &f); err != nil {
			var obj struct {
				BudgetLimit *float64 `json:"budget_limit"`
				TimePeriod  *string  `json:"time_period"`
			}
			if err := json.Unmarshal(raw, &obj); err != nil || obj.BudgetLimit == nil {
				return nil, apierror.BadRequest("model_max_budget", "model_max_budget[%s] must be a number or {\"budget_limit\": number}", m)
			}
			if obj.TimePeriod != nil && *obj.TimePeriod != "" {
				if _, err := checkPeriod("model_max_budget", *obj.TimePeriod); err != nil {
					return nil, apierror.BadRequest("model_max_budget", "model_max_budget[%s].time_period: %v", m, err)
				}
			}
			f = *obj.BudgetLimit
		}
		if err := checkUSD("model_max_budget", f); err != nil {
			return nil, apierror.BadRequest("model_max_budget", "model_max_budget[%s]: %v", m, err)
		}
		out[m] = f
	}
	return out, nil
}

// applyDefaults fills what the request left out from
// litellm_settings.default_key_generate_params.
func applyDefaults(p *keyParams, obj *jsonbody.Object, d *config.KeyGenerateParams) {
	if d == nil {
		return
	}
	absent := func(k string) bool { return !obj.Has(k) }
	if absent("max_budget") && d.MaxBudget != nil {
		p.MaxBudget = d.MaxBudget
	}
	if absent("soft_budget") && d.SoftBudget != nil {
		p.SoftBudget = d.SoftBudget
	}
	if absent("budget_duration") && d.BudgetDuration != nil {
		p.BudgetDuration = d.BudgetDuration
	}
	if absent("duration") && d.Duration != nil {
		p.Duration = d.Duration
	}
	if absent("models") && d.Models != nil {
		p.Models = d.Models
	}
	if absent("aliases") && d.Aliases != nil {
		p.Aliases = d.Aliases
	}
	if absent("config") && d.Config != nil {
		p.Config = d.Config
	}
	if absent("metadata") && d.Metadata != nil {
		p.Metadata = d.Metadata
	}
	if absent("tags") && d.Tags != nil {
		p.Tags = d.Tags
	}
	if absent("team_id") && d.TeamID != nil {
		p.TeamID = d.TeamID
	}
	if absent("tpm_limit") && d.TPMLimit != nil {
		p.TPMLimit = d.TPMLimit
	}
	if absent("rpm_limit") && d.RPMLimit != nil {
		p.RPMLimit = d.RPMLimit
	}
	if absent("max_parallel_requests") && d.MaxParallelRequests != nil {
		p.MaxParallelRequests = d.MaxParallelRequests
	}
}

// applyUpperBounds clamps to litellm_settings.upperbound_key_generate_params:
// a request above a bound gets the bound (the seed: max_budget=200 with an
// upper bound of 100 creates a key with max_budget=100); a request that sets
// no value where a bound exists gets the bound too.
func applyUpperBounds(p *keyParams, u *config.KeyGenerateParams) {
	if u == nil {
		return
	}
	clampF := func(v **float64, bound *float64) {
		if bound != nil && (*v == nil || **v > *bound) {
			*v = bound
		}
	}
	clampI := func(v **int64, bound *int64) {
		if bound != nil && (*v == nil || **v > *bound) {
			*v = bound
		}
	}
	clampP := func(v **string, bound *string) {
		if bound == nil {
			return
		}
		bp, err := ledger.ParsePeriod(*bound)
		if err != nil {
			return
		}
		if *v == nil || **v == "" {
			*v = bound
			return
		}
		if vp, err := ledger.ParsePeriod(**v); err == nil && vp.Approx() > bp.Approx() {
			*v = bound
		}
	}
	clampF(&p.MaxBudget, u.MaxBudget)
	clampF(&p.SoftBudget, u.SoftBudget)
	clampI(&p.TPMLimit, u.TPMLimit)
	clampI(&p.RPMLimit, u.RPMLimit)
	clampI(&p.MaxParallelRequests, u.MaxParallelRequests)
	clampP(&p.Duration, u.Duration)
	clampP(&p.BudgetDuration, u.BudgetDuration)
}

// newRawKey returns a fresh key: "sk-" and 22 URL-safe characters (128 bits).
func newRawKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "sk-" + base64.RawURLEncoding.EncodeToString(b[:])
}

// fill copies the request's values onto k; present reports which members
// the request had (for update, where an absent member leaves k alone and a
// null one clears it).
func (p *keyParams) fill(k *store.Key, present func(string) bool, now time.Time) error {
	set := func(name string) bool { return present(name) }
	if set("key_alias") {
		k.KeyAlias = p.KeyAlias
	}
	if set("models") {
		k.Models = p.Models
	}
	if set("aliases") {
		k.Aliases = p.Aliases
	}
	if set("config") {
		k.Config = p.Config
	}
	if set("metadata") {
		k.Metadata = p.Metadata
	}
	if set("tags") {
		k.Tags = p.Tags
	}
	if set("allowed_cache_controls") {
		k.AllowedCacheControls = p.AllowedCacheControls
	}
	if set("guardrails") && p.Guardrails != nil {
		// A copy: the stored key's map may be the snapshot's.
		md := make(map[string]any, len(k.Metadata)+1)
		for n, v := range k.Metadata {
			md[n] = v
		}
		names := make([]any, len(p.Guardrails))
		for i, n := range p.Guardrails {
			names[i] = n
		}
		md["guardrails"] = names
		k.Metadata = md
	}
	if set("max_budget") {
		k.MaxBudget = p.MaxBudget
	}
	if set("soft_budget") {
		k.SoftBudget = p.SoftBudget
	}
	if set("max_parallel_requests") {
		k.MaxParallelRequests = p.MaxParallelRequests
	}
	if set("tpm_limit") {
		k.TPMLimit = p.TPMLimit
	}
	if set("rpm_limit") {
		k.RPMLimit = p.RPMLimit
	}
	if set("model_rpm_limit") {
		k.ModelRPMLimit = p.ModelRPMLimit
	}
	if set("model_tpm_limit") {
		k.ModelTPMLimit = p.ModelTPMLimit
	}
	if set("model_max_budget") {
		mb, err := p.modelBudgets()
		if err != nil {
			return err
		}
		k.ModelMaxBudget = mb
	}
	if set("user_id") {
		k.UserID = deref(p.UserID)
	}
	if set("team_id") {
		k.TeamID = deref(p.TeamID)
	}
	if set("budget_id") {
		k.BudgetID = deref(p.BudgetID)
	}
	if set("blocked") && p.Blocked != nil && k.Blocked != *p.Blocked {
		// Only a proxy_admin gets here with a change (keyFields).
		k.Blocked, k.BlockedBy = *p.Blocked, ""
		if k.Blocked {
			k.BlockedBy = "admin"
		}
	}
	if set("budget_duration") {
		k.BudgetDuration, k.BudgetResetAt = nil, nil
		if p.BudgetDuration != nil && *p.BudgetDuration != "" {
			per, _ := ledger.ParsePeriod(*p.BudgetDuration)
			reset := per.NextReset(now)
			k.BudgetDuration, k.BudgetResetAt = p.BudgetDuration, &reset
		}
	}
	if set("duration") {
		k.Expires = nil
		if p.Duration != nil && *p.Duration != "" {
			per, _ := ledger.ParsePeriod(*p.Duration)
			exp := per.After(now).UTC()
			k.Expires = &exp
		}
	}
	if k.Models == nil {
		k.Models = []string{}
	}
	for _, m := range []*map[string]any{&k.Config, &k.Metadata} {
		if *m == nil {
			*m = map[string]any{}
		}
	}
	if k.Aliases == nil {
		k.Aliases = map[string]string{}
	}
	return nil
}

func deref(s *string) string {
	if s == nil || *s == "None" {
		return ""
	}
	return *s
}

// keyResponse renders a key as LiteLLM does: the record's fields, with
// `token` the sha256 hash, `key` the raw key when this response created it,
// and `expires` in ISO 8601.
func keyResponse(k *store.Key, raw string) map[string]any {
	b, _ := json.Marshal(k)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if raw != "" {
		m["key"] = raw
	}
	m["token_id"] = k.TokenHash
	delete(m, "budget_account") // internal (store.Key.BudgetAccount)
	for _, f := range []string{"user_id", "team_id"} {
		if _, ok := m[f]; !ok {
			m[f] = nil
		}
	}
	return m
}

// filterHashOf turns the key a spend filter names into its hash: a 64-hex
// string is taken as the hash itself, anything else is hashed. It only
// narrows listings the caller may read anyway; lookups that act on a key go
// through findKey, which tries both readings.
func filterHashOf(s string) string {
	if isHash(s) {
		return strings.ToLower(s)
	}
	return config.HashKey(s)
}

// isHash reports whether s looks like a sha256 hex digest.
func isHash(s string) bool { return len(s) == 64 && isHex(s) }

func isHex(s string) bool {
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

func page(r *http.Request) store.Page {
	q := r.URL.Query()
	n, _ := strconv.Atoi(q.Get("page"))
	size, _ := strconv.Atoi(firstOf(q.Get("size"), q.Get("page_size")))
	return store.Page{Number: n, Size: size}
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
