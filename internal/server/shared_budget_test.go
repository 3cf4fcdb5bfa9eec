package server

import (
	"context"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// TestReplicasShareBudgets: three gateways on one PostgreSQL and one Redis.
// A key whose budget covers 100 requests, hammered on all three at once,
// gets at most 100 through, and the recorded spend equals what the upstream
// served. Without shared holds each replica would admit up to 100. The
// gateways enforce budgets strictly: on a busy machine a Redis call can miss
// its deadline, and a strict replica then refuses (503, retryable) rather
// than spend its share; in default mode the share bound applies
// (TestRedisCutKeepsBudgets).
func TestReplicasShareBudgets(t *testing.T) {
	r := replicas(t, 3, rigSpec{name: "budget", postgres: true, redis: true, mock: mockupstream.Options{Delay: 5 * time.Millisecond}},
		pricedConfig+"  redis_url: {{REDIS}}\nlitellm_settings:\n  budget_enforcement: strict\n", Options{ResyncInterval: 100 * time.Millisecond})
	urls, st := r.urls, r.st
	r.key(t, "sk-shared-budget-key", `"max_budget": 0.03`) // 100 × 3e-4
	var ok, refused, unavailable atomic.Int64
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				switch code, body := send(t, urls[i%3]+"/v1/chat/completions", "sk-shared-budget-key", chat3); {
				case code == 200:
					ok.Add(1)
				case code == 400:
					refused.Add(1)
				case code == 503 && strings.Contains(body, "budget_unavailable"):
					unavailable.Add(1) // a deadline missed: Redis could not vouch for the budget
				default:
					t.Errorf("status %d", code)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d served, %d refused (budget), %d refused (Redis could not vouch)", ok.Load(), refused.Load(), unavailable.Load())
	if ok.Load() > 100 || ok.Load() < 90 {
		t.Fatalf("three replicas let %d requests through a budget for 100 (%d refused, %d without Redis)", ok.Load(), refused.Load(), unavailable.Load())
	}
	r.flush()
	served := r.mock.Stats().Requests
	k, err := st.GetKey(context.Background(), sha("sk-shared-budget-key"))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(k.Spend-float64(served)*0.0003) > 1e-9 || k.Spend > 0.03+1e-12 {
		t.Fatalf("recorded spend %v for %d served requests (budget 0.03)", k.Spend, served)
	}
	_, total, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha("sk-shared-budget-key")})
	if int64(total) != served {
		t.Fatalf("%d spend logs for %d served requests", total, served)
	}
}
