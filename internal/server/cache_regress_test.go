package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// semanticEnv starts a gateway with the local semantic cache over an
// embedder that maps "capital of France" and "France's capital" to close
// vectors; embeds counts its calls.
func semanticEnv(t *testing.T, embeds *atomic.Int64) *spendEnv {
	t.Helper()
	emb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		embeds.Add(1)
		var req struct{ Input string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		vec := "[0, 0, 1]"
		switch {
		case strings.Contains(req.Input, "capital of France"):
			vec = "[1, 0, 0]"
		case strings.Contains(req.Input, "France's capital"):
			vec = "[0.98, 0.2, 0]"
		case strings.Contains(req.Input, "number "):
			// Each numbered prompt its own direction: no two are similar.
			var d int
			fmt.Sscanf(req.Input[strings.Index(req.Input, "number ")+len("number "):], "%d", &d)
			v := make([]string, 16)
			for i := range v {
				v[i] = "0"
			}
			v[d%16] = "1"
			vec = "[" + strings.Join(v, ",") + "]"
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":%s}],"model":"e","usage":{"prompt_tokens":1,"total_tokens":1}}`, vec)
	}))
	t.Cleanup(emb.Close)
	models := "  - model_name: embedder\n    litellm_params: {model: openai/text-embedding-3-small, api_base: \"" + emb.URL + "\"}\n"
	return startSpendWith(t, sqliteStore(t), mockupstream.Options{}, models,
		cacheOn+"  cache_params: {type: local-semantic, similarity_threshold: 0.9, redis_semantic_cache_embedding_model: embedder}\n", Options{})
}

func askChat(q, extra string) string {
	return `{"model":"gpt-4","max_tokens":3` + extra + `,"messages":[{"role":"user","content":"` + q + `"}]}`
}

// TestCacheSemanticStaleNeighbourKeepsOwnKey (issue #26, was
// TestProbeSemanticStaleNeighbourIsOverwritten): a request whose semantic
// neighbour is found but too old for its s-maxage goes upstream, and its
// answer is stored (and reported) under its own key, never the
// neighbour's: the neighbour's exact repeat still gets its own answer.
func TestCacheSemanticStaleNeighbourKeepsOwnKey(t *testing.T) {
	var embeds atomic.Int64
	e := semanticEnv(t, &embeds)
	p1 := askChat("What is the capital of France?", "")
	r1, b1 := storing(t, e, "/v1/chat/completions", "sk-1234", p1)
	if r1.StatusCode != 200 {
		t.Fatalf("first: %d %s", r1.StatusCode, b1)
	}
	r2, b2 := storing(t, e, "/v1/chat/completions", "sk-1234", askChat("Tell me France's capital", `,"cache":{"s-maxage":0}`))
	if r2.StatusCode != 200 || isHit(r2) || b2 == b1 {
		t.Fatalf("stale neighbour: %d hit=%v", r2.StatusCode, isHit(r2))
	}
	if k1, k2 := r1.Header.Get("X-Litellm-Cache-Key"), r2.Header.Get("X-Litellm-Cache-Key"); k1 == k2 {
		t.Errorf("the other prompt's answer was reported (and stored) under the neighbour's exact key %s", k1)
	}
	r3, b3 := rawPost(t, e, "/v1/chat/completions", "sk-1234", p1)
	if isHit(r3) && b3 != b1 {
		t.Fatalf("the exact repeat of the first prompt was served another prompt's answer:\nfirst answer %s\nserved       %s", b1, b3)
	}
}

