package router

import (
	"math"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

func dep(name, model string, weight float64, rpm int64) config.Deployment {
	return config.Deployment{ModelName: name, Provider: "openai", Model: model, APIBase: "http://127.0.0.1:1/v1", Weight: weight, RPM: rpm, ID: name + "/" + model}
}

func TestGroupLookup(t *testing.T) {
	r, err := New([]config.Deployment{
		dep("gpt-4", "a", 0, 0),
		dep("openai/*", "*", 0, 0),
		dep("*", "", 0, 0),
	}, map[string]string{"gpt-3.5-turbo": "gpt-4"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ model, group string }{
		{"gpt-4", "gpt-4"},
		{"gpt-3.5-turbo", "gpt-4"},
		{"openai/gpt-4o", "openai/*"},
		{"anything", "*"},
	}
	for _, tt := range tests {
		g, ok := r.Group(tt.model)
		if !ok || g.Name != tt.group {
			t.Errorf("Group(%q) = %v, want %q", tt.model, g, tt.group)
		}
	}
}

func TestUnknownModelAndBadAlias(t *testing.T) {
	r, err := New([]config.Deployment{dep("gpt-4", "a", 0, 0)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Group("gpt-5"); ok {
		t.Error("unknown model found")
	}
	if _, err := New([]config.Deployment{dep("gpt-4", "a", 0, 0)}, map[string]string{"x": "nope"}); err == nil {
		t.Error("alias to an unknown model accepted")
	}
}

// TestWeightedShuffle: with weights 1:3 over 20,000 picks, each share is
// within 2 percentage points of its weight (the binomial standard deviation
// is 0.3 points, so this fails only on a real bias).
func TestWeightedShuffle(t *testing.T) {
	tests := []struct {
		name string
		deps []config.Deployment
	}{
		{"weight", []config.Deployment{dep("g", "a", 1, 0), dep("g", "b", 3, 0)}},
		{"rpm", []config.Deployment{dep("g", "a", 0, 100), dep("g", "b", 0, 300)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(tt.deps, nil)
			if err != nil {
				t.Fatal(err)
			}
			g, _ := r.Group("g")
			counts := map[string]int{}
			const n = 20000
			for range n {
				counts[g.Pick().D.Model]++
			}
			if share := float64(counts["b"]) / n; math.Abs(share-0.75) > 0.02 {
				t.Fatalf("share of b = %.3f, want 0.75±0.02 (%v)", share, counts)
			}
		})
	}
}
