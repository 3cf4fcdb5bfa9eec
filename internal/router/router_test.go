package router

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

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
	}, Settings{Aliases: map[string]string{"gpt-3.5-turbo": "gpt-4"}})
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
	r, err := New([]config.Deployment{dep("gpt-4", "a", 0, 0)}, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Group("gpt-5"); ok {
		t.Error("unknown model found")
	}
	// An alias to a model no deployment serves (one deleted through the
	// API, a typo) does not stop the router: it is reported, and requests
	// for it are told why.
	r, err = New([]config.Deployment{dep("gpt-4", "a", 0, 0)}, Settings{Aliases: map[string]string{"x": "nope"}})
	if err != nil {
		t.Fatal(err)
	}
	if why, _ := r.Unservable("x"); !strings.Contains(why, `"x" points at "nope"`) || len(r.Dangling()) != 1 {
		t.Errorf("dangling alias: Unservable %q, Dangling %v", why, r.Dangling())
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
			r, err := New(tt.deps, Settings{Health: NewHealth(nil)})
			if err != nil {
				t.Fatal(err)
			}
			g, _ := r.Group("g")
			counts := map[string]int{}
			const n = 20000
			for range n {
				t, _ := g.Pick(nil)
				counts[t.D.Model]++
			}
			if share := float64(counts["b"]) / n; math.Abs(share-0.75) > 0.02 {
				t.Fatalf("share of b = %.3f, want 0.75±0.02 (%v)", share, counts)
			}
		})
	}
}

func group(t *testing.T, set Settings, deps ...config.Deployment) (*Group, *Health) {
	t.Helper()
	if set.Health == nil {
		set.Health = NewHealth(nil)
	}
	r, err := New(deps, set)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := r.Group(deps[0].ModelName)
	return g, set.Health
}

func TestCooldown(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	h := NewHealth(nil)
	h.now = func() time.Time { return now }
	g, _ := group(t, Settings{Health: h, AllowedFails: 1, Cooldown: 5 * time.Second}, dep("g", "a", 0, 0), dep("g", "b", 0, 0))
	a := g.Targets[0]
	h.Start(g, a)(Failed, 0) // one failure is allowed
	if cool, _ := h.CoolingDown(a.D.ID); cool {
		t.Fatal("cooling down after one allowed failure")
	}
	h.Start(g, a)(Failed, 0)
	if cool, until := h.CoolingDown(a.D.ID); !cool || !until.Equal(now.Add(5*time.Second)) {
		t.Fatalf("two failures in a minute: cooling %v until %v", cool, until)
	}
	for range 50 {
		if p, _ := g.Pick(nil); p != g.Targets[1] {
			t.Fatal("a cooling deployment was picked")
		}
	}
	h.Start(g, g.Targets[1])(Failed, 0)
	h.Start(g, g.Targets[1])(Failed, 0)
	p, wait := g.Pick(nil)
	if p != nil || wait != 5*time.Second {
		t.Fatalf("all cooling: got %v, wait %v", p, wait)
	}
	now = now.Add(5 * time.Second)
	if p, _ := g.Pick(nil); p == nil {
		t.Fatal("cooldown did not end")
	}
}

// TestSingleDeploymentCooldown: a group's only deployment is spared the
// allowed_fails count (LiteLLM's single-deployment rule): it cools down only
// when every attempt it finished this minute failed and they are at least
// the threshold. A success in the minute, or a new minute, starts over.
func TestSingleDeploymentCooldown(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	h := NewHealth(nil)
	h.now = func() time.Time { return now }
	set := Settings{Health: h, AllowedFails: 3, Cooldown: 5 * time.Second, SingleDeploymentThreshold: 10}
	g, _ := group(t, set, dep("solo", "a", 0, 0))
	a := g.Targets[0]
	cooling := func() bool { c, _ := h.CoolingDown(a.D.ID); return c }

	h.Start(g, a)(Succeeded, 0)
	for range 50 { // far more than allowed_fails, but one success this minute
		h.Start(g, a)(Failed, 0)
	}
	if cooling() {
		t.Fatal("cooled down with a success among its attempts this minute")
	}
	now = now.Add(time.Minute) // a new minute: only failures from here
	for i := range 9 {
		h.Start(g, a)(Failed, 0)
		if cooling() {
			t.Fatalf("cooled down after %d failures, threshold 10", i+1)
		}
	}
	h.Start(g, a)(Abandoned, 0) // a client leaving is neither
	h.Start(g, a)(Failed, 0)
	if c, until := h.CoolingDown(a.D.ID); !c || !until.Equal(now.Add(5*time.Second)) {
		t.Fatalf("10 failures of 10: cooling %v until %v", c, until)
	}
	if p, wait := g.Pick(nil); p != nil || wait != 5*time.Second {
		t.Fatalf("cooling: picked %v, wait %v", p, wait)
	}

	// Two deployments: the threshold does not apply, allowed_fails does.
	pair, _ := group(t, set, dep("pair", "a", 0, 0), dep("pair", "b", 0, 0))
	b := pair.Targets[0]
	for range 4 {
		h.Start(pair, b)(Failed, 0)
	}
	if c, _ := h.CoolingDown(b.D.ID); !c {
		t.Fatal("a deployment with a sibling was not cooled down after more than allowed_fails")
	}

	// No threshold (router_settings.allowed_fails set): allowed_fails
	// applies to the only deployment too.
	set.SingleDeploymentThreshold = 0
	one, _ := group(t, set, dep("one", "a", 0, 0))
	for range 4 {
		h.Start(one, one.Targets[0])(Failed, 0)
	}
	if c, _ := h.CoolingDown(one.Targets[0].D.ID); !c {
		t.Fatal("without a threshold the only deployment was not cooled down after more than allowed_fails")
	}
}