// TestCacheSemanticNoEmbeddingForSpentBudget (issue #26, was
// TestProbeSemanticEmbedsForRefusedRequests): a key whose budget is spent
// is refused before the cache embeds its prompt: its refused requests
// cost the operator no embedding call.
func TestCacheSemanticNoEmbeddingForSpentBudget(t *testing.T) {
	var embeds atomic.Int64
	e := semanticEnv(t, &embeds)
	key := newKey(t, e, `{"max_budget": 0.00001}`)
	// Spend the budget: the first request is served and overshoots it;
	// wait until the key is refused.
	rawPost(t, e, "/v1/chat/completions", key, askChat("warm up", ""))
	waitFor(t, "the key's budget to be spent", func() bool {
		r, _ := rawPost(t, e, "/v1/chat/completions", key, askChat("warm up", `,"cache":{"no-cache":true}`))
		return r.StatusCode == 400
	})
	before := embeds.Load()
	refused := 0
	for i := range 5 {
		r, b := rawPost(t, e, "/v1/chat/completions", key, askChat(fmt.Sprintf("a long prompt number %d", i), ""))
		if r.StatusCode == 200 {
			t.Fatalf("request %d on a spent budget was served: %s", i, b)
		}
		refused++
	}
	if n := embeds.Load() - before; n > 0 {
		t.Fatalf("%d requests refused for a spent budget cost the operator %d embedding calls, booked to no one", refused, n)
	}
}

// TestCacheNeverStoresBudgetCappedAnswer (issue #26, was
// TestProbeCacheStoresBudgetCappedAnswer): in default budget mode a
// request beside an uncovered one of its budget is capped (its max tokens
// cut to what its hold pays for, x-tollgate-output-capped). That cut
// answer is not stored: another key of the team, with no budget, is not
// served it.
func TestCacheNeverStoresBudgetCappedAnswer(t *testing.T) {
	t.Parallel()
	yaml := `model_list:
  - model_name: m
    litellm_params: {model: openai/gpt-4, api_key: k, api_base: "{{UP}}", input_cost_per_token: 0.00003, output_cost_per_token: 0.00006, headers: {x-mock-completion-tokens: "400", x-mock-chunks: "40", x-mock-chunk-delay-ms: "50"}}
general_settings:
  master_key: sk-1234
` + cacheOn
	e := startConfigWith(t, sqliteStore(t), mockupstream.Options{}, yaml, Options{})
	if resp, out := e.post(t, "/team/new", "sk-1234", `{"team_id":"team-c"}`); resp.StatusCode != 200 {
		t.Fatalf("team: %d %v", resp.StatusCode, out)
	}
	free := newKey(t, e, `{}`)
	short := `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}],"cache":{"no-cache":true,"no-store":true}}`
	for range 1 { // the deployment learns one-token answers (one is enough: none came before)
		if resp, out := e.post(t, "/v1/chat/completions", free, short); resp.StatusCode != 200 {
			t.Fatalf("teaching: %d %v", resp.StatusCode, out)
		}
	}
	poor := newKey(t, e, `{"max_budget": 0.01, "team_id":"team-c"}`)
	rich := newKey(t, e, `{"team_id":"team-c"}`)
	before := e.mock.Stats().Requests
	done := make(chan struct{})
	go func() { // the uncovered one: a stream, no max_tokens, 400 tokens
		defer close(done)
		req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"cache":{"no-store":true}}`))
		req.Header.Set("Authorization", "Bearer "+poor)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}()
	for deadline := time.Now().Add(30 * time.Second); e.mock.Stats().Requests == before; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stream never reached the upstream")
		}
	}
	ask := `{"model":"m","messages":[{"role":"user","content":"hello there"}]}`
	n := cacheStores(t, e)
	r1, b1 := rawPost(t, e, "/v1/chat/completions", poor, ask)
	capped := r1.Header.Get("X-Tollgate-Output-Capped")
	<-done
	if r1.StatusCode != 200 || capped == "" {
		t.Fatalf("the request beside the uncovered stream was not capped: %d %s", r1.StatusCode, b1)
	}
	waitFor(t, "the capped answer to be stored (or not)", func() bool { return cacheStores(t, e) > n || e.mock.Stats().Requests > before+1 })
	r2, b2 := rawPost(t, e, "/v1/chat/completions", rich, ask)
	if isHit(r2) && b2 == b1 {
		t.Fatalf("a key of the team with no budget was served the answer capped at %s output tokens for another key's budget:\n%s", capped, b2)
	}
}

// TestCacheMetricsLabelGroupPattern (issue #26, was
// TestProbeCacheMetricsTakeClientModelNames): through a wildcard group,
// tollgate_cache_misses_total is labelled with the group's pattern, as
// the request metrics are, never with the model names a client invents.
func TestCacheMetricsLabelGroupPattern(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(`
model_list:
  - model_name: "openai/*"
    litellm_params: {model: "openai/*", api_base: "`+up.URL+`", headers: {x-mock-status: "404"}}
litellm_settings:
  cache: true
`))
	if err != nil {
		t.Fatal(err)
	}
	url := serveCfg(t, cfg, Options{})
	for i := range 250 {
		if code, body := send(t, url+"/v1/chat/completions", "", fmt.Sprintf(`{"model":"openai/invented-%d","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`, i)); code == 200 {
			t.Fatalf("the upstream served an invented name: %s", body)
		}
	}
	fams := scrape(t, url, "")
	names := map[string]bool{}
	for _, m := range fams["tollgate_cache_misses_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "model_group" {
				names[l.GetValue()] = true
			}
		}
	}
	if len(names) > 1 || names["openai/invented-0"] {
		t.Fatalf("tollgate_cache_misses_total has %d model_group series for names the upstream never served (e.g. openai/invented-0: %v); model_group elsewhere is the pattern", len(names), names["openai/invented-0"])
	}
}

