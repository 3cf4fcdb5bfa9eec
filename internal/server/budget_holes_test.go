package server

import (
	"context"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestCappedEmbeddingIsRefused (found by review): docs/spend-and-limits.md
// step 3: "Embeddings, whose output cannot be capped, are refused the same
// way" while another request of the budget is uncovered. Here a chat
// request is the key's uncovered one (long answer, short learned
// estimate) and an embedding arrives while it runs: it must be refused,
// not admitted on the crumbs that remain (which let spend pass the budget
// by two requests' overshoot), in process and on Redis.
func TestCappedEmbeddingIsRefused(t *testing.T) {
	// Not parallel with other tests: the redis case keeps the default
	// 500 ms hold deadline. Its two cases overlap (each 2 s stream).
	t.Run("in process", func(t *testing.T) {
		t.Parallel()
		probeCappedEmbedding(t, "", Options{})
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		u := os.Getenv("TOLLGATE_TEST_REDIS_URL")
		if u == "" {
			t.Skip("TOLLGATE_TEST_REDIS_URL is not set")
		}
		probeCappedEmbedding(t, "  redis_url: "+u+"\n", Options{RedisPrefix: "probe-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatInt(rigCount.Add(1), 36)})
	})
}

func probeCappedEmbedding(t *testing.T, extra string, opts Options) {
	yaml := `model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4, api_base: "{{UP}}", headers: {x-mock-completion-tokens: "400", x-mock-chunks: "40", x-mock-chunk-delay-ms: "50"}}
  - model_name: emb
    litellm_params: {model: openai/emb-x, api_base: "{{UP}}", input_cost_per_token: 0.00001, output_cost_per_token: 0}
general_settings:
  master_key: sk-1234
` + extra
	e := startConfigWith(t, sqliteStore(t), mockupstream.Options{}, yaml, opts)
	free := newKey(t, e, `{}`)
	short := `{"model":"gpt-4","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`
	for range 1 { // the deployment learns one-token answers (one is enough: none came before)
		if resp, out := e.post(t, "/v1/chat/completions", free, short); resp.StatusCode != 200 {
			t.Fatalf("teaching: %d %v", resp.StatusCode, out)
		}
	}
	const budget = 0.01
	key := newKey(t, e, `{"max_budget": 0.01}`)
	before := e.mock.Stats().Requests
	var wg sync.WaitGroup
	var uStatus int
	var uCost float64
	wg.Add(1)
	go func() { // the uncovered one: a stream, no max_tokens, 400 tokens
		defer wg.Done()
		req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		uStatus = resp.StatusCode
		t.Logf("stream: capped %q cost %q", resp.Header.Get("x-tollgate-output-capped"), resp.Header.Get("x-tollgate-response-cost"))
	}()
	for deadline := time.Now().Add(30 * time.Second); e.mock.Stats().Requests == before; {
		if time.Now().After(deadline) {
			t.Fatal("the stream never reached the upstream")
		}
		time.Sleep(5 * time.Millisecond)
	}
	emb := `{"model":"emb","input":"` + strings.Repeat("abcd ", 4000) + `"}`
	resp, out := e.post(t, "/v1/embeddings", key, emb)
	embCost, _ := strconv.ParseFloat(resp.Header.Get("x-tollgate-response-cost"), 64)
	wg.Wait()
	e.srv.writer.Flush()
	k, err := e.store.GetKey(context.Background(), sha(key))
	if err != nil {
		t.Fatal(err)
	}
	uCost = k.Spend - embCost
	t.Logf("stream %d (cost %v); embedding %d cost %v; key spend %v on budget %v", uStatus, uCost, resp.StatusCode, embCost, k.Spend, budget)
	if resp.StatusCode == 200 {
		t.Errorf("an embedding was admitted while the key's uncovered request ran (docs: refused): %v", out)
	}
	if k.Spend > budget+max(uCost, embCost) {
		t.Errorf("spend %v passes budget %v by more than one request's cost (%v, %v)", k.Spend, budget, uCost, embCost)
	}
}

// TestTeamAdminCannotLiftMemberBudget (found by review): a team admin may
// not set a member's budget_id (teams.go checkMemberBudgets), and her
// max_budget_in_team must not shadow the budget the proxy_admin gave the
// membership (auth.Snapshot.MemberBudget takes the lower).
func TestTeamAdminCannotLiftMemberBudget(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, gpt4(5, ""))
	for _, c := range [][2]string{
		{"/budget/new", `{"budget_id": "tiny", "max_budget": 0.0001}`},
		{"/user/new", `{"user_id": "ann"}`},
		{"/user/new", `{"user_id": "bob", "user_role": "internal_user"}`},
		{"/team/new", `{"team_id": "sq", "members_with_roles": [{"user_id": "ann", "role": "user", "budget_id": "tiny"}, {"user_id": "bob", "role": "admin"}]}`},
	} {
		if resp, out := e.post(t, c[0], "sk-1234", c[1]); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", c[0], resp.StatusCode, out)
		}
	}
	ann := newKey(t, e, `{"user_id": "ann", "team_id": "sq"}`)
	bob := newKey(t, e, `{"user_id": "bob"}`)
	e.post(t, "/v1/chat/completions", ann, hi) // spends the tiny budget
	if resp, _ := e.post(t, "/v1/chat/completions", ann, hi); resp.StatusCode != 400 {
		t.Fatalf("ann's membership budget does not bind: %d", resp.StatusCode)
	}
	if resp, out := e.post(t, "/team/member_add", bob, `{"team_id": "sq", "member": {"user_id": "ann", "role": "user", "budget_id": "other"}}`); resp.StatusCode == 200 {
		t.Logf("bob may set budget_id?! %v", out)
	}
	resp, out := e.post(t, "/team/member_update", bob, `{"team_id": "sq", "user_id": "ann", "max_budget_in_team": 1000}`)
	t.Logf("team admin bob: member_update max_budget_in_team 1000 -> %d %v", resp.StatusCode, out)
	if resp, _ := e.post(t, "/v1/chat/completions", ann, hi); resp.StatusCode == 200 {
		t.Errorf("the team admin lifted the budget the proxy_admin gave ann's membership (budget_id tiny): ann is served again")
	}
}
