package config

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
)

// PassThroughEndpoint is one entry of LiteLLM's
// general_settings.pass_through_endpoints: requests to Path (and, with
// IncludeSubpath, below it) are forwarded to Target with Headers set.
type PassThroughEndpoint struct {
	Path   string    `yaml:"path"`
	Target EnvString `yaml:"target"`
	// Headers are set on every forwarded request, over the client's.
	Headers map[string]HeaderValue `yaml:"headers"`
	// ForwardHeaders passes the client's headers on (without the virtual
	// key when Auth is on); otherwise only Content-Type and Accept are.
	ForwardHeaders bool `yaml:"forward_headers"`
	// IncludeSubpath also forwards Path/<rest> to Target/<rest>.
	IncludeSubpath bool `yaml:"include_subpath"`
	// Auth requires a virtual key, whose limits and budgets then apply;
	// without it the endpoint is open, as in LiteLLM.
	Auth bool `yaml:"auth"`
	// CostPerRequest is booked for every call (only when Auth is on: an
	// open endpoint has no key to charge).
	CostPerRequest *float64 `yaml:"cost_per_request"`
}

// HeaderValue is a header value that may name the environment: a whole
// `os.environ/NAME` (or `$NAME`) reference as elsewhere, or LiteLLM's
// `Bearer os.environ/NAME`, where the reference is one word of the value.
type HeaderValue string

// UnmarshalYAML resolves the references.
func (h *HeaderValue) UnmarshalYAML(ctx context.Context, node ast.Node) error {
	var raw string
	if err := yaml.NodeToValue(node, &raw); err != nil {
		return err
	}
	words := strings.Split(raw, " ")
	for i, w := range words {
		name, ok := envRef(w)
		if !ok {
			continue
		}
		v, set := os.LookupEnv(name)
		if !set {
			warn(ctx, node, fmt.Sprintf("environment variable %s is not set; %q resolves to an empty string", name, w))
		}
		words[i] = v
	}
	*h = HeaderValue(strings.Join(words, " "))
	return nil
}

// reservedPassThrough are the path prefixes of Tollgate's own provider
// pass-through routes, which a configured endpoint may not take.
var reservedPassThrough = []string{"/openai", "/anthropic", "/gemini", "/cohere", "/vertex_ai", "/bedrock"}

// passThrough checks general_settings.pass_through_endpoints: each path an
// absolute path of its own, not a provider prefix; each target an http(s)
// URL; header names and values that can go on the wire; no negative cost.
func (n *normalizer) passThrough() error {
	seen := map[string]bool{}
	for i, e := range n.cfg.GeneralSettings.PassThroughEndpoints {
		at := fmt.Sprintf("$.general_settings.pass_through_endpoints[%d]", i)
		p := e.Path
		switch {
		case p == "" || p[0] != '/' || p == "/":
			return n.errorf(at, "pass_through_endpoints[%d].path must be an absolute path below / (got %q)", i, p)
		case strings.ContainsAny(p, "{}?#* \t") || strings.Contains(p, "//") || strings.HasSuffix(p, "/"):
			return n.errorf(at+".path", "pass_through_endpoints[%d].path %q must be a plain path: no {, }, ?, #, *, spaces, empty segments or trailing /", i, p)
		case seen[p]:
			return n.errorf(at+".path", "pass_through_endpoints[%d].path %q is configured twice", i, p)
		}
		for _, r := range reservedPassThrough {
			if p == r || strings.HasPrefix(p, r+"/") {
				return n.errorf(at+".path", "pass_through_endpoints[%d].path %q is under %s/*, Tollgate's own pass-through to that provider", i, p, r)
			}
		}
		seen[p] = true
		if e.Target == "" {
			// An unset os.environ/ target (warned about already): the
			// file loads, and the endpoint answers 503 until it is set.
			n.warnings = append(n.warnings, fmt.Sprintf("%s: pass_through_endpoints[%d] (%s) has no target; it answers 503 until one is configured", n.at(at), i, p))
			continue
		}
		u, err := url.Parse(string(e.Target))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return n.errorf(at+".target", "pass_through_endpoints[%d].target %q is not an http(s) URL", i, string(e.Target))
		}
		hs := make(map[string]string, len(e.Headers))
		for k, v := range e.Headers {
			hs[k] = string(v)
		}
		if he := checkHeaders(hs, false); he != nil {
			return n.errorf(at+".headers", "pass_through_endpoints[%d].headers: %s: %s", i, he.name, he.why)
		}
		if c := e.CostPerRequest; c != nil {
			if *c < 0 {
				return n.errorf(at+".cost_per_request", "pass_through_endpoints[%d].cost_per_request must not be negative", i)
			}
			if !e.Auth && *c > 0 {
				n.warnings = append(n.warnings, fmt.Sprintf("%s: pass_through_endpoints[%d] (%s) has cost_per_request but not auth: true; an open endpoint has no key to charge, so nothing is booked", n.at(at), i, p))
			}
		}
	}
	return nil
}
