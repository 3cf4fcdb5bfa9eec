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

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/netsim"
	"github.com/tollgate/tollgate/internal/store"
)

const cacheOn = "litellm_settings:\n  cache: true\n"

// rawPost posts body with key and returns the response and its whole body.
func rawPost(t *testing.T, e *spendEnv, path, key, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	resp, b := post(t, e.url+path, body, append([]string{"Authorization", "Bearer " + key}, headers...)...)
	return resp, string(b)
}

func upstreamCalls(e *spendEnv) int64 { return e.mock.Stats().Requests }

// cacheStores reads tollgate_cache_stores_total from /metrics.
func cacheStores(t *testing.T, e *spendEnv) int {
	t.Helper()
	resp, err := http.Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "tollgate_cache_stores_total "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// storing posts a request whose answer is to be stored and waits until
// it is: the answer reaches the client before the cache is written.
func storing(t *testing.T, e *spendEnv, path, key, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	n := cacheStores(t, e)
	r, b := rawPost(t, e, path, key, body, headers...)
	waitFor(t, "the answer to be stored", func() bool { return cacheStores(t, e) > n })
	return r, b
}

func isHit(resp *http.Response) bool { return resp.Header.Get("X-Tollgate-Cache-Hit") == "true" }

// TestCacheHitServesWithoutUpstream: the second identical request is
// answered from the cache, byte for byte, without reaching the upstream;
// key order, whitespace, user and metadata do not change the key; a
// changed temperature does. The hit's spend row says cache_hit, costs
// nothing and names what it saved; the metrics count it.
func TestCacheHitServesWithoutUpstream(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		e := startSpend(t, st, mockupstream.Options{}, cacheOn)
		r1, b1 := storing(t, e, "/v1/chat/completions", "sk-1234", chat3)
		if r1.StatusCode != 200 || isHit(r1) || r1.Header.Get("X-Litellm-Cache-Key") == "" {
			t.Fatalf("first: %d hit=%v key=%q %s", r1.StatusCode, isHit(r1), r1.Header.Get("X-Litellm-Cache-Key"), b1)
		}
		same := `{ "messages": [ {"content":"one two three four", "role":"user"} ], "max_tokens": 3, "model": "gpt-4", "user": "someone", "metadata": {"a": "b"} }`
		r2, b2 := rawPost(t, e, "/v1/chat/completions", "sk-1234", same)
		if r2.StatusCode != 200 || !isHit(r2) || b2 != b1 || upstreamCalls(e) != 1 {
			t.Fatalf("second: %d hit=%v upstream calls %d\n%s\n%s", r2.StatusCode, isHit(r2), upstreamCalls(e), b1, b2)
		}
		if r2.Header.Get("X-Litellm-Cache-Key") != r1.Header.Get("X-Litellm-Cache-Key") {
			t.Fatalf("keys differ: %q %q", r1.Header.Get("X-Litellm-Cache-Key"), r2.Header.Get("X-Litellm-Cache-Key"))
		}
		if c := r2.Header.Get("X-Litellm-Response-Cost"); c != "0" {
			t.Fatalf("hit cost header %q", c)
		}
		warmer := strings.Replace(chat3, `"max_tokens":3`, `"max_tokens":3,"temperature":0.5`, 1)
		if r3, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", warmer); isHit(r3) || upstreamCalls(e) != 2 {
			t.Fatalf("temperature changed: hit=%v upstream calls %d", isHit(r3), upstreamCalls(e))
		}
		var rows []store.SpendLog
		waitFor(t, "three spend rows", func() bool {
			rows, _, _ = st.ListSpendLogs(context.Background(), store.SpendFilter{})
			return len(rows) == 3
		})
		hits := 0
		for _, l := range rows {
			if l.CacheHit {
				hits++
				if l.Cost != 0 || l.SavedCost <= 0 || l.CacheKey != r2.Header.Get("X-Litellm-Cache-Key") || l.Status != 200 || l.CompletionTokens != 3 {
					t.Errorf("hit row: %+v", l)
				}
			} else if l.Cost <= 0 || l.SavedCost != 0 {
				t.Errorf("miss row: %+v", l)
			}
		}
		if hits != 1 {
			t.Fatalf("%d hit rows in %+v", hits, rows)
		}
		waitFor(t, "two answers stored", func() bool { return cacheStores(t, e) == 2 })
		resp, err := http.Get(e.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		m, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{`tollgate_cache_hits_total{model_group="gpt-4"} 1`, `tollgate_cache_misses_total{model_group="gpt-4"} 2`, "tollgate_cache_stores_total 2", "tollgate_cache_saved_usd_total{model_group=\"gpt-4\"} 0.0003"} {
			if !strings.Contains(string(m), want) {
				t.Errorf("metrics lack %q", want)
			}
		}
	})
}

