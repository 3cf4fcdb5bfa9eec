package server

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestEveryLimitOfAFullHierarchyEnforced: a request whose whole hierarchy
// is limited — global_max_parallel_requests; the key's rpm, tpm and
// parallel limits and its model_rpm_limit and model_tpm_limit; its user's,
// its team's, its team membership budget's, its organization budget's and
// its end user's rpm, tpm and parallel limits: 21 rules — is held to every
// one of them, the last added (the end user's rpm_limit of 2) included:
// the third request is refused with a 429 that names it, and does not
// reach the upstream. A ticket once held 16 rules and dropped the rest
// silently, so this request was never refused.
func TestEveryLimitOfAFullHierarchyEnforced(t *testing.T) {
	redisURL := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	for _, shared := range []bool{false, true} {
		t.Run(map[bool]string{false: "local", true: "redis"}[shared], func(t *testing.T) {
			if shared && redisURL == "" {
				t.Skip("TOLLGATE_TEST_REDIS_URL is not set")
			}
			extra, opts := "  global_max_parallel_requests: 100\n", Options{}
			if shared {
				extra += "  redis_url: " + redisURL + "\n"
				opts.RedisPrefix = "manyrules-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			}
			e := startSpendWith(t, sqliteStore(t), mockupstream.Options{}, "", extra, opts)
			const lim = `"rpm_limit": 100, "tpm_limit": 1000000, "max_parallel_requests": 100`
			for _, c := range [][2]string{
				{"/budget/new", `{"budget_id": "member-rl", ` + lim + `}`},
				{"/organization/new", `{"organization_id": "org-rl", "organization_alias": "Org", ` + lim + `}`},
				{"/user/new", `{"user_id": "ann-rl", ` + lim + `}`},
				{"/team/new", `{"team_id": "team-rl", "organization_id": "org-rl", ` + lim + `, "members_with_roles": [{"user_id": "ann-rl", "role": "user", "budget_id": "member-rl"}]}`},
				{"/customer/new", `{"user_id": "cust-rl", "rpm_limit": 2, "tpm_limit": 1000000, "max_parallel_requests": 100}`},
			} {
				if resp, out := e.post(t, c[0], "sk-1234", c[1]); resp.StatusCode != 200 {
					t.Fatalf("%s: %d %v", c[0], resp.StatusCode, out)
				}
			}
			resp, out := e.post(t, "/key/generate", "sk-1234", `{"user_id": "ann-rl", "team_id": "team-rl", `+lim+
				`, "model_rpm_limit": {"gpt-4": 100}, "model_tpm_limit": {"gpt-4": 1000000}}`)
			if resp.StatusCode != 200 {
				t.Fatalf("/key/generate: %d %v", resp.StatusCode, out)
			}
			key := out["key"].(string)
			body := `{"model":"gpt-4","user":"cust-rl","messages":[{"role":"user","content":"hi"}]}`
			for i := range 2 {
				if resp, body := sendH(t, e.url+"/v1/chat/completions", key, body); resp.StatusCode != 200 {
					t.Fatalf("request %d: %d %s", i+1, resp.StatusCode, body)
				}
			}
			up := e.mock.Stats().Requests
			resp3, body3 := sendH(t, e.url+"/v1/chat/completions", key, body)
			if resp3.StatusCode != 429 {
				t.Fatalf("third request: %d, want 429 for the end user's rpm_limit of 2 (the 19th of the request's 21 rules): %s", resp3.StatusCode, body3)
			}
			if _, msg := errMessage(t, body3); !strings.Contains(msg, "end user cust-rl") || !strings.Contains(msg, "2 requests per minute (rpm_limit)") {
				t.Fatalf("third request refused for another limit: %s", msg)
			}
			if e.mock.Stats().Requests != up {
				t.Error("the refused request reached the upstream")
			}
		})
	}
}