// TestCacheSpentKeyRefusedBeforeHit (issue #26, was
// TestProbeSpentKeyIsServedFromCache): LiteLLM checks a key's budget when
// it authenticates it, before the cache: a key whose budget is spent gets
// nothing, cached or not.
func TestCacheSpentKeyRefusedBeforeHit(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, cacheOn)
	key := newKey(t, e, `{"max_budget": 0.00001}`)
	if r, b := storing(t, e, "/v1/chat/completions", key, chat3); r.StatusCode != 200 {
		t.Fatalf("first: %d %s", r.StatusCode, b)
	}
	bypass := strings.Replace(chat3, `"max_tokens":3`, `"max_tokens":3,"cache":{"no-cache":true,"no-store":true}`, 1)
	waitFor(t, "the key's budget to be spent", func() bool {
		r, _ := rawPost(t, e, "/v1/chat/completions", key, bypass)
		return r.StatusCode == 400
	})
	if r, b := rawPost(t, e, "/v1/chat/completions", key, chat3); r.StatusCode == 200 {
		t.Fatalf("a key over its budget was served (hit=%v): %s", isHit(r), b)
	}
}

// TestCacheFallbackAnswerNotStored (issue #26, was
// TestProbeCacheServesFallbackModelToKeyWithoutIt): an answer that came
// from a fallback group is not stored under the group asked for, so a key
// of the team that may use that group and not the fallback is never
// served the fallback model's answer from the cache. The probe's first
// request waited for that answer to be stored; it now waits for a later
// request's store instead (the assertion is unchanged).
func TestCacheFallbackAnswerNotStored(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, "router_settings:\n  fallbacks: [{broken: [gpt-4]}]\n"+cacheOn)
	if resp, out := e.post(t, "/team/new", "sk-1234", `{"team_id":"team-f"}`); resp.StatusCode != 200 {
		t.Fatalf("team: %d %v", resp.StatusCode, out)
	}
	both := newKey(t, e, `{"team_id":"team-f","models":["broken","gpt-4"]}`)
	only := newKey(t, e, `{"team_id":"team-f","models":["broken"]}`)
	ask := `{"model":"broken","max_tokens":3,"messages":[{"role":"user","content":"one two three four"}]}`
	if r, b := rawPost(t, e, "/v1/chat/completions", only, strings.Replace(ask, `"max_tokens":3`, `"max_tokens":3,"cache":{"no-store":true}`, 1)); r.StatusCode == 200 {
		t.Fatalf("the key without gpt-4 reached it by fallback: %s", b)
	}
	// The fallback's answer is not stored (so storing, which waits for a
	// store, cannot be used for it): a request stored after it marks that
	// its call, which ended first, has had its chance to store.
	r1, b1 := rawPost(t, e, "/v1/chat/completions", both, ask)
	if r1.StatusCode != 200 || r1.Header.Get("X-Litellm-Attempted-Fallbacks") != "1" {
		t.Fatalf("the fallback: %d fallbacks=%q %s", r1.StatusCode, r1.Header.Get("X-Litellm-Attempted-Fallbacks"), b1)
	}
	if r, b := storing(t, e, "/v1/chat/completions", both, strings.Replace(ask, `"model":"broken"`, `"model":"gpt-4"`, 1)); r.StatusCode != 200 {
		t.Fatalf("the marker request: %d %s", r.StatusCode, b)
	}
	if r, b := rawPost(t, e, "/v1/chat/completions", only, ask); r.StatusCode == 200 {
		t.Fatalf("a key that may not use gpt-4 was served gpt-4's answer from the cache (hit=%v): %s", isHit(r), b)
	}
}