// TestCacheReplaysStreams: a streamed answer is stored once whole and
// replayed as the same SSE events, for OpenAI and Anthropic clients.
func TestCacheReplaysStreams(t *testing.T) {
	tests := []struct{ name, path, body, event string }{
		{"openai", "/v1/chat/completions", `{"model":"gpt-4","max_tokens":3,"stream":true,"messages":[{"role":"user","content":"hi"}]}`, "data: [DONE]"},
		{"anthropic", "/v1/messages", `{"model":"gpt-4","max_tokens":3,"stream":true,"messages":[{"role":"user","content":"hi"}]}`, "event: message_stop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startSpend(t, sqliteStore(t), mockupstream.Options{}, cacheOn)
			r1, b1 := storing(t, e, tt.path, "sk-1234", tt.body)
			r2, b2 := rawPost(t, e, tt.path, "sk-1234", tt.body)
			if r1.StatusCode != 200 || !isHit(r2) || b1 != b2 || upstreamCalls(e) != 1 {
				t.Fatalf("%d hit=%v upstream calls %d\n%s\n---\n%s", r1.StatusCode, isHit(r2), upstreamCalls(e), b1, b2)
			}
			if ct := r2.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") || !strings.Contains(b2, tt.event) {
				t.Fatalf("replay %q: %s", ct, b2)
			}
			// The whole answer asked for without a stream is another key.
			if r3, _ := rawPost(t, e, tt.path, "sk-1234", strings.Replace(tt.body, `"stream":true,`, "", 1)); isHit(r3) {
				t.Fatal("a whole answer was served from a stream's entry")
			}
		})
	}
}

