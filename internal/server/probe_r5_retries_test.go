package server

import (
	"testing"
)

// TestProbeFallbackPayloadModelGroup: after a fallback, the spend row
// names the group that answered (model_group "backup", with the backup's
// deployment as model_id), but the callback payload names the group asked
// for ("down") beside that same backup deployment's model_id: the payload
// contradicts the row and pairs a deployment with a group it is not in.
// LiteLLM's payload after a fallback carries the fallback call's
// model_group. The counts (retries 1, fallbacks 1) are right.
func TestProbeFallbackPayloadModelGroup(t *testing.T) {
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