// TestCacheAllowedCacheControlsApplied (issue #26, was
// TestProbeAllowedCacheControlsNotApplied): LiteLLM's key field
// allowed_cache_controls limits the cache controls a key's requests may
// set: any other is LiteLLM's 403, and never reaches the upstream; a
// listed one passes.
func TestCacheAllowedCacheControlsApplied(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, cacheOn)
	key := newKey(t, e, `{"allowed_cache_controls":["no-cache"]}`)
	body := strings.Replace(chat3, `"max_tokens":3`, `"max_tokens":3,"cache":{"ttl":2147483648}`, 1)
	before := upstreamCalls(e)
	if r, b := rawPost(t, e, "/v1/chat/completions", key, body); r.StatusCode != 403 {
		t.Fatalf("a key allowed only no-cache set cache.ttl: %d %s", r.StatusCode, b)
	} else if !strings.Contains(b, "Not allowed to set ttl as a cache control. Contact admin to change permissions.") {
		t.Fatalf("not LiteLLM's message: %s", b)
	}
	if n := upstreamCalls(e); n != before {
		t.Fatalf("the refused request reached the upstream (%d calls, was %d)", n, before)
	}
	ok := strings.Replace(chat3, `"max_tokens":3`, `"max_tokens":3,"cache":{"no-cache":true}`, 1)
	if r, b := rawPost(t, e, "/v1/chat/completions", key, ok); r.StatusCode != 200 {
		t.Fatalf("a listed control was refused: %d %s", r.StatusCode, b)
	}
}

