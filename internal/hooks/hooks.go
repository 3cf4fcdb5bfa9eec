// Package hooks lets operators decide authentication and key generation
// without Go plugins: a webhook (an HTTP service that answers allow/deny), a
// CEL expression evaluated in process, or LiteLLM's Python function run by
// a pool of python3 workers (internal/pyhook). It backs
// general_settings.custom_auth and custom_key_generate.
package hooks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"time"

	"cel.dev/cel-go/cel"

	"github.com/tollgate/tollgate/internal/pyhook"
)

// Spec configures one hook: exactly one of Webhook, CEL and Python.
type Spec struct {
	Webhook *WebhookSpec `yaml:"webhook"`
	CEL     string       `yaml:"cel"`
	Python  *PythonSpec  `yaml:"-"`
	// Mode, for custom_auth: "after" (default: virtual-key auth first, then
	// the hook) or "replace" (the hook alone decides).
	Mode string `yaml:"mode"`
}

// WebhookSpec is an HTTP decision service.
type WebhookSpec struct {
	URL      string            `yaml:"url"`
	Timeout  time.Duration     `yaml:"timeout"`   // default 2s
	Headers  map[string]string `yaml:"headers"`   // sent on every call (e.g. a shared secret)
	CacheTTL time.Duration     `yaml:"cache_ttl"` // auth decisions are cached this long per key (default 0: none)
}

// PythonSpec is a LiteLLM Python function run by a worker pool.
type PythonSpec struct {
	Pool     *pyhook.Pool
	Func     string        // module.function
	Kind     string        // "auth" (user_api_key_auth) or "key_generate" (custom_generate_key_fn)
	CacheTTL time.Duration // auth decisions are cached this long per key (default 0: none)
}

// Decision is a hook's answer.
type Decision struct {
	Allow   bool   `json:"allow"`
	Message string `json:"message"`
	// Identity for custom_auth: who the caller is and what it may do.
	UserID              string   `json:"user_id"`
	TeamID              string   `json:"team_id"`
	Models              []string `json:"models"`
	MaxBudget           *float64 `json:"max_budget"`
	RPMLimit            *int64   `json:"rpm_limit"`
	TPMLimit            *int64   `json:"tpm_limit"`
	MaxParallelRequests *int64   `json:"max_parallel_requests"`
	// From a Python custom_auth's UserAPIKeyAuth.
	KeyAlias string         `json:"key_alias"`
	UserRole string         `json:"user_role"`
	Metadata map[string]any `json:"metadata"`
	// Raised: the refusal is an exception the Python hook raised (for key
	// generation a 400, where a "decision": False is a 403).
	Raised bool `json:"-"`
	// Status: the refusal's HTTP status, given by a Python hook's
	// HTTPException (status_code) or ProxyException (code), always a 4xx or
	// 5xx; 0 means the caller's default (401 auth, 400/403 key generation).
	// Message is then the exception's own, without a prefix.
	Status int `json:"-"`
}

// ErrUnavailable wraps a hook that could not be asked (down, slow, or an
// answer that is not a decision). Callers never treat it as allow.
var ErrUnavailable = errors.New("hook unavailable")

// Hook decides on an input document.
type Hook struct {
	name    string
	webhook *WebhookSpec
	client  *http.Client
	prg     cel.Program
	python  *PythonSpec
	ttl     time.Duration // decision cache
	mu      sync.Mutex
	cache   map[[32]byte]cached
}

type cached struct {
	d     Decision
	until time.Time
}

// New builds the hook named name (for messages) from spec. vars are the
// CEL variables the expression may use; it must evaluate to a bool, or to a
// map with an "allow" bool and the Decision's other fields.
func New(name string, spec *Spec, vars ...string) (*Hook, error) {
	h := &Hook{name: name, cache: map[[32]byte]cached{}}
	switch {
	case spec.Webhook != nil && spec.CEL != "":
		return nil, fmt.Errorf("%s: give a webhook or a cel expression, not both", name)
	case spec.Python != nil:
		if spec.Python.Pool == nil || spec.Python.Func == "" {
			return nil, fmt.Errorf("%s: a python hook needs a pool and a function", name)
		}
		h.python, h.ttl = spec.Python, spec.Python.CacheTTL
	case spec.Webhook != nil:
		if spec.Webhook.URL == "" {
			return nil, fmt.Errorf("%s: webhook.url is required", name)
		}
		h.webhook, h.ttl = spec.Webhook, spec.Webhook.CacheTTL
		t := spec.Webhook.Timeout
		if t <= 0 {
			t = 2 * time.Second
		}
		h.client = &http.Client{Timeout: t}
	case spec.CEL != "":
		opts := make([]cel.EnvOption, 0, len(vars))
		for _, v := range vars {
			opts = append(opts, cel.Variable(v, cel.DynType))
		}
		env, err := cel.NewEnv(opts...)
		if err != nil {
			return nil, err
		}
		ast, iss := env.Compile(spec.CEL)
		if iss.Err() != nil {
			return nil, fmt.Errorf("%s: cel: %w", name, iss.Err())
		}
		if h.prg, err = env.Program(ast, cel.EvalOptions(cel.OptOptimize)); err != nil {
			return nil, fmt.Errorf("%s: cel: %w", name, err)
		}
	default:
		return nil, fmt.Errorf("%s: give a webhook or a cel expression", name)
	}
	return h, nil
}