// TestCacheBrokenStreamIsNotStored: a stream the client abandons is never
// stored half.
func TestCacheBrokenStreamIsNotStored(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{Chunks: 50, ChunkDelay: 20 * time.Millisecond}, cacheOn)
	body := `{"model":"gpt-4","max_tokens":3,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-1234")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // gone mid-stream
	waitFor(t, "the mock to see the stream abandoned", func() bool { return e.mock.Stats().StreamsAborted == 1 })
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", body); isHit(r) {
		t.Fatal("a half stream was served from the cache")
	}
}

// TestCacheRequestControls: no-cache skips the read (and stores), no-store
// skips the write, s-maxage refuses older entries, a namespace is a cache
// of its own, the Cache-Control header works as the body does, and a bad
// cache member is a 400 that never reaches the upstream.
func TestCacheRequestControls(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, cacheOn)
	with := func(ctl string) string {
		return strings.Replace(chat3, `"max_tokens":3`, `"max_tokens":3,"cache":`+ctl, 1)
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", with(`{"no-store":true}`)); isHit(r) || upstreamCalls(e) != 1 {
		t.Fatal("no-store: first call")
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", chat3); isHit(r) || upstreamCalls(e) != 2 {
		t.Fatal("no-store stored its answer")
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", with(`{"no-cache":true}`)); isHit(r) || upstreamCalls(e) != 3 {
		t.Fatal("no-cache read the cache")
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", chat3, "Cache-Control", "no-cache"); isHit(r) || upstreamCalls(e) != 4 {
		t.Fatal("Cache-Control: no-cache read the cache")
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", with(`{"s-maxage":0}`)); isHit(r) {
		t.Fatal("s-maxage 0 took an older entry")
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", with(`{"s-maxage":3600}`)); !isHit(r) {
		t.Fatal("s-maxage 3600 refused a fresh entry")
	}
	if r, _ := storing(t, e, "/v1/chat/completions", "sk-1234", with(`{"namespace":"evals"}`)); isHit(r) {
		t.Fatal("a namespace shared the default's entry")
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", with(`{"namespace":"evals"}`)); !isHit(r) {
		t.Fatal("a namespace did not keep its own entry")
	}
	// ttl: the entry expires on its own (polled, not slept).
	short := strings.Replace(chat3, "four", "five", 1)
	short = strings.Replace(short, `"max_tokens":3`, `"max_tokens":3,"cache":{"ttl":1}`, 1)
	storing(t, e, "/v1/chat/completions", "sk-1234", short)
	waitFor(t, "a ttl 1 entry to expire", func() bool {
		r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", short, "Cache-Control", "no-store")
		return !isHit(r)
	})
	before := upstreamCalls(e)
	for _, bad := range []string{`"x"`, `{"ttl":"soon"}`, `{"no-cache":"yes"}`, `{"bogus":1}`} {
		r, b := rawPost(t, e, "/v1/chat/completions", "sk-1234", with(bad))
		if r.StatusCode != 400 || !strings.Contains(b, `"param":"cache"`) {
			t.Errorf("cache %s: %d %s", bad, r.StatusCode, b)
		}
	}
	if upstreamCalls(e) != before {
		t.Fatal("a bad cache member reached the upstream")
	}
}

// TestCacheIsScopedByTeam: a team's answer never reaches another team; a
// second key of the same team shares it; cache_params.namespace shares
// across teams; a key's metadata.cache turns the cache off for it.
func TestCacheIsScopedByTeam(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, cacheOn)
	for _, team := range []string{"team-a", "team-b"} {
		if resp, out := e.post(t, "/team/new", "sk-1234", `{"team_id":"`+team+`"}`); resp.StatusCode != 200 {
			t.Fatalf("team: %d %v", resp.StatusCode, out)
		}
	}
	a1 := newKey(t, e, `{"team_id":"team-a"}`)
	a2 := newKey(t, e, `{"team_id":"team-a"}`)
	b1 := newKey(t, e, `{"team_id":"team-b"}`)
	off := newKey(t, e, `{"team_id":"team-a","metadata":{"cache":{"no-cache":true,"no-store":true}}}`)
	solo1, solo2 := newKey(t, e, `{}`), newKey(t, e, `{}`)
	storing(t, e, "/v1/chat/completions", a1, chat3)
	if r, _ := rawPost(t, e, "/v1/chat/completions", b1, chat3); isHit(r) {
		t.Fatal("team B got team A's answer")
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", a2, chat3); !isHit(r) {
		t.Fatal("a second key of team A missed its team's answer")
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", off, chat3); isHit(r) || r.Header.Get("X-Litellm-Cache-Key") != "" {
		t.Fatal("a key with the cache off used it")
	}
	rawPost(t, e, "/v1/chat/completions", solo1, chat3)
	if r, _ := rawPost(t, e, "/v1/chat/completions", solo2, chat3); isHit(r) {
		t.Fatal("a key without a team got another key's answer")
	}

	shared := startSpend(t, sqliteStore(t), mockupstream.Options{}, cacheOn+"  cache_params: {namespace: shared}\n")
	for _, team := range []string{"team-a", "team-b"} {
		shared.post(t, "/team/new", "sk-1234", `{"team_id":"`+team+`"}`)
	}
	sa, sb := newKey(t, shared, `{"team_id":"team-a"}`), newKey(t, shared, `{"team_id":"team-b"}`)
	storing(t, shared, "/v1/chat/completions", sa, chat3)
	if r, _ := rawPost(t, shared, "/v1/chat/completions", sb, chat3); !isHit(r) {
		t.Fatal("the operator's shared namespace did not share")
	}
}

// TestCacheModeDefaultOff: with mode default_off only requests that ask
// with use-cache are cached.
func TestCacheModeDefaultOff(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, cacheOn+"  cache_params: {mode: default_off}\n")
	rawPost(t, e, "/v1/chat/completions", "sk-1234", chat3)
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", chat3); isHit(r) {
		t.Fatal("default_off cached a request that did not ask")
	}
	opt := strings.Replace(chat3, `"max_tokens":3`, `"max_tokens":3,"cache":{"use-cache":true}`, 1)
	storing(t, e, "/v1/chat/completions", "sk-1234", opt)
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", opt); !isHit(r) {
		t.Fatal("use-cache was not cached")
	}
}

// TestCacheHitCountsRequestsNotTokens: a hit takes a place under rpm but
// adds no tokens to tpm.
func TestCacheHitCountsRequestsNotTokens(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, cacheOn)
	key := newKey(t, e, `{"rpm_limit":3,"tpm_limit":100000}`)
	r1, _ := storing(t, e, "/v1/chat/completions", key, chat3)
	var tokens []string
	for range 2 {
		r, _ := rawPost(t, e, "/v1/chat/completions", key, chat3)
		if r.StatusCode != 200 || !isHit(r) {
			t.Fatalf("hit: %d %v", r.StatusCode, isHit(r))
		}
		tokens = append(tokens, r.Header.Get("X-Ratelimit-Remaining-Tokens"))
	}
	if tokens[0] == "" || tokens[0] != tokens[1] {
		t.Fatalf("a hit used tokens: remaining %q after the miss (%q), %q", tokens, r1.Header.Get("X-Ratelimit-Remaining-Tokens"), tokens)
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", key, chat3); r.StatusCode != 429 {
		t.Fatalf("the fourth request in a minute of rpm 3: %d", r.StatusCode)
	}
}

// TestCacheOnRedis: answers stored on the real Redis reach another
// replica; a Redis that is down makes every request a miss that succeeds.
func TestCacheOnRedis(t *testing.T) {
	u := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if u == "" {
		t.Skip("TOLLGATE_TEST_REDIS_URL is not set: skipping the Redis cache test")
	}
	prefix := "cache-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	yaml := strings.Replace(pricedConfig, "general_settings:\n", "general_settings:\n  redis_url: "+u+"\n", 1) + cacheOn + "  cache_params: {type: redis, ttl: 60}\n"
	st := sqliteStore(t)
	a := startConfigWith(t, st, mockupstream.Options{}, yaml, Options{RedisPrefix: prefix})
	b := startConfigWith(t, st, mockupstream.Options{}, yaml, Options{RedisPrefix: prefix})
	r1, b1 := storing(t, a, "/v1/chat/completions", "sk-1234", chat3)
	r2, b2 := rawPost(t, b, "/v1/chat/completions", "sk-1234", chat3)
	if r1.StatusCode != 200 || !isHit(r2) || b1 != b2 || upstreamCalls(b) != 0 {
		t.Fatalf("replica B: hit=%v upstream %d\n%s\n%s", isHit(r2), upstreamCalls(b), b1, b2)
	}
	if resp, out := a.post(t, "/cache/flushall", "sk-1234", ""); resp.StatusCode != 200 {
		t.Fatalf("flushall: %d %v", resp.StatusCode, out)
	}
	if r, _ := rawPost(t, b, "/v1/chat/completions", "sk-1234", chat3); isHit(r) {
		t.Fatal("an entry survived flushall on Redis")
	}

	for _, how := range []string{"cut", "black hole"} {
		t.Run("redis down: "+how, func(t *testing.T) {
			px, err := netsim.NewProxy(strings.Split(u, "/")[2])
			if err != nil {
				t.Fatal(err)
			}
			if how == "cut" {
				px.Cut()
			} else {
				px.BlackHole()
			}
			defer px.Cut()
			down := strings.Replace(pricedConfig, "general_settings:\n", "general_settings:\n  redis_url: redis://"+px.Addr()+"/0\n", 1) + cacheOn + "  cache_params: {type: redis}\n"
			e := startConfigWith(t, sqliteStore(t), mockupstream.Options{}, down, Options{RedisPrefix: prefix})
			for i := range 3 {
				if r, body := rawPost(t, e, "/v1/chat/completions", "sk-1234", chat3); r.StatusCode != 200 || isHit(r) {
					t.Fatalf("request %d with Redis down: %d %s", i, r.StatusCode, body)
				}
			}
			if upstreamCalls(e) != 3 {
				t.Fatalf("upstream calls %d", upstreamCalls(e))
			}
		})
	}
}

// TestCacheManagementRoutes: /cache/ping is for proxy_admin and
// proxy_admin_viewer, /cache/delete and /cache/flushall for proxy_admin
// only; delete and flushall empty the cache; with the cache off every
// route is a 503.
func TestCacheManagementRoutes(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, cacheOn)
	keyOf := func(role string) string {
		_, out := e.post(t, "/user/new", "sk-1234", `{"user_role": "`+role+`"}`)
		k, _ := out["key"].(string)
		if k == "" {
			t.Fatalf("/user/new %s: %v", role, out)
		}
		return k
	}
	call := func(method, path, key, body string) int {
		req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		role, key           string
		ping, delete, flush int
	}{
		{"no key", "", 401, 401, 401},
		{"internal_user", keyOf("internal_user"), 403, 403, 403},
		{"internal_user_viewer", keyOf("internal_user_viewer"), 403, 403, 403},
		{"proxy_admin_viewer", keyOf("proxy_admin_viewer"), 200, 403, 403},
		{"proxy_admin", keyOf("proxy_admin"), 200, 200, 200},
		{"master key", "sk-1234", 200, 200, 200},
	}
	for _, tt := range tests {
		if got := call("GET", "/cache/ping", tt.key, ""); got != tt.ping {
			t.Errorf("%s /cache/ping: %d, want %d", tt.role, got, tt.ping)
		}
		if got := call("POST", "/cache/delete", tt.key, `{"keys":["nothing"]}`); got != tt.delete {
			t.Errorf("%s /cache/delete: %d, want %d", tt.role, got, tt.delete)
		}
		if got := call("POST", "/cache/flushall", tt.key, ""); got != tt.flush {
			t.Errorf("%s /cache/flushall: %d, want %d", tt.role, got, tt.flush)
		}
	}
	r, _ := storing(t, e, "/v1/chat/completions", "sk-1234", chat3)
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", chat3); !isHit(r) {
		t.Fatal("not cached")
	}
	if got := call("POST", "/cache/delete", "sk-1234", `{"keys":["`+r.Header.Get("X-Litellm-Cache-Key")+`"]}`); got != 200 {
		t.Fatalf("delete: %d", got)
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", chat3); isHit(r) {
		t.Fatal("a deleted entry was served")
	}
	if got := call("POST", "/cache/flushall", "sk-1234", ""); got != 200 {
		t.Fatalf("flushall: %d", got)
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", chat3); isHit(r) {
		t.Fatal("an entry survived flushall")
	}
	if got := call("POST", "/cache/delete", "sk-1234", `{}`); got != 400 {
		t.Fatalf("delete without keys: %d", got)
	}

	off := startSpend(t, sqliteStore(t), mockupstream.Options{}, "")
	req, _ := http.NewRequest("GET", off.url+"/cache/ping", nil)
	req.Header.Set("Authorization", "Bearer sk-1234")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("/cache/ping with the cache off: %d", resp.StatusCode)
	}
}

// TestSemanticCache: with type local-semantic, a prompt whose embedding is
// at least similarity_threshold similar to a stored one is served its
// answer; a dissimilar prompt, or the same prompt with another
// temperature, is not; an embedding deployment that fails is a miss.
func TestSemanticCache(t *testing.T) {
	var embedFail atomic.Bool
	emb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Input string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		if embedFail.Load() {
			http.Error(w, `{"error":{"message":"down"}}`, 500)
			return
		}
		vec := "[0, 0, 1]"
		switch {
		case strings.Contains(req.Input, "capital of France"):
			vec = "[1, 0, 0]"
		case strings.Contains(req.Input, "France's capital"):
			vec = "[0.98, 0.2, 0]"
		case strings.Contains(req.Input, "weather"):
			vec = "[0, 1, 0]"
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":%s}],"model":"e","usage":{"prompt_tokens":1,"total_tokens":1}}`, vec)
	}))
	defer emb.Close()
	models := "  - model_name: embedder\n    litellm_params: {model: openai/text-embedding-3-small, api_base: \"" + emb.URL + "\"}\n"
	e := startSpendWith(t, sqliteStore(t), mockupstream.Options{}, models,
		cacheOn+"  cache_params: {type: local-semantic, similarity_threshold: 0.9, redis_semantic_cache_embedding_model: embedder}\n", Options{})
	ask := func(q, extra string) string {
		return `{"model":"gpt-4","max_tokens":3` + extra + `,"messages":[{"role":"user","content":"` + q + `"}]}`
	}
	_, b1 := storing(t, e, "/v1/chat/completions", "sk-1234", ask("What is the capital of France?", ""))
	r2, b2 := rawPost(t, e, "/v1/chat/completions", "sk-1234", ask("Tell me France's capital", ""))
	if !isHit(r2) || b2 != b1 || upstreamCalls(e) != 1 {
		t.Fatalf("similar prompt: hit=%v upstream %d", isHit(r2), upstreamCalls(e))
	}
	if sim, _ := strconv.ParseFloat(r2.Header.Get("X-Tollgate-Cache-Similarity"), 64); sim < 0.9 || sim >= 1 {
		t.Fatalf("similarity header %q", r2.Header.Get("X-Tollgate-Cache-Similarity"))
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", ask("How is the weather?", "")); isHit(r) {
		t.Fatal("a dissimilar prompt was served another's answer")
	}
	if r, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", ask("Tell me France's capital", `,"temperature":1`)); isHit(r) {
		t.Fatal("another temperature was served the answer")
	}
	embedFail.Store(true)
	if r, body := rawPost(t, e, "/v1/chat/completions", "sk-1234", ask("Where is France's capital", "")); r.StatusCode != 200 || isHit(r) {
		t.Fatalf("with the embedder down: %d hit=%v %s", r.StatusCode, isHit(r), body)
	}
}