// TestCacheStreamWithoutEndNotStored (issue #26, was
// TestProbeCacheStoresStreamEndedWithoutDone): an OpenAI stream that the
// upstream ends cleanly (EOF) after an error event, with no finish_reason
// and no [DONE], is not stored: the next identical request goes upstream.
func TestCacheStreamWithoutEndNotStored(t *testing.T) {
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, `data: {"id":"chatcmpl-cut","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}`+"\n\n")
		fmt.Fprint(w, `data: {"error":{"message":"The server had an error while processing your request.","type":"server_error"}}`+"\n\n")
	}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(`
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_base: "`+up.URL+`"}
litellm_settings:
  cache: true
`))
	if err != nil {
		t.Fatal(err)
	}
	url := serveCfg(t, cfg, Options{})
	body := `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	code, first := send(t, url+"/v1/chat/completions", "", body)
	if code != 200 || strings.Contains(first, "[DONE]") {
		t.Fatalf("first: %d %s", code, first)
	}
	// A stream's last chunk reaches the client when the handler returns,
	// after storeAnswer: the entry, if any, is there now.
	resp, replay := sendH(t, url+"/v1/chat/completions", "", body)
	if isHit(resp) {
		t.Fatalf("a stream without its end (upstream asked %d times) was stored and replayed:\n%s", calls.Load(), replay)
	}
}

// TestCacheRequestTTLBoundedByMaxTTL: a request's cache.ttl keeps its
// answer at most cache_params.max_ttl (Tollgate's operator ceiling), read
// from the entry's TTL on Redis.
func TestCacheRequestTTLBoundedByMaxTTL(t *testing.T) {
	u := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if u == "" {
		t.Skip("TOLLGATE_TEST_REDIS_URL is not set: skipping the Redis cache ttl test")
	}
	prefix := "cachettl-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	yaml := strings.Replace(pricedConfig, "general_settings:\n", "general_settings:\n  redis_url: "+u+"\n", 1) + cacheOn + "  cache_params: {type: redis, ttl: 60, max_ttl: 120}\n"
	e := startConfigWith(t, sqliteStore(t), mockupstream.Options{}, yaml, Options{RedisPrefix: prefix})
	long := strings.Replace(chat3, `"max_tokens":3`, `"max_tokens":3,"cache":{"ttl":2147483648}`, 1)
	r, b := storing(t, e, "/v1/chat/completions", "sk-1234", long)
	if r.StatusCode != 200 {
		t.Fatalf("first: %d %s", r.StatusCode, b)
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	ttl, err := rc.PTTL(context.Background(), "{"+prefix+"}:cache:"+r.Header.Get("X-Litellm-Cache-Key")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > 120*time.Second {
		t.Fatalf("the entry is kept %v: more than max_ttl (120s), or not at all", ttl)
	}
}

// TestCacheSemanticEmbeddingBookedToCaller: the semantic cache's
// embedding of a prompt is booked as LiteLLM books it (it embeds through
// the router with the caller's key): a spend row of call type aembedding
// on the embedding group, owned by the calling key, at the embedding
// deployment's price.
func TestCacheSemanticEmbeddingBookedToCaller(t *testing.T) {
	emb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[1,0,0]}],"model":"e","usage":{"prompt_tokens":7,"total_tokens":7}}`)
	}))
	defer emb.Close()
	models := "  - model_name: embedder\n    litellm_params: {model: openai/text-embedding-3-small, api_base: \"" + emb.URL + "\", input_cost_per_token: 0.001, output_cost_per_token: 0}\n"
	st := sqliteStore(t)
	e := startSpendWith(t, st, mockupstream.Options{}, models,
		cacheOn+"  cache_params: {type: local-semantic, similarity_threshold: 0.9, redis_semantic_cache_embedding_model: embedder}\n", Options{})
	key := newKey(t, e, `{}`)
	if r, b := rawPost(t, e, "/v1/chat/completions", key, askChat("What is the capital of France?", "")); r.StatusCode != 200 {
		t.Fatalf("first: %d %s", r.StatusCode, b)
	}
	var row *store.SpendLog
	waitFor(t, "the embedding's spend row", func() bool {
		rows, _, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{})
		for i := range rows {
			if rows[i].CallType == "aembedding" {
				row = &rows[i]
				return true
			}
		}
		return false
	})
	if row.KeyHash != sha(key) || row.ModelGroup != "embedder" || row.PromptTokens != 7 || row.Cost < 0.0069 || row.Cost > 0.0071 {
		t.Fatalf("embedding row: key %v group %q tokens %d cost %v", row.KeyHash == sha(key), row.ModelGroup, row.PromptTokens, row.Cost)
	}
}

// TestCacheTranslatedStreamWithoutEndNotStored: an Anthropic stream,
// translated to OpenAI chunks, that the upstream ends (EOF) before its
// message_stop is not stored, whatever end the translation wrote for the
// client: the next identical request goes upstream.
func TestCacheTranslatedStreamWithoutEndNotStored(t *testing.T) {
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_cut\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n")
		fmt.Fprint(w, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")
		fmt.Fprint(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n")
	}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(`
model_list:
  - model_name: claude
    litellm_params: {model: anthropic/claude-x, api_key: k, api_base: "`+up.URL+`"}
litellm_settings:
  cache: true
`))
	if err != nil {
		t.Fatal(err)
	}
	url := serveCfg(t, cfg, Options{})
	body := `{"model":"claude","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	if code, first := send(t, url+"/v1/chat/completions", "", body); code != 200 || !strings.Contains(first, "Hel") {
		t.Fatalf("first: %d %s", code, first)
	}
	resp, replay := sendH(t, url+"/v1/chat/completions", "", body)
	if isHit(resp) || calls.Load() != 2 {
		t.Fatalf("a translated stream without its message_stop was stored and replayed (upstream asked %d times):\n%s", calls.Load(), replay)
	}
}
