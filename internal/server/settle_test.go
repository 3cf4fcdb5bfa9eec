package server

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
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
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/netsim"
	"github.com/tollgate/tollgate/internal/store"
)

// settleEnv is one gateway with budgets on a real Redis reached through a
// proxy that the upstream stalls when it is called (netsim.Proxy.Stall):
// the hold has been answered, and what the gateway sends Redis next - the
// settle - is held back until the test restores the proxy. Holds wait for
// Redis as long as it takes (RedisHoldTimeout), so nothing here depends on
// a deadline being met.
type settleEnv struct {
	url    string
	srv    *Server
	st     store.Store
	proxy  *netsim.Proxy
	rc     *redis.Client
	prefix string
	calls  atomic.Int64
	// stallAt is the upstream call (1, 2, ...) that stalls the proxy.
	stallAt atomic.Int64
	// dropReplies: that call makes the proxy drop Redis's replies instead
	// (netsim.Proxy.DropReplies): the settle runs, its reply is lost.
	dropReplies bool
	// stop shuts the gateway down gracefully; done is closed when Serve
	// has returned.
	stop func()
	done chan struct{}
}

func startSettle(t *testing.T, mode string) *settleEnv {
	t.Helper()
	return startSettleWith(t, mode, Options{RedisHoldTimeout: 2 * time.Minute, RedisReadTimeout: 2 * time.Minute})
}