func TestOrderAndTried(t *testing.T) {
	first, second := dep("g", "a", 0, 0), dep("g", "b", 0, 0)
	first.Order, second.Order = 1, 2
	g, h := group(t, Settings{AllowedFails: 0, Cooldown: time.Minute}, first, second)
	for range 20 {
		if p, _ := g.Pick(nil); p.D.Model != "a" {
			t.Fatal("order 2 picked while order 1 is available")
		}
	}
	if p, _ := g.Pick(g.Targets[:1]); p.D.Model != "b" {
		t.Fatal("a failed deployment was not skipped on retry")
	}
	h.SetHealthy(g.Targets[0].D.ID, false)
	if p, _ := g.Pick(nil); p.D.Model != "b" {
		t.Fatal("an unhealthy deployment was picked")
	}
}

func TestStrategies(t *testing.T) {
	cheap, dear := dep("g", "a", 0, 0), dep("g", "b", 0, 0)
	t.Run("least-busy", func(t *testing.T) {
		g, h := group(t, Settings{Strategy: LeastBusy}, cheap, dear)
		h.Start(g, g.Targets[0]) // a has one in flight
		for range 20 {
			if p, _ := g.Pick(nil); p.D.Model != "b" {
				t.Fatal("the busier deployment was picked")
			}
		}
	})
	t.Run("latency", func(t *testing.T) {
		g, h := group(t, Settings{Strategy: LatencyBased}, cheap, dear)
		h.State(g.Targets[0].D.ID).latency.Store(int64(50 * time.Millisecond))
		h.State(g.Targets[1].D.ID).latency.Store(int64(10 * time.Millisecond))
		if p, _ := g.Pick(nil); p.D.Model != "b" {
			t.Fatal("the slower deployment was picked")
		}
	})
	t.Run("cost", func(t *testing.T) {
		c, d := cheap, dear
		lo, hi := 1e-6, 5e-6
		c.InputCostPerToken, d.InputCostPerToken = &hi, &lo
		g, _ := group(t, Settings{Strategy: CostBased}, c, d)
		if p, _ := g.Pick(nil); p.D.Model != "b" {
			t.Fatal("the dearer deployment was picked")
		}
	})
	t.Run("usage", func(t *testing.T) {
		a, b := dep("g", "a", 0, 2), dep("g", "b", 0, 100)
		g, h := group(t, Settings{Strategy: UsageBased}, a, b)
		h.Start(g, g.Targets[0])(Succeeded, 0)
		h.Start(g, g.Targets[0])(Succeeded, 0) // a's rpm of 2 is used up
		for range 20 {
			if p, _ := g.Pick(nil); p.D.Model != "b" {
				t.Fatal("a deployment past its rpm was picked")
			}
		}
	})
	if _, err := New([]config.Deployment{cheap}, Settings{Strategy: "fastest"}); err == nil {
		t.Error("an unknown strategy was accepted")
	}
}

// TestUnservedProviderIsDisabled: a deployment whose provider Tollgate does
// not serve is left out with its reason, not an error; its group serves with
// the deployments left, and a group with none left says why.
func TestUnservedProviderIsDisabled(t *testing.T) {
	t.Setenv("VERTEXAI_PROJECT", "")
	sagemaker := config.Deployment{ModelName: "claude", Provider: "sagemaker", Model: "my-endpoint", ID: "sagemaker-1"}
	vertex := config.Deployment{ModelName: "mixed", Provider: "vertex_ai", Model: "gemini-1.5-pro", ID: "vertex-1", AccessGroups: []string{"beta"}}
	r, err := New([]config.Deployment{sagemaker, vertex, dep("mixed", "a", 0, 0)},
		Settings{Aliases: map[string]string{"claude-latest": "claude"}})
	if err != nil {
		t.Fatalf("a config with an unserved provider does not build: %v", err)
	}
	tests := []struct {
		id, reason string
	}{
		{"sagemaker-1", `provider "sagemaker" is not served by Tollgate`},
		{"vertex-1", "needs litellm_params.vertex_project"}, // served, but not usable as configured
		{"mixed/a", ""},
	}
	for _, tt := range tests {
		if got := r.DisabledReason(tt.id); !strings.Contains(got, tt.reason) || (tt.reason == "") != (got == "") {
			t.Errorf("DisabledReason(%s) = %q, want %q", tt.id, got, tt.reason)
		}
	}
	if g, ok := r.Group("mixed"); !ok || len(g.Targets) != 1 || g.Targets[0].D.ID != "mixed/a" {
		t.Fatalf("mixed group = %+v", g)
	}
	if _, ok := r.Group("claude"); ok {
		t.Fatal("a group with no deployment left is served")
	}
	for _, model := range []string{"claude", "claude-latest"} {
		if why, _ := r.Unservable(model); !strings.Contains(why, "sagemaker") {
			t.Errorf("Unservable(%s) = %q", model, why)
		}
	}
	if why, _ := r.Unservable("mixed"); why != "" {
		t.Errorf("Unservable(mixed) = %q", why)
	}
	if len(r.Disabled()) != 2 || slices.Contains(r.Names(), "claude") {
		t.Errorf("disabled %d, names %v", len(r.Disabled()), r.Names())
	}
}
