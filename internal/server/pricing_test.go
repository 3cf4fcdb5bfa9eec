package server

import (
	"context"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/pricing"
	"github.com/tollgate/tollgate/internal/usage"
)

// The mock answers "Hello! You said: hi" (5 completion tokens) to this.
const chatHi = `{"model":"%s","messages":[{"role":"user","content":"hi"}]}`

// TestEveryRouteIsPriced: wildcard routes (LiteLLM's openai/* and "*",
// agentgateway's name "*") are priced by the model the client asked for,
// and a deployment the table does not know is priced by the model the
// upstream says it served. Before, all of these cost 0 and no budget bound.
func TestEveryRouteIsPriced(t *testing.T) {
	gpt4o, ok := pricing.Lookup("openai", "gpt-4o")
	if !ok || gpt4o.OutputPerToken == 0 {
		t.Fatal("the price table has no gpt-4o")
	}
	tests := []struct {
		name      string
		yaml      string
		model     string // what the client asks for
		served    string // the model the upstream names in its answer ("" echoes)
		wantPrice pricing.Price
	}{
		{"litellm openai/*", `model_list:
  - model_name: "openai/*"
    litellm_params: {model: "openai/*", api_base: "{{UP}}"}
`, "openai/gpt-4o", "", gpt4o},
		{"litellm *", `model_list:
  - model_name: "*"
    litellm_params: {model: "openai/*", api_base: "{{UP}}"}
`, "gpt-4o", "", gpt4o},
		{"agentgateway *", `llm:
  models:
  - name: "*"
    provider: openAI
    params:
      apiKey: sk-upstream
      hostOverride: "{{UP}}"
`, "gpt-4o", "", gpt4o},
		{"served model", `model_list:
  - model_name: tuned
    litellm_params: {model: openai/my-finetune-xyz, api_base: "{{UP}}"}
`, "tuned", "gpt-4o-2024-08-06", mustPrice(t, "gpt-4o-2024-08-06")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startConfig(t, sqliteStore(t), mockupstream.Options{Model: tt.served}, tt.yaml)
			resp, out := e.post(t, "/v1/chat/completions", "", strings.Replace(chatHi, "%s", tt.model, 1))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %v", resp.StatusCode, out)
			}
			u, _ := out["usage"].(map[string]any)
			prompt, _ := u["prompt_tokens"].(float64)
			completion, _ := u["completion_tokens"].(float64)
			want := tt.wantPrice.Cost(usage.Usage{Prompt: int64(prompt), Completion: int64(completion)})
			got, err := strconv.ParseFloat(resp.Header.Get("x-tollgate-response-cost"), 64)
			if err != nil || want == 0 || math.Abs(got-want) > 1e-12 {
				t.Fatalf("x-tollgate-response-cost = %q, want %v (usage %v)", resp.Header.Get("x-tollgate-response-cost"), want, u)
			}
			if h := resp.Header.Get("x-tollgate-unpriced"); h != "" {
				t.Fatalf("a priced answer says x-tollgate-unpriced: %s", h)
			}
		})
	}
}

func mustPrice(t *testing.T, model string) pricing.Price {
	t.Helper()
	p, ok := pricing.Lookup("openai", model)
	if !ok {
		t.Fatalf("the price table has no %s", model)
	}
	return p
}

// TestUnpricedPolicy: a model nobody can price is served free, and says so
// in a header and in /model/info; with general_settings.unpriced_models:
// refuse, a budgeted key may not call it (an unbudgeted one still may).
func TestUnpricedPolicy(t *testing.T) {
	const yaml = `model_list:
  - model_name: mystery
    litellm_params: {model: openai/my-finetune-xyz, api_base: "{{UP}}"}
general_settings:
  master_key: sk-1234
`
	t.Run("free", func(t *testing.T) {
		e := startConfig(t, sqliteStore(t), mockupstream.Options{}, yaml)
		_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 1}`)
		key := out["key"].(string)
		resp, out := e.post(t, "/v1/chat/completions", key, strings.Replace(chatHi, "%s", "mystery", 1))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %v", resp.StatusCode, out)
		}
		if got := resp.Header.Get("x-tollgate-unpriced"); got != "my-finetune-xyz" {
			t.Fatalf("x-tollgate-unpriced = %q", got)
		}
		if got := resp.Header.Get("x-tollgate-response-cost"); got != "0" {
			t.Fatalf("x-tollgate-response-cost = %q", got)
		}
		var info struct {
			Data []struct {
				ModelInfo map[string]any `json:"model_info"`
			} `json:"data"`
		}
		if code := e.get(t, "/model/info", "sk-1234", &info); code != 200 || len(info.Data) != 1 || info.Data[0].ModelInfo["priced"] != false {
			t.Fatalf("/model/info does not say the deployment is unpriced: %d %+v", code, info)
		}
	})
	t.Run("refuse", func(t *testing.T) {
		e := startConfig(t, sqliteStore(t), mockupstream.Options{}, yaml+"  unpriced_models: refuse\n")
		_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 1}`)
		budgeted := out["key"].(string)
		resp, out := e.post(t, "/v1/chat/completions", budgeted, strings.Replace(chatHi, "%s", "mystery", 1))
		msg, _ := out["error"].(map[string]any)["message"].(string)
		if resp.StatusCode != 400 || !strings.Contains(msg, "no known price") {
			t.Fatalf("budgeted key on an unpriced model: %d %v", resp.StatusCode, out)
		}
		if n := e.mock.Stats().Requests; n != 0 {
			t.Fatalf("a refused request reached the upstream (%d requests)", n)
		}
		_, out = e.post(t, "/key/generate", "sk-1234", `{}`)
		resp, out = e.post(t, "/v1/chat/completions", out["key"].(string), strings.Replace(chatHi, "%s", "mystery", 1))
		if resp.StatusCode != 200 {
			t.Fatalf("unbudgeted key on an unpriced model: %d %v", resp.StatusCode, out)
		}
	})
}

