package gateway

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/ratelimit"
)

// TestEveryBucketIsItsOwnRule: 40 localRateLimit buckets make 40 rules on
// a request's ticket, each under its own name (localRateLimit[i]): the
// name keys a bucket's counters, and buckets past the 32 names built once
// all shared one ("localRateLimit") before.
func TestEveryBucketIsItsOwnRule(t *testing.T) {
	l := &RateLimits{}
	for range 40 {
		l.Buckets = append(l.Buckets, config.LocalRateLimit{MaxTokens: 10, TokensPerFill: 1, FillInterval: time.Second, Type: "requests", Scope: "global"})
	}
	var d ratelimit.Draft
	l.rules(&auth.Principal{}, &request{}, nil, "m", &d)
	rules := d.Ticket().Rules()
	if len(rules) != 40 {
		t.Fatalf("40 buckets made %d rules", len(rules))
	}
	seen := map[string]bool{}
	for i, r := range rules {
		if seen[r.Name] {
			t.Fatalf("rule %d's name %q is another bucket's: they would share counters", i, r.Name)
		}
		seen[r.Name] = true
	}
	if rules[39].Name != "localRateLimit[39]" {
		t.Fatalf("the 40th bucket is named %q", rules[39].Name)
	}
}
