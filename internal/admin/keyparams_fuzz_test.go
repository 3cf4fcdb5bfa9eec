package admin

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/store"
)

// FuzzKeyParams: any /key/generate body that decodes is refused by
// validate or fills a key that is usable: its expiry and budget reset, when
// set, lie after now.
func FuzzKeyParams(f *testing.F) {
	f.Add([]byte(`{"models":["gpt-4"],"max_budget":10,"budget_duration":"30d","duration":"1h","rpm_limit":5,"tpm_limit":100,"max_parallel_requests":2,"model_max_budget":{"gpt-4":0.5,"o1":{"budget_limit":1,"time_period":"1d"}},"model_rpm_limit":{"gpt-4":3},"metadata":{"a":1},"key_alias":"k","key":"sk-custom-123"}`))
	f.Add([]byte(`{"duration":"99999999999999s","budget_duration":"1mo","blocked":true,"user_id":"u","team_id":"t","aliases":{"a":"b"}}`))
	now := time.Date(2026, 11, 23, 15, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		var p keyParams
		if json.Unmarshal(body, &p) != nil {
			return
		}
		if p.validate() != nil {
			return
		}
		obj, err := jsonbody.Scan(body)
		if err != nil {
			return
		}
		var k store.Key
		if err := p.fill(&k, obj.Has, now); err != nil {
			t.Fatalf("validated params refused by fill: %v (%q)", err, body)
		}
		if k.Expires != nil && !k.Expires.After(now) {
			t.Fatalf("duration %q made a key expiring at %v, not after %v", *p.Duration, k.Expires, now)
		}
		if k.BudgetResetAt != nil && !k.BudgetResetAt.After(now) {
			t.Fatalf("budget_duration %q resets at %v, not after %v", *p.BudgetDuration, k.BudgetResetAt, now)
		}
	})
}