// Name is the hook's setting name.
func (h *Hook) Name() string { return h.name }

// IsPython reports a Python hook: it is given the request's body too, and
// its decisions are cached per key (LiteLLM's hook sees only the key and
// the request).
func (h *Hook) IsPython() bool { return h.python != nil }

// Decide asks the hook about input (a JSON-able map of the CEL variables).
// cacheKey, when set, caches webhook and Python decisions for the spec's TTL.
func (h *Hook) Decide(ctx context.Context, input map[string]any, cacheKey string) (Decision, error) {
	if h.prg != nil {
		return h.eval(input)
	}
	var ck [32]byte
	useCache := cacheKey != "" && h.ttl > 0
	if useCache {
		ck = sha256.Sum256([]byte(cacheKey))
		h.mu.Lock()
		c, ok := h.cache[ck]
		h.mu.Unlock()
		if ok && time.Now().Before(c.until) {
			return c.d, nil
		}
	}
	call := h.call
	if h.python != nil {
		call = h.callPython
	}
	d, err := call(ctx, input)
	if err != nil {
		return Decision{}, err
	}
	if useCache {
		h.mu.Lock()
		if len(h.cache) > 100000 {
			clear(h.cache)
		}
		h.cache[ck] = cached{d, time.Now().Add(h.ttl)}
		h.mu.Unlock()
	}
	return d, nil
}

func (h *Hook) eval(input map[string]any) (Decision, error) {
	out, _, err := h.prg.Eval(input)
	if err != nil {
		// An expression that cannot be evaluated for this input (a missing
		// header, say) denies: it never lets a request through.
		return Decision{Allow: false, Message: fmt.Sprintf("denied by %s: the expression failed: %v", h.name, err)}, nil
	}
	switch v := out.Value().(type) {
	case bool:
		return Decision{Allow: v}, nil
	default:
		m, err := out.ConvertToNative(mapType)
		if err != nil {
			return Decision{}, fmt.Errorf("%w: %s: the expression gave %s, not a bool or a map", ErrUnavailable, h.name, out.Type())
		}
		raw, _ := json.Marshal(m)
		var d Decision
		if err := json.Unmarshal(raw, &d); err != nil {
			return Decision{}, fmt.Errorf("%w: %s: %v", ErrUnavailable, h.name, err)
		}
		return d, nil
	}
}

var mapType = reflect.TypeOf(map[string]any{})

