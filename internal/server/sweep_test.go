package server

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// TestIdleBudgetPeriodsMove: a key, its user and its team with a "2s"
// budget period spend once and then see no traffic. Two replicas sweep
// every 200 ms: /key/info, /user/info and /team/info show budget_reset_at
// moving on and spend back at zero without a request. Before the sweep, a
// period moved only when the next request came.
func TestIdleBudgetPeriodsMove(t *testing.T) {
	t.Parallel() // each store its own, no Redis (waitBound)
	stores(t, func(t *testing.T, st store.Store) {
		t.Parallel()
		up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
		defer up.Close()
		cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL)))
		if err != nil {
			t.Fatal(err)
		}
		opts := Options{Store: st, ResyncInterval: 100 * time.Millisecond, BudgetSweepInterval: 200 * time.Millisecond}
		a, srvA := serveSrv(t, cfg, opts)
		_, _ = serveSrv(t, cfg, opts) // a second replica sweeping the same store
		for _, c := range []struct{ path, body string }{
			{"/user/new", `{"user_id": "idle-user", "max_budget": 1, "budget_duration": "2s"}`},
			{"/team/new", `{"team_id": "idle-team", "max_budget": 1, "budget_duration": "2s"}`},
			{"/key/generate", `{"key": "sk-idle-key", "user_id": "idle-user", "team_id": "idle-team", "max_budget": 1, "budget_duration": "2s"}`},
		} {
			if code, body := send(t, a+c.path, "sk-1234", c.body); code != 200 {
				t.Fatal(c.path, code, body)
			}
		}
		if code, body := send(t, a+"/v1/chat/completions", "sk-idle-key", chat3); code != 200 {
			t.Fatal(code, body)
		}
		srvA.writer.Flush()
		tests := []struct {
			name, url, field string
		}{
			{"key", a + "/key/info?key=sk-idle-key", "info"},
			{"user", a + "/user/info?user_id=idle-user", "user_info"},
			{"team", a + "/team/info?team_id=idle-team", "team_info"},
		}
		period := func(url, field string) (time.Time, float64) {
			var out map[string]map[string]any
			if code := getJSON(t, url, "sk-1234", &out); code != 200 {
				t.Errorf("%s: %d", url, code)
				return time.Time{}, -1
			}
			at, _ := time.Parse(time.RFC3339Nano, asStr(out[field]["budget_reset_at"]))
			spend, _ := out[field]["spend"].(float64)
			return at, spend
		}
		start := time.Now()
		for _, tt := range tests {
			first, _ := period(tt.url, tt.field)
			if first.IsZero() {
				t.Fatalf("%s has no budget_reset_at", tt.name)
			}
			// Two periods on, with no request in between: the sweep moved it.
			took, ok := within(20*time.Second, func() bool {
				at, spend := period(tt.url, tt.field)
				return at.After(first.Add(time.Second)) && at.After(time.Now()) && spend == 0
			})
			if !ok {
				at, spend := period(tt.url, tt.field)
				t.Fatalf("%s: budget_reset_at %v (first %v), spend %v: the idle period did not move", tt.name, at, first, spend)
			}
			t.Logf("%s: new period shown after %v", tt.name, took)
		}
		t.Logf("all three moved within %v", time.Since(start))
	})
}

func asStr(v any) string { s, _ := v.(string); return s }

// TestPeriodResetsOnce: replicas rolling a period over at nearly the same
// moment may compute different next reset times (a "2s" period seen at
// 10.9 s and at 11.1 s). The store resets only a period that has ended,
// so the second reset, and a late one, leave the new period's spend alone.
func TestPeriodResetsOnce(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		ctx := context.Background()
		dur := "2s"
		old := time.Now().Add(-time.Second).UTC().Truncate(time.Second)
		if err := st.CreateKey(ctx, &store.Key{TokenHash: "once", KeyName: "sk-...once", Limits: store.Limits{BudgetDuration: &dur, BudgetResetAt: &old}}); err != nil {
			t.Fatal(err)
		}
		next := old.Add(3 * time.Second)
		if err := st.ResetBudget(ctx, store.KindKey, "once", next); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if err := st.ApplySpend(ctx, []store.SpendLog{{RequestID: "once-1", KeyHash: "once", Cost: 1, StartedAt: now, EndedAt: now}}); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			next time.Time
		}{
			{"a replica that computed a later boundary", next.Add(time.Second)},
			{"a late duplicate", next},
			{"an earlier boundary", next.Add(-time.Second)},
		}
		for _, tt := range tests {
			if err := st.ResetBudget(ctx, store.KindKey, "once", tt.next); err != nil {
				t.Fatal(err)
			}
			k, err := st.GetKey(ctx, "once")
			if err != nil {
				t.Fatal(err)
			}
			if k.Spend != 1 || !k.BudgetResetAt.Equal(next) {
				t.Fatalf("%s reset again: spend %v, budget_reset_at %v (want 1, %v)", tt.name, k.Spend, k.BudgetResetAt, next)
			}
		}
	})
}
