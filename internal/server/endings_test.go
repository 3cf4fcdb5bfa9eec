package server

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// endingsConfig is pricedConfig with deployments of gpt-4's price that
// fail, time out and answer slowly.
var endingsConfig = strings.Replace(pricedConfig, "general_settings:", `  - model_name: failing
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0.0001, extra_headers: {x-mock-status: "500"}}
  - model_name: hanging
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0.0001, timeout: 0.2, extra_headers: {x-mock-delay-ms: "30000"}}
  - model_name: slow
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0.0001, extra_headers: {x-mock-delay-ms: "30000"}}
general_settings:`, 1)

// TestRequestEndingsBookOnce: TestFailedRequestsReleaseTheirHold,
// TestAbandonedStreamIsCharged and TestShutdownTimeoutBooksCutStreams for a
// budgeted key in every budget mode: in process (SQLite, PostgreSQL), and
// shared on Redis (PostgreSQL) with allotments on (the default: a busy
// key's holds are decided in process against this replica's allotment,
// then settled or released there) and off (each hold and settle a Redis
// script). A budgeted key's requests end every way one
// can: answered, upstream error, upstream timeout, the client gone before
// the answer and mid-stream, and a shutdown whose timeout cuts a stream
// and a waiting request. After each, nothing is held on the replica; once
// it has stopped gracefully, the store and the replica's view have spent
// the sum of one spend row per upstream call, and on Redis nothing is held
// for the key (every hold released or settled once, every allotment
// returned) and that sum is spent.
func TestRequestEndingsBookOnce(t *testing.T) {
	t.Parallel()
	modes := []struct {
		name, extra     string
		postgres, redis bool
		allot           bool
	}{
		{"sqlite", "", false, false, false},
		{"postgres", "", true, false, false},
		{"redis, allotments on", "  redis_url: {{REDIS}}\n", true, true, true},
		{"redis, allotments off", "  redis_url: {{REDIS}}\n  budget_allotments: false\n", true, true, false},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			r := replicas(t, 1, rigSpec{name: "endings", postgres: m.postgres, redis: m.redis, mock: mockupstream.Options{Chunks: 20, ChunkDelay: 100 * time.Millisecond}},
				endingsConfig+m.extra,
				// Holds wait for Redis as long as it takes: nothing falls
				// back to the replica's own ledger on a busy machine.
				Options{ShutdownTimeout: 100 * time.Millisecond, RedisHoldTimeout: time.Minute, RedisReadTimeout: time.Minute})
			s, u := r.srvs[0], r.urls[0]
			if (s.allot != nil) != m.allot {
				t.Fatalf("allotments on: %v, want %v", s.allot != nil, m.allot)
			}
			const key = "sk-endings-key"
			r.key(t, key, `"max_budget": 1`) // 200 worst cases: allotted when busy
			acct := func() *ledger.Account {
				a, _ := s.book.Lookup(store.KindKey, sha(key))
				return a
			}
			// Every request's worst case is the same (max_tokens 50), so
			// that the warm-up sizes the allotment for it.
			chat := func(model string) string {
				return `{"model":"` + model + `","max_tokens":50,"messages":[{"role":"user","content":"one two three four"}]}`
			}
			ask := func(ctx context.Context, model string, stream bool) (*http.Response, error) {
				body := chat(model)
				if stream {
					body = `{"model":"` + model + `","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"a b c d e f g h i j k l m n o p q r s t"}]}`
				}
				req, _ := http.NewRequestWithContext(ctx, "POST", u+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+key)
				return http.DefaultClient.Do(req)
			}
			// untilUpstream waits until the upstream has had n calls.
			untilUpstream := func(t *testing.T, n int64) {
				t.Helper()
				if _, ok := within(time.Minute, func() bool { return r.mock.Stats().Requests >= n }); !ok {
					t.Fatal("the request never reached the upstream")
				}
			}
			// warm makes the key busy and sizes this replica's allotment
			// of it, so that the next request is decided against it.
			warm := func(t *testing.T) {
				t.Helper()
				for range 2 {
					if code, body := send(t, u+"/v1/chat/completions", key, chat("gpt-4")); code != 200 {
						t.Fatal(code, body)
					}
				}
				if s.allot != nil {
					if err := s.allot.Flush(context.Background(), false); err != nil {
						t.Fatal(err)
					}
				}
			}
			var c *redis.Client
			if m.redis {
				c = r.client(t)
			}
			redisHeld := func() int64 {
				v, _ := c.HGet(context.Background(), r.budget("key", sha(key)), "held").Int64()
				return v
			}
			released := func(t *testing.T, what string) {
				t.Helper()
				if _, ok := within(time.Minute, func() bool { a := acct(); return a != nil && a.Reserved() == 0 }); !ok {
					t.Fatalf("%s: %v still held on the replica", what, acct().Reserved().Dollars())
				}
				// Without allotments nothing else holds the key on Redis.
				if m.redis && s.allot == nil {
					if _, ok := within(time.Minute, func() bool { return redisHeld() == 0 }); !ok {
						t.Fatalf("%s: Redis still holds %v for the key: the hold was not released", what, ledger.Amount(redisHeld()).Dollars())
					}
				}
			}
			endings := []struct {
				name string
				end  func(t *testing.T)
			}{
				{"answered", func(t *testing.T) {
					if code, body := send(t, u+"/v1/chat/completions", key, chat("gpt-4")); code != 200 {
						t.Fatal(code, body)
					}
				}},
				{"upstream error", func(t *testing.T) {
					if code, body := send(t, u+"/v1/chat/completions", key, chat("failing")); code != 500 {
						t.Fatal(code, body)
					}
				}},
				{"upstream timeout", func(t *testing.T) {
					if code, body := send(t, u+"/v1/chat/completions", key, chat("hanging")); code != 504 {
						t.Fatal(code, body)
					}
				}},
				{"client gone before the answer", func(t *testing.T) {
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					n := r.mock.Stats().Requests
					done := make(chan error, 1)
					go func() {
						resp, err := ask(ctx, "slow", false)
						if err == nil {
							resp.Body.Close()
						}
						done <- err
					}()
					untilUpstream(t, n+1)
					cancel()
					if err := <-done; err == nil {
						t.Fatal("the request was answered after its client left")
					}
				}},
				{"client gone mid-stream", func(t *testing.T) {
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					resp, err := ask(ctx, "gpt-4", true)
					if err != nil {
						t.Fatal(err)
					}
					readDataChunks(t, bufio.NewReader(resp.Body), 3)
					cancel()
					resp.Body.Close()
				}},
			}
			ran := 0 // endings run (-run may pick some)
			for _, e := range endings {
				t.Run(e.name, func(t *testing.T) {
					ran++
					// With allotments, the ending must be decided against
					// the allotment: tried again (each try a request of its
					// own, booked as such) while a flush closed it first.
					for try := 1; ; try++ {
						warm(t)
						local := int64(0)
						if s.allot != nil {
							local = s.allot.Local.Load()
						}
						e.end(t)
						released(t, e.name)
						if s.allot == nil || s.allot.Local.Load() > local {
							break
						}
						if try == 5 {
							t.Fatalf("%s: never decided against the allotment in %d tries", e.name, try)
						}
					}
				})
			}
			// A shutdown whose timeout cuts a stream and a waiting request.
			warm(t)
			local := int64(0)
			if s.allot != nil {
				local = s.allot.Local.Load()
			}
			n := r.mock.Stats().Requests
			streamed, waiting := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(streamed)
				resp, err := ask(context.Background(), "gpt-4", true)
				if err != nil {
					return
				}
				defer resp.Body.Close()
				br := bufio.NewReader(resp.Body)
				for {
					if _, err := br.ReadString('\n'); err != nil {
						return
					}
				}
			}()
			go func() {
				defer close(waiting)
				if resp, err := ask(context.Background(), "slow", false); err == nil {
					resp.Body.Close()
				}
			}()
			untilUpstream(t, n+2)
			if s.allot != nil {
				t.Logf("allotments: %d of the shutdown's two requests decided against the allotment", s.allot.Local.Load()-local)
			}
			r.stops[0]() // graceful: the shutdown timeout (100 ms) passes with both in flight
			<-streamed
			<-waiting

			ctx := context.Background()
			logs, total, err := r.st.ListSpendLogs(ctx, store.SpendFilter{KeyHash: sha(key), Page: store.Page{Number: 1, Size: 1000}})
			if err != nil {
				t.Fatal(err)
			}
			calls := r.mock.Stats().Requests
			if int64(total) != calls || len(logs) != total {
				t.Fatalf("%d spend rows (%d listed) for %d upstream calls", total, len(logs), calls)
			}
			ids := map[string]bool{}
			var sum float64
			statuses := map[int]int{}
			cutCharged := 0
			for _, l := range logs {
				if ids[l.RequestID] {
					t.Fatalf("request %s has two spend rows", l.RequestID)
				}
				ids[l.RequestID] = true
				sum += l.Cost
				statuses[l.Status]++
				if l.Status == 499 && l.Cost > 0 {
					cutCharged++
				}
				if l.Status >= 400 && l.Status != 499 && l.Cost != 0 {
					t.Errorf("a failed request (status %d) cost %v", l.Status, l.Cost)
				}
			}
			t.Logf("rows by status: %v (%d cut and charged)", statuses, cutCharged)
			if ran == len(endings) && cutCharged < 2 {
				t.Errorf("%d streams cut (client gone, shutdown) charged, want 2: a stream's chunks are booked", cutCharged)
			}
			if ran == len(endings) && (statuses[500] == 0 || statuses[504] == 0 || statuses[499] < 4) {
				t.Errorf("rows by status %v: want an upstream error, a timeout and four requests cut (two clients gone, two by the shutdown)", statuses)
			}
			k, err := r.st.GetKey(ctx, sha(key))
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(k.Spend-sum) > 1e-9 {
				t.Fatalf("the store has spent %v for rows costing %v", k.Spend, sum)
			}
			if a := acct(); a.Reserved() != 0 || math.Abs(a.Spent().Dollars()-sum) > 1e-9 {
				t.Fatalf("the replica's view: %v spent, %v held; rows cost %v", a.Spent().Dollars(), a.Reserved().Dollars(), sum)
			}
			if !m.redis {
				return
			}
			v, err := c.HMGet(ctx, r.budget("key", sha(key)), "spent", "held").Result()
			if err != nil {
				t.Fatal(err)
			}
			spent, _ := strconv.ParseInt(fmt.Sprint(v[0]), 10, 64)
			held, _ := strconv.ParseInt(fmt.Sprint(v[1]), 10, 64)
			if spent != int64(ledger.USD(sum)) || held != 0 {
				all, _ := c.HGetAll(ctx, r.budget("key", sha(key))).Result()
				t.Fatalf("Redis has spent %v, held %v after the stop; want spent %v (the rows), held 0 (hash %v)", ledger.Amount(spent).Dollars(), ledger.Amount(held).Dollars(), sum, all)
			}
		})
	}
}
