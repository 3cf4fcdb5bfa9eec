package config

import (
	"strings"
	"testing"
)

// TestPassThroughEndpointsAreChecked: a bad pass_through_endpoints entry
// stops the start with its place and what is wrong; a good one loads with
// its os.environ/ header references resolved, whole or as one word.
func TestPassThroughEndpointsAreChecked(t *testing.T) {
	t.Setenv("TG_PT_TOKEN", "secret-1")
	tests := []struct {
		name, entry, want string
	}{
		{"no path", `{target: "http://x"}`, "path must be an absolute path"},
		{"relative path", `{path: rerank, target: "http://x"}`, "path must be an absolute path"},
		{"pattern in path", `{path: "/x/{id}", target: "http://x"}`, "must be a plain path"},
		{"trailing slash", `{path: "/x/", target: "http://x"}`, "must be a plain path"},
		{"provider prefix", `{path: /openai/custom, target: "http://x"}`, "Tollgate's own pass-through"},
		{"bad target", `{path: /x, target: "ftp://x"}`, "is not an http(s) URL"},
		{"bad header name", `{path: /x, target: "http://x", headers: {"a b": c}}`, "not a valid header name"},
		{"negative cost", `{path: /x, target: "http://x", auth: true, cost_per_request: -1}`, "must not be negative"},
		{"typo", `{path: /x, target: "http://x", include_subpaths: true}`, `did you mean "include_subpath"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte("general_settings:\n  pass_through_endpoints:\n    - "+tt.entry+"\n"))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "c.yaml:") {
				t.Fatalf("err = %v, want %q with a place", err, tt.want)
			}
		})
	}
	dup := "general_settings:\n  pass_through_endpoints:\n    - {path: /x, target: 'http://x'}\n    - {path: /x, target: 'http://y'}\n"
	if _, err := Parse("c.yaml", []byte(dup)); err == nil || !strings.Contains(err.Error(), "configured twice") {
		t.Fatalf("duplicate path: %v", err)
	}
	cfg, err := Parse("c.yaml", []byte(`general_settings:
  pass_through_endpoints:
    - path: /v1/rerank
      target: https://api.cohere.com/v1/rerank
      headers: {Authorization: "bearer os.environ/TG_PT_TOKEN", X-Whole: os.environ/TG_PT_TOKEN, X-Plain: as is}
      auth: true
      cost_per_request: 0.5
`))
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.GeneralSettings.PassThroughEndpoints[0]
	if e.Headers["Authorization"] != "bearer secret-1" || e.Headers["X-Whole"] != "secret-1" || e.Headers["X-Plain"] != "as is" ||
		!e.Auth || e.CostPerRequest == nil || *e.CostPerRequest != 0.5 || e.Target != "https://api.cohere.com/v1/rerank" {
		t.Fatalf("endpoint = %+v", e)
	}
}
