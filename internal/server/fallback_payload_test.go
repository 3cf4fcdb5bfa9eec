package server

import (
	"testing"
)

// TestFallbackPayloadModelGroupIsTheAnsweringGroup: after a fallback the
// callback payload's model_group is the group that answered, as on the
// spend row (model_group "backup", beside the backup's deployment as
// model_id), as LiteLLM's payload of the fallback call; the counts
// (retries 1, fallbacks 1) are right.
func TestFallbackPayloadModelGroupIsTheAnsweringGroup(t *testing.T) {
	st := sqliteStore(t)
	for _, tc := range []struct {
		model             string
		retries, fallback float64
		group             string
	}{{"flaky", 1, 0, "flaky"}, {"down", 1, 1, "backup"}} {
		out := moneyCase(t, st, true, func(t *testing.T, url, key string, _ func()) int { return moneyChat(t, url, key, tc.model, false) })
		if len(out.payloads) != 1 || len(out.rows) != 1 {
			t.Fatalf("%s: %d payloads, %d rows", tc.model, len(out.payloads), len(out.rows))
		}
		p := out.payloads[0]
		if p["retries"] != tc.retries || p["fallbacks"] != tc.fallback {
			t.Errorf("%s: retries %v fallbacks %v, want %v %v", tc.model, p["retries"], p["fallbacks"], tc.retries, tc.fallback)
		}
		if out.rows[0].ModelGroup != tc.group || p["model_group"] != tc.group {
			t.Errorf("%s: spend row model_group %q, payload model_group %v; want %q for both", tc.model, out.rows[0].ModelGroup, p["model_group"], tc.group)
		}
	}
}
