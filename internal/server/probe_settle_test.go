package server

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestTightTicketSettlesBeforeTheAnswer: a key with max_parallel_requests:
// 1 sends its requests one after the other, through a load balancer that
// may put the next one on another replica. Its ticket is tight (no slot
// left), so its settle lands before the answer is written, as before the
// settle moved after the answer: once the client has its answer, the next
// request, on this replica or another, finds the slot back on Redis. (The
// review's probe: with the settle after the answer, replica B answered 429.)
func TestTightTicketSettlesBeforeTheAnswer(t *testing.T) {
	e := startSettle(t, "default") // replica A: Redis through a proxy that holds back the settle
	const key = "sk-settle-par-a"
	if code, body := send(t, e.url+"/key/generate", "sk-1234", `{"key": "`+key+`", "max_budget": 1, "max_parallel_requests": 1}`); code != 200 {
		t.Fatal(code, body)
	}
	// Replica B: the same Redis (directly), the same keys and prefix.
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	t.Cleanup(up.Close)
	ropts := e.rc.Options()
	cfg, err := config.Parse("b.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL)+"  redis_url: redis://"+ropts.Addr+"/"+strconv.Itoa(ropts.DB)+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := serveCfg(t, cfg, Options{Store: e.st, RedisPrefix: e.prefix})
	if _, ok := within(30*time.Second, func() bool {
		code, _ := send(t, b+"/v1/chat/completions", "sk-settle-warm", chat3)
		return code == 200
	}); !ok {
		t.Fatal("replica B never served")
	}

	// Once unstalled first: the fused scripts (budget and limits) are loaded.
	if a := await(t, e.ask(key), "a first request"); a.code != 200 {
		t.Fatalf("first request: %d %s", a.code, a.body)
	}
	if _, ok := within(30*time.Second, func() bool { return e.srv.inflight.Load() == 0 }); !ok {
		t.Fatal("the first request did not end")
	}
	e.stallAt.Store(e.calls.Load() + 1)
	first := e.ask(key)
	if _, ok := within(30*time.Second, func() bool { return e.calls.Load() >= e.stallAt.Load() }); !ok {
		t.Fatal("the request never reached its upstream")
	}
	// Its settle is held back: no answer may come before it lands. (A slow
	// machine can only hide an early answer here, never invent one.)
	select {
	case a := <-first:
		t.Fatalf("answered (%d) while its settle was held back: the next request would find its own slot taken", a.code)
	case <-time.After(300 * time.Millisecond):
	}
	if err := e.proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	if a := await(t, first, "the request on A"); a.code != 200 {
		t.Fatalf("first request: %d %s", a.code, a.body)
	}
	// The client has its answer: its next requests, on B and on A.
	for _, url := range []string{b, e.url} {
		if code, body := send(t, url+"/v1/chat/completions", key, chat3); code != 200 {
			t.Fatalf("the next request, on %s, after the answer: %d %s (its own max_parallel_requests: 1 still counts the answered request)", url, code, body)
		}
	}
}

// TestProbeKeySpendHeaderNeverGoesBack: two requests of one key on this
// replica. The second is at its upstream when the first is answered with
// its settle held back on the way to Redis; then the second is answered.
// Its x-litellm-key-spend must not be below what the first answer already
// told the client (the first's cost): before the settle went off the
// answer, the second's settle ran after the first's and its header was
// Redis's figure with both.
func TestProbeKeySpendHeaderNeverGoesBack(t *testing.T) {
	e := startSettle(t, "default")
	const key = "sk-settle-header"
	e.key(t, key, 1)
	// A second upstream, in front of the same mock: a request whose body
	// says "WAIT" waits there until released; one saying "BIG" stalls the
	// Redis proxy (its settle is held back) and uses 10 completion tokens.
	entered, release := make(chan struct{}, 1), make(chan struct{})
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		switch {
		case bytes.Contains(body, []byte("WAIT")):
			entered <- struct{}{}
			<-release
			r.Header.Set("x-mock-completion-tokens", "3")
		case bytes.Contains(body, []byte("BIG")):
			e.proxy.Stall()
			r.Header.Set("x-mock-completion-tokens", "10")
		}
		mock.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	if code, body := send(t, e.url+"/model/new", "sk-1234", `{"model_name": "gpt-4w", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": "`+up.URL+`", "input_cost_per_token": 0, "output_cost_per_token": 0.0001}}`); code != 200 {
		t.Skipf("cannot add a model at run time (%d %s)", code, body)
	}
	ask := func(content string) <-chan answer {
		out := make(chan answer, 1)
		go func() {
			req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4w","max_tokens":10,"messages":[{"role":"user","content":"`+content+`"}]}`))
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
			if err != nil {
				out <- answer{err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			out <- answer{code: resp.StatusCode, h: resp.Header, body: string(b), err: err}
		}()
		return out
	}
	second := ask("WAIT")
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the second request never reached its upstream")
	}
	a1 := await(t, ask("BIG"), "the first answer")
	if a1.code != 200 {
		t.Fatalf("first: %d %s", a1.code, a1.body)
	}
	close(release)
	a2 := await(t, second, "the second answer")
	if a2.code != 200 {
		t.Fatalf("second: %d %s", a2.code, a2.body)
	}
	if err := e.proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	s1, _ := strconv.ParseFloat(a1.h.Get("X-Litellm-Key-Spend"), 64)
	s2, _ := strconv.ParseFloat(a2.h.Get("X-Litellm-Key-Spend"), 64)
	c2, _ := strconv.ParseFloat(a2.h.Get("X-Tollgate-Response-Cost"), 64)
	if s2 < s1+c2-1e-12 {
		t.Fatalf("key spend told: %v with the first answer, then %v with the second (cost %v): want at least %v", s1, s2, c2, s1+c2)
	}
}

// TestProbeSettleReplyLostAfterTheAnswerBookedOnce: the settle reaches
// Redis and runs, but its reply is lost (default timeouts: the connection's
// read gives up); the answer is already out. Its spend is booked once:
// once Redis answers again and the next request has come and gone, Redis
// and the store have every request's cost, no more. Passes on the branch
// (the in-doubt path is main's, moved after the answer).
func TestProbeSettleReplyLostAfterTheAnswerBookedOnce(t *testing.T) {
	e := startSettleWith(t, "default", Options{})
	const key = "sk-settle-lost-reply"
	e.key(t, key, 1)
	e.dropReplies = true
	e.stallAt.Store(e.calls.Load() + 1)
	a := await(t, e.ask(key), "the answer whose settle's reply is lost")
	if a.code != 200 {
		t.Fatalf("%d %s", a.code, a.body)
	}
	cost, _ := strconv.ParseFloat(a.h.Get("X-Tollgate-Response-Cost"), 64)
	if _, ok := within(30*time.Second, func() bool { return e.srv.inflight.Load() == 0 }); !ok {
		t.Fatal("the request did not end after its settle's reply was lost")
	}
	if err := e.proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	if _, ok := within(30*time.Second, func() bool { return !e.srv.limits.Limiter.Degraded() }); !ok {
		t.Fatal("the gateway did not return to Redis")
	}
	b := await(t, e.ask(key), "the next request")
	if b.code != 200 {
		t.Fatalf("%d %s", b.code, b.body)
	}
	// One more, on Redis: its hold carries whatever the one before booked
	// in process (had Redis been marked down again meanwhile).
	if _, ok := within(30*time.Second, func() bool { return !e.srv.limits.Limiter.Degraded() }); !ok {
		t.Fatal("the gateway did not return to Redis")
	}
	if c := await(t, e.ask(key), "the third request"); c.code != 200 {
		t.Fatalf("%d %s", c.code, c.body)
	}
	e.stored(t, key, 3*cost, 3)
	e.waitBooks(t, key, 3*ledger.USD(cost), "after the third request")
}