// TestCacheChargeHitsAndPayloads: with charge_hits a hit is booked at its
// stored cost (and saves nothing); the logging callback's payloads carry
// LiteLLM's cache_hit and cache_key.
func TestCacheChargeHitsAndPayloads(t *testing.T) {
	t.Parallel()
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	st := sqliteStore(t)
	e := startSpend(t, st, mockupstream.Options{}, cacheOn+"  cache_params: {charge_hits: true}\n  callbacks: [\"hook\"]\ncallback_settings:\n  hook: {callback_type: generic_api, endpoint: \""+hs.URL+"\", log_format: single}\n")
	r1, _ := storing(t, e, "/v1/chat/completions", "sk-1234", chat3)
	r2, _ := rawPost(t, e, "/v1/chat/completions", "sk-1234", chat3)
	if !isHit(r2) || r2.Header.Get("X-Litellm-Response-Cost") != r1.Header.Get("X-Litellm-Response-Cost") || r1.Header.Get("X-Litellm-Response-Cost") == "0" {
		t.Fatalf("charged hit: hit=%v cost %q, miss cost %q", isHit(r2), r2.Header.Get("X-Litellm-Response-Cost"), r1.Header.Get("X-Litellm-Response-Cost"))
	}
	var rows []store.SpendLog
	waitFor(t, "two spend rows", func() bool {
		rows, _, _ = st.ListSpendLogs(context.Background(), store.SpendFilter{})
		return len(rows) == 2
	})
	for _, l := range rows {
		if l.CacheHit && (l.Cost <= 0 || l.SavedCost != 0) {
			t.Errorf("charged hit row: %+v", l)
		}
	}
	var hits, misses int
	waitFor(t, "two payloads", func() bool {
		hook.mu.Lock()
		defer hook.mu.Unlock()
		hits, misses = 0, 0
		for _, b := range hook.bodies {
			var p struct {
				CacheHit *bool   `json:"cache_hit"`
				CacheKey *string `json:"cache_key"`
			}
			if json.Unmarshal(b, &p) != nil {
				var list []json.RawMessage
				if json.Unmarshal(b, &list) == nil && len(list) > 0 {
					_ = json.Unmarshal(list[0], &p)
				}
			}
			switch {
			case p.CacheHit != nil && *p.CacheHit && p.CacheKey != nil && *p.CacheKey == r2.Header.Get("X-Litellm-Cache-Key"):
				hits++
			case p.CacheHit != nil && !*p.CacheHit:
				misses++
			}
		}
		return hits+misses >= 2
	})
	if hits != 1 || misses != 1 {
		t.Fatalf("payloads: %d hits, %d misses", hits, misses)
	}
}

// TestCacheSkipsAnswersOverMaxEntryBytes: an answer larger than
// max_entry_bytes is served and not stored.
func TestCacheSkipsAnswersOverMaxEntryBytes(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, cacheOn+"  cache_params: {max_entry_bytes: 64}\n")
	for i := range 2 {
		if r, b := rawPost(t, e, "/v1/chat/completions", "sk-1234", chat3); r.StatusCode != 200 || isHit(r) || len(b) <= 64 {
			t.Fatalf("request %d: %d hit=%v %d bytes", i, r.StatusCode, isHit(r), len(b))
		}
	}
	if n := cacheStores(t, e); n != 0 || upstreamCalls(e) != 2 {
		t.Fatalf("%d stores, %d upstream calls", n, upstreamCalls(e))
	}
}
