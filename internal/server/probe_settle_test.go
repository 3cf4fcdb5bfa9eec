package server

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestProbeNextRequestOnAnotherReplicaNotRefusedByOwnParallelLimit: a key
// with max_parallel_requests: 1 sends its requests one after the other,
// through a load balancer that puts the next one on another replica. Once
// the client has its answer, the next request must not be refused by the
// key's own parallel limit because the first's slot is not given back on
// Redis yet (the fused settle is queued before the answer and lands after
// it). On main the answer waits for the settle, so the slot is back first.
func TestProbeNextRequestOnAnotherReplicaNotRefusedByOwnParallelLimit(t *testing.T) {
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
	a := await(t, e.ask(key), "the request on A")
	if n := e.srv.inflight.Load(); n != 1 {
		t.Fatalf("%d requests in flight on A after the answer, want the one waiting for its settle", n)
	}
	if a.code != 200 {
		t.Fatalf("first request: %d %s", a.code, a.body)
	}
	// The client has its answer: its next request goes to B.
	req, _ := http.NewRequest("POST", b+"/v1/chat/completions", strings.NewReader(chat3))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := e.proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("the next request, on B, after the answer from A: %d (its own max_parallel_requests: 1 still counts the answered request)", resp.StatusCode)
	}
}

// TestProbeNextRequestOnThisReplicaSeesTheSlotBack: the same client's next
// request on this replica (on another connection) while the first's fused
// settle is held back is decided after it: its own max_parallel_requests: 1
// finds the slot given back. Passes on the branch; pins the limit's side of
// the order (TestSettleAfterTheAnswer pins the budget's).
func TestProbeNextRequestOnThisReplicaSeesTheSlotBack(t *testing.T) {
	e := startSettle(t, "default")
	const key = "sk-settle-par-same"
	if code, body := send(t, e.url+"/key/generate", "sk-1234", `{"key": "`+key+`", "max_budget": 1, "max_parallel_requests": 1, "tpm_limit": 100000}`); code != 200 {
		t.Fatal(code, body)
	}
	// Once unstalled first: the fused scripts (budget and limits) are loaded.
	if a := await(t, e.ask(key), "a first request"); a.code != 200 {
		t.Fatalf("first request: %d %s", a.code, a.body)
	}
	if _, ok := within(30*time.Second, func() bool { return e.srv.inflight.Load() == 0 }); !ok {
		t.Fatal("the first request did not end")
	}
	e.stallAt.Store(e.calls.Load() + 1)
	if a := await(t, e.ask(key), "the answer while its settle is held back"); a.code != 200 {
		t.Fatalf("%d %s", a.code, a.body)
	}
	if n := e.srv.inflight.Load(); n != 1 {
		t.Fatalf("%d requests in flight after the answer, want the one waiting for its settle", n)
	}
	next := e.ask(key)
	var early *answer
	if _, ok := within(30*time.Second, func() bool {
		select {
		case a := <-next:
			early = &a
			return true
		default:
		}
		return e.srv.inflight.Load() == 2
	}); !ok {
		t.Fatalf("the next request is not in flight beside the first's settle (%d in flight)", e.srv.inflight.Load())
	}
	if early != nil {
		t.Fatalf("the next request was answered while the first's settle was held back: %d %s", early.code, early.body)
	}
	if err := e.proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	if a := await(t, next, "the next request"); a.code != 200 {
		t.Fatalf("the next request on this replica: %d %s; want it decided after the first's slot came back", a.code, a.body)
	}
}