// startSettleWith is startSettle with the Redis timeouts of opts (zero:
// the defaults), and stalling or dropping replies as e.lose says.
func startSettleWith(t *testing.T, mode string, opts Options) *settleEnv {
	t.Helper()
	rd := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if rd == "" {
		t.Skip("TOLLGATE_TEST_REDIS_URL is not set: skipping the settle-after-the-answer test")
	}
	ropts, err := redis.ParseURL(rd)
	if err != nil {
		t.Fatal(err)
	}
	e := &settleEnv{prefix: "settle-" + strconv.FormatInt(time.Now().UnixNano(), 36), rc: redis.NewClient(ropts), done: make(chan struct{})}
	t.Cleanup(func() { e.rc.Close() })
	if e.proxy, err = netsim.NewProxy(ropts.Addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.proxy.Cut)
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.calls.Add(1) == e.stallAt.Load() {
			if e.dropReplies {
				e.proxy.DropReplies()
			} else {
				e.proxy.Stall()
			}
		}
		mock.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)
	yaml := strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL) + "  redis_url: redis://" + e.proxy.Addr() + "/" + strconv.Itoa(ropts.DB) + "\n" +
		"litellm_settings:\n  budget_enforcement: " + mode + "\n"
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e.st = sqliteStore(t)
	e.srv, err = New(cfg, Options{Store: e.st, RedisPrefix: e.prefix, RedisHoldTimeout: opts.RedisHoldTimeout, RedisReadTimeout: opts.RedisReadTimeout, Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	e.stop = stop
	go func() { e.srv.Serve(ctx, ln); close(e.done) }()
	t.Cleanup(func() {
		_ = e.proxy.Restore() // a stalled settle must not keep the shutdown waiting
		stop()
		<-e.done
	})
	e.url = "http://" + ln.Addr().String()
	// One request first: its settle loads the settle script (SCRIPT LOAD,
	// once per process, waited for before the first settle is queued).
	e.key(t, "sk-settle-warm", 1)
	if a := await(t, e.ask("sk-settle-warm"), "the first request"); a.code != 200 {
		t.Fatalf("first request: %d %s", a.code, a.body)
	}
	return e
}

// key makes a key with a budget.
func (e *settleEnv) key(t *testing.T, name string, budget float64) {
	t.Helper()
	if code, body := send(t, e.url+"/key/generate", "sk-1234", fmt.Sprintf(`{"key": %q, "max_budget": %v}`, name, budget)); code != 200 {
		t.Fatal(code, body)
	}
}

// answer is what a client got.
type answer struct {
	code int
	h    http.Header
	body string
	err  error
}

// ask sends chat3 with key on a connection of its own, closed once the
// answer is read (the client is gone then), and delivers the answer.
func (e *settleEnv) ask(key string) <-chan answer {
	out := make(chan answer, 1)
	go func() {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(chat3))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
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

// await waits for an answer (generously), failing the test without one.
func await(t *testing.T, ch <-chan answer, what string) answer {
	t.Helper()
	select {
	case a := <-ch:
		if a.err != nil {
			t.Fatalf("%s: %v", what, a.err)
		}
		return a
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer in 30 s", what)
	}
	return answer{}
}

// redisBooks reads the key's spent and held on Redis, directly (not
// through the proxy).
func (e *settleEnv) redisBooks(t *testing.T, key string) (spent, held ledger.Amount) {
	t.Helper()
	v, err := e.rc.HMGet(context.Background(), "{"+e.prefix+"}:bud:key:"+sha(key), "spent", "held").Result()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := strconv.ParseInt(fmt.Sprint(v[0]), 10, 64)
	h, _ := strconv.ParseInt(fmt.Sprint(v[1]), 10, 64)
	return ledger.Amount(s), ledger.Amount(h)
}

// waitBooks waits until Redis has spent booked and nothing held.
func (e *settleEnv) waitBooks(t *testing.T, key string, spent ledger.Amount, what string) {
	t.Helper()
	if _, ok := within(30*time.Second, func() bool {
		s, h := e.redisBooks(t, key)
		return s == spent && h == 0
	}); !ok {
		s, h := e.redisBooks(t, key)
		t.Fatalf("%s: redis has spent %v, held %v; want spent %v, nothing held", what, s.Dollars(), h.Dollars(), spent.Dollars())
	}
}

// stored checks the store's spend for key and its rows, once written.
func (e *settleEnv) stored(t *testing.T, key string, spend float64, rows int) {
	t.Helper()
	e.srv.writer.Flush()
	k, err := e.st.GetKey(context.Background(), sha(key))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(k.Spend-spend) > 1e-12 {
		t.Errorf("store has spend %v for key, want %v", k.Spend, spend)
	}
	logs, total, err := e.st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	if err != nil {
		t.Fatal(err)
	}
	if total != rows {
		t.Errorf("%d spend rows, want %d", total, rows)
	}
	for _, l := range logs {
		if l.Status != 200 {
			t.Errorf("spend row %s has status %d, want 200", l.RequestID, l.Status)
		}
	}
}

// answeredBeforeSettle sends a request whose settle the proxy holds back,
// and checks that its answer came while Redis still had its hold and not
// its spend. It returns the answer's cost.
func (e *settleEnv) answeredBeforeSettle(t *testing.T, key string) ledger.Amount {
	t.Helper()
	e.stallAt.Store(e.calls.Load() + 1)
	a := await(t, e.ask(key), "the answer while its settle is held back")
	if a.code != 200 {
		t.Fatalf("%d %s", a.code, a.body)
	}
	cost, err := strconv.ParseFloat(a.h.Get("X-Tollgate-Response-Cost"), 64)
	if err != nil || cost <= 0 {
		t.Fatalf("response cost %q (%v)", a.h.Get("X-Tollgate-Response-Cost"), err)
	}
	if s, h := e.redisBooks(t, key); s != 0 || h == 0 {
		t.Fatalf("the answer came with redis at spent %v, held %v: want its hold there and not its spend", s.Dollars(), h.Dollars())
	}
	// The key's spend header is this replica's view with this request's
	// cost, although Redis has not booked it yet.
	if ks := a.h.Get("X-Litellm-Key-Spend"); ks != a.h.Get("X-Tollgate-Response-Cost") {
		t.Errorf("key spend header %q, want the request's cost %q", ks, a.h.Get("X-Tollgate-Response-Cost"))
	}
	return ledger.USD(cost)
}

// TestSettleAfterTheAnswer: with budgets on Redis, a non-streamed answer
// is written while its settle is still on its way to Redis (queued before
// the answer, its reply waited for after it), and the settle is then
// booked, once, however the request ends: the client gone, Redis gone
// (carried later), a graceful shutdown.
func TestSettleAfterTheAnswer(t *testing.T) {
	t.Parallel()
	t.Run("answered, then booked", func(t *testing.T) {
		e := startSettle(t, "default")
		const key = "sk-settle-booked"
		e.key(t, key, 1)
		cost := e.answeredBeforeSettle(t, key)
		if err := e.proxy.Restore(); err != nil {
			t.Fatal(err)
		}
		e.waitBooks(t, key, cost, "after the settle went")
		e.stored(t, key, cost.Dollars(), 1)
	})

	// The client's next request from this replica is decided after the
	// settle: queued behind it, it sees the first request's spend. The
	// first overruns its hold (default mode: held what remained, cost
	// more); a hold decided before the settle would see spend 0 and the
	// first's hold.
	t.Run("the next request is decided after the settle", func(t *testing.T) {
		e := startSettle(t, "default")
		const key = "sk-settle-order"
		e.key(t, key, 0.0001) // chat3 costs 0.0003
		cost := e.answeredBeforeSettle(t, key)
		next := e.ask(key)
		if _, ok := within(30*time.Second, func() bool { return e.srv.inflight.Load() == 2 }); !ok {
			t.Fatalf("the second request is not in flight beside the first's settle (%d in flight)", e.srv.inflight.Load())
		}
		if err := e.proxy.Restore(); err != nil {
			t.Fatal(err)
		}
		a := await(t, next, "the second request")
		want := "Current spend for token: " + strconv.FormatFloat(cost.Dollars(), 'g', -1, 64)
		if a.code != 400 || !strings.Contains(a.body, "budget_exceeded") || !strings.Contains(a.body, want) {
			t.Fatalf("second request: %d %s; want a budget refusal saying %q", a.code, a.body, want)
		}
		e.waitBooks(t, key, cost, "after both")
		e.stored(t, key, cost.Dollars(), 1)
	})

	// Redis stops answering once the answer is out: the settle's spend is
	// carried to Redis when it is back, once.
	t.Run("redis gone after the answer", func(t *testing.T) {
		e := startSettle(t, "default")
		const key = "sk-settle-carried"
		e.key(t, key, 1)
		cost := e.answeredBeforeSettle(t, key)
		e.proxy.Cut() // the settle never reaches Redis; its connection fails
		if _, ok := within(30*time.Second, func() bool { return e.srv.inflight.Load() == 0 }); !ok {
			t.Fatal("the request did not end after Redis went")
		}
		if s, _ := e.redisBooks(t, key); s != 0 {
			t.Fatalf("redis booked %v through a cut connection", s.Dollars())
		}
		if err := e.proxy.Restore(); err != nil {
			t.Fatal(err)
		}
		if _, ok := within(30*time.Second, func() bool { return !e.srv.limits.Limiter.Degraded() }); !ok {
			t.Fatal("the gateway did not return to Redis")
		}
		e.waitBooks(t, key, cost, "once Redis was back")
		// A later request's hold carries nothing more: booked once.
		a := await(t, e.ask(key), "a request after Redis came back")
		if a.code != 200 {
			t.Fatalf("%d %s", a.code, a.body)
		}
		e.waitBooks(t, key, 2*cost, "after the next request")
		e.stored(t, key, 2*cost.Dollars(), 2)
	})

	// The client leaves as soon as it has the answer (its connection is
	// closed): the settle still lands.
	t.Run("client gone after the answer", func(t *testing.T) {
		e := startSettle(t, "default")
		const key = "sk-settle-gone"
		e.key(t, key, 1)
		cost := e.answeredBeforeSettle(t, key) // ask closes its connection after the answer
		if e.srv.inflight.Load() != 1 {
			t.Fatalf("%d requests in flight, want the one waiting for its settle", e.srv.inflight.Load())
		}
		if err := e.proxy.Restore(); err != nil {
			t.Fatal(err)
		}
		e.waitBooks(t, key, cost, "after the client left")
		if _, ok := within(30*time.Second, func() bool { return e.srv.inflight.Load() == 0 }); !ok {
			t.Fatal("the request did not end")
		}
		e.stored(t, key, cost.Dollars(), 1)
	})

	// A graceful shutdown while the settle's reply is awaited: the server
	// waits for the request, whose settle lands, and its row is flushed.
	t.Run("shutdown during the settle", func(t *testing.T) {
		e := startSettle(t, "default")
		const key = "sk-settle-shutdown"
		e.key(t, key, 1)
		cost := e.answeredBeforeSettle(t, key)
		e.stop()
		addr := strings.TrimPrefix(e.url, "http://")
		if _, ok := within(30*time.Second, func() bool {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err != nil
		}); !ok {
			t.Fatal("the gateway did not start shutting down")
		}
		select {
		case <-e.done:
			t.Fatal("the gateway stopped with a settle in flight")
		default:
		}
		if err := e.proxy.Restore(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-e.done:
		case <-time.After(60 * time.Second):
			t.Fatal("the gateway did not stop once the settle could land")
		}
		e.waitBooks(t, key, cost, "after the shutdown")
		e.stored(t, key, cost.Dollars(), 1) // the writer was closed: everything queued was written
	})
}
