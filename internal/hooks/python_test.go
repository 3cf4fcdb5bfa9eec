package hooks

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/pyhook"
)

// TestPythonDecisionCache: a Python custom_auth's UserAPIKeyAuth becomes the
// Decision's fields; with cache_ttl a key's decision is reused (the
// function runs once), without it the function runs on every call.
func TestPythonDecisionCache(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed (.ci/run installs it)")
	}
	pool, err := pyhook.Start(pyhook.Options{Dir: "testdata", Funcs: []string{"counter.user_api_key_auth"}, Workers: 1, Timeout: 10 * time.Second, Setting: "general_settings.custom_auth"})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	in := func(key string) map[string]any {
		return map[string]any{"key": key, "request": map[string]any{"method": "POST", "path": "/v1/chat/completions"}}
	}
	for _, tt := range []struct {
		ttl       time.Duration
		sameCalls bool
	}{{0, false}, {time.Minute, true}} {
		h, err := New("general_settings.custom_auth", &Spec{Python: &PythonSpec{Pool: pool, Func: "counter.user_api_key_auth", Kind: "auth", CacheTTL: tt.ttl}})
		if err != nil {
			t.Fatal(err)
		}
		a, err := h.Decide(context.Background(), in("sk-counted"), "sk-counted")
		if err != nil {
			t.Fatal(err)
		}
		b, err := h.Decide(context.Background(), in("sk-counted"), "sk-counted")
		if err != nil {
			t.Fatal(err)
		}
		if !a.Allow || a.UserID != "u1" || a.TeamID != "t1" || a.KeyAlias != "alias" || a.UserRole != "proxy_admin" ||
			len(a.Models) != 1 || *a.MaxBudget != 5 || *a.RPMLimit != 7 {
			t.Fatalf("decision: %+v", a)
		}
		if same := a.Metadata["calls"] == b.Metadata["calls"]; same != tt.sameCalls {
			t.Errorf("ttl %s: calls %v then %v", tt.ttl, a.Metadata["calls"], b.Metadata["calls"])
		}
		d, err := h.Decide(context.Background(), in("sk-other"), "sk-other")
		if err != nil || d.Allow || !d.Raised || d.Message != "Authentication Error, unknown key" {
			t.Fatalf("another key: %+v %v", d, err)
		}
	}
}