// TestServedPriceBindsBudgets: a deployment priced only by the model its
// answers name still binds budgets. Default mode holds all that remains
// until an answer has named a price (one request at a time), then holds at
// that price; strict refuses a budgeted request until a price is known,
// then holds the worst case at it. 50 requests at once on a $0.01 key
// (each answer costs about $0.002).
func TestServedPriceBindsBudgets(t *testing.T) {
	const yaml = `model_list:
  - model_name: tuned
    litellm_params: {model: openai/my-finetune-xyz, api_base: "{{UP}}", headers: {x-mock-completion-tokens: "200"}}
general_settings:
  master_key: sk-1234
`
	body := `{"model":"tuned","max_tokens":200,"messages":[{"role":"user","content":"hi"}]}`
	for _, mode := range []string{"default", "strict"} {
		t.Run(mode, func(t *testing.T) {
			st := sqliteStore(t)
			e := startConfig(t, st, mockupstream.Options{Model: "gpt-4o-2024-08-06"}, yaml+"litellm_settings:\n  budget_enforcement: "+mode+"\n")
			key := newKey(t, e, `{"max_budget": 0.01}`)
			if mode == "strict" {
				resp, out := e.post(t, "/v1/chat/completions", key, body)
				if resp.StatusCode != 400 || !strings.Contains(messageOf(out), "priced only by the model its answers name") {
					t.Fatalf("strict, price not yet known: %d %v", resp.StatusCode, out)
				}
				// An unbudgeted key's answer teaches the price.
				if resp, out := e.post(t, "/v1/chat/completions", newKey(t, e, `{}`), body); resp.StatusCode != 200 {
					t.Fatalf("unbudgeted: %d %v", resp.StatusCode, out)
				}
			}
			// The costliest answer: default mode caps the output of
			// requests that cannot hold their worst case while another
			// runs uncapped, so answers differ.
			var mu sync.Mutex
			var cost float64
			var wg sync.WaitGroup
			for range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, _ := e.post(t, "/v1/chat/completions", key, body)
					if resp.StatusCode == 200 {
						c, _ := strconv.ParseFloat(resp.Header.Get("x-tollgate-response-cost"), 64)
						mu.Lock()
						cost = max(cost, c)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			e.srv.writer.Flush()
			k, err := st.GetKey(context.Background(), sha(key))
			if err != nil {
				t.Fatal(err)
			}
			slack := cost // default: one request over at most
			if mode == "strict" {
				slack = 0
			}
			if cost <= 0 || k.Spend > 0.01+slack+1e-12 {
				t.Fatalf("%s: spend %v on a $0.01 budget (one request costs %v)", mode, k.Spend, cost)
			}
			t.Logf("%s: spend %v on a $0.01 budget (one request costs %v)", mode, k.Spend, cost)
		})
	}
}

// TestPerSecondPricing: a deployment priced per second (LiteLLM's
// input_cost_per_second and output_cost_per_second, e.g. SageMaker) is
// charged both prices for the time the upstream took, on top of its
// per-token prices, and the key is booked that cost.
func TestPerSecondPricing(t *testing.T) {
	const yaml = `model_list:
  - model_name: sm
    litellm_params: {model: openai/llama-endpoint, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0, input_cost_per_second: 0.01}
    model_info: {output_cost_per_second: 0.03}
general_settings:
  master_key: sk-1234
`
	st := sqliteStore(t)
	const delay = 200 * time.Millisecond
	e := startConfig(t, st, mockupstream.Options{Delay: delay}, yaml)
	key := newKey(t, e, `{"max_budget": 10}`)
	began := time.Now()
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"sm","messages":[{"role":"user","content":"hi"}]}`)
	took := time.Since(began)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, out)
	}
	cost, err := strconv.ParseFloat(resp.Header.Get("x-tollgate-response-cost"), 64)
	if err != nil {
		t.Fatal(err)
	}
	// At least the mock's delay, at most the whole call, at $0.04 a second.
	if lo, hi := 0.04*delay.Seconds(), 0.04*took.Seconds(); cost < lo || cost > hi {
		t.Fatalf("cost %v, want between %v and %v (the call took %v)", cost, lo, hi, took)
	}
	e.srv.writer.Flush()
	k, err := st.GetKey(context.Background(), sha(key))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(k.Spend-cost) > 1e-9 {
		t.Fatalf("key booked %v, the answer cost %v", k.Spend, cost)
	}
}