func (h *Hook) call(ctx context.Context, input map[string]any) (Decision, error) {
	body, _ := json.Marshal(input)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.webhook.URL, bytes.NewReader(body))
	if err != nil {
		return Decision{}, fmt.Errorf("%w: %s: %v", ErrUnavailable, h.name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range h.webhook.Headers {
		req.Header.Set(k, v)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return Decision{}, fmt.Errorf("%w: %s webhook %s: %v", ErrUnavailable, h.name, h.webhook.URL, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return Decision{}, fmt.Errorf("%w: %s webhook %s answered %d", ErrUnavailable, h.name, h.webhook.URL, resp.StatusCode)
	}
	var d struct {
		Decision
		Decision2 *bool `json:"decision"` // custom_key_generate's LiteLLM spelling
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return Decision{}, fmt.Errorf("%w: %s webhook %s: answer is not JSON: %v", ErrUnavailable, h.name, h.webhook.URL, err)
	}
	if d.Decision2 != nil {
		d.Allow = *d.Decision2
	}
	return d.Decision, nil
}

// callPython runs the Python function. For custom_auth input holds "key"
// and "request" (method, url, path, query, headers, body); the function
// gets (request, api_key) and allows by returning a UserAPIKeyAuth, whose
// fields become the Decision's, and refuses by raising. For
// custom_key_generate input holds "request" (the /key/generate body); the
// function gets a GenerateKeyRequest and answers {"decision", "message"}
// (decision defaults to True, as in LiteLLM). Anything else it returns is
// a refusal; a timeout or a dead worker is ErrUnavailable.
func (h *Hook) callPython(ctx context.Context, input map[string]any) (Decision, error) {
	py := h.python
	args := map[string]any{"data": input["request"]}
	if py.Kind == "auth" {
		args = map[string]any{"api_key": input["key"], "request": input["request"]}
	}
	res, err := py.Pool.Call(ctx, py.Func, py.Kind, args)
	var raised *pyhook.Raised
	switch {
	case errors.As(err, &raised):
		msg := raised.Message
		if raised.Status >= 400 && raised.Status <= 599 {
			// LiteLLM's auth passes an HTTPException's status_code and
			// detail, a ProxyException's code and message, as they are.
			if msg == "" {
				msg = fmt.Sprintf("%s raised %s", py.Func, raised.Type)
			}
			return Decision{Allow: false, Message: msg, Raised: true, Status: raised.Status}, nil
		}
		if msg == "" {
			msg = fmt.Sprintf("%s raised %s", py.Func, raised.Type)
		}
		if py.Kind == "auth" {
			msg = "Authentication Error, " + msg
		}
		return Decision{Allow: false, Message: msg, Raised: true}, nil
	case err != nil:
		return Decision{}, fmt.Errorf("%w: %s: %v", ErrUnavailable, h.name, err)
	}
	if py.Kind == "auth" {
		var d Decision
		if len(res.Value) == 0 || res.Value[0] != '{' {
			return Decision{Allow: false, Message: fmt.Sprintf("denied by %s: %s returned a %s, not a UserAPIKeyAuth", h.name, py.Func, res.Type)}, nil
		}
		value, why := wholeInts(res.Value, "rpm_limit", "tpm_limit", "max_parallel_requests")
		if why != "" {
			return Decision{Allow: false, Message: fmt.Sprintf("denied by %s: %s returned a UserAPIKeyAuth whose %s", h.name, py.Func, why)}, nil
		}
		if json.Unmarshal(value, &d) != nil {
			return Decision{Allow: false, Message: fmt.Sprintf("denied by %s: %s returned a %s, not a UserAPIKeyAuth", h.name, py.Func, res.Type)}, nil
		}
		d.Allow, d.Message = true, ""
		return d, nil
	}
	var out struct {
		Decision json.RawMessage `json:"decision"`
		Message  *string         `json:"message"`
	}
	if len(res.Value) == 0 || res.Value[0] != '{' || json.Unmarshal(res.Value, &out) != nil {
		return Decision{Allow: false, Message: fmt.Sprintf("refused by %s: %s returned a %s, not a dict", h.name, py.Func, res.Type)}, nil
	}
	// LiteLLM: decision = result.get("decision", True); refuse if not
	// decision. An absent key allows; a present one allows only when truthy
	// (None, False, 0, "", [] and {} refuse).
	d := Decision{Allow: out.Decision == nil || truthy(out.Decision)}
	if out.Message != nil {
		d.Message = *out.Message
	}
	if !d.Allow && d.Message == "" {
		d.Message = "Authentication Failed - Custom Auth Rule"
	}
	return d, nil
}

// truthy is Python's truth value of a JSON value (as the bootstrap wrote
// it): null, false, 0, "", [] and {} are false, anything else true.
func truthy(v json.RawMessage) bool {
	var x any
	if json.Unmarshal(v, &x) != nil {
		return false
	}
	switch t := x.(type) {
	case nil:
		return false
	case bool:
		return t
	case float64:
		return t != 0
	case string:
		return t != ""
	case []any:
		return len(t) > 0
	case map[string]any:
		return len(t) > 0
	}
	return false
}

// wholeInts rewrites the named integer fields of a JSON object given as
// whole floats (1e6, 100.0: what pydantic accepts for an int) as integers.
// A non-whole number is refused: why names the field and the value.
func wholeInts(obj json.RawMessage, fields ...string) (json.RawMessage, string) {
	var m map[string]json.RawMessage
	if json.Unmarshal(obj, &m) != nil {
		return obj, ""
	}
	changed := false
	for _, f := range fields {
		v, ok := m[f]
		if !ok || len(v) == 0 || v[0] == 'n' || v[0] == '"' {
			continue
		}
		var n json.Number
		if json.Unmarshal(v, &n) != nil {
			continue
		}
		if _, err := n.Int64(); err == nil {
			continue
		}
		x, err := n.Float64()
		if err != nil || x != math.Trunc(x) || math.Abs(x) > 1<<53 {
			return obj, fmt.Sprintf("%s is %s, not a whole number (up to 2^53)", f, n)
		}
		m[f] = json.RawMessage(strconv.FormatInt(int64(x), 10))
		changed = true
	}
	if !changed {
		return obj, ""
	}
	out, err := json.Marshal(m)
	if err != nil {
		return obj, ""
	}
	return out, ""
}
