package server

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeEndUserMadeBetweenNewAndServeReachesTheSnapshot: a replica
// reads its users, teams and end users in New, and its resync reads what
// changed since a moment before it started, under Serve. An end user made
// on another replica after New's read and more than the resync's overlap
// (5 s) before Serve (a start that takes its time after the read: Python
// hooks, a Redis that does not answer, a large read) must still reach the
// snapshot with the first resync: else, once the start's load stops
// counting as newer (loadFresh), the replica serves it as a new end user,
// without its budget, for as long as the row does not change.
//
// The test has to let more than the overlap pass between the read and
// Serve: that wait is the defect's condition, not a deadline (it can only
// make the test slower, never flaky).
func TestProbeEndUserMadeBetweenNewAndServeReachesTheSnapshot(t *testing.T) {
	t.Parallel() // its own SQLite file and gateways; the wait is the test's (waitBound)
	cfg, st, a := strictReplicaA(t)
	if code, resp := send(t, a+"/key/generate", "sk-1234", `{"key": "sk-eu-gap"}`); code != 200 {
		t.Fatal(code, resp)
	}

	// B reads its end users (New), then takes its time before Serve.
	b, err := New(cfg, Options{Store: st, ResyncInterval: time.Hour, Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	budget := 0.00000001
	if err := st.CreateEndUser(context.Background(), &store.EndUser{UserID: "eu-gap", Metadata: map[string]any{}, Limits: store.Limits{MaxBudget: &budget}}); err != nil {
		t.Fatal(err)
	}
	made := time.Now()
	for time.Since(made) < 7*time.Second { // past the resync's 5 s overlap
		time.Sleep(100 * time.Millisecond)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Serve(ctx, ln); close(done) }()
	defer func() { stop(); <-done }()
	// The resync after the start's load has completed: the steady state.
	if _, ok := within(time.Minute, func() bool { return b.resyncDone.Load() > 0 && b.freshN.Load() == 0 }); !ok {
		t.Fatal("the resync after the start's load of the keys did not complete in a minute")
	}
	url := "http://" + ln.Addr().String()
	code, body := send(t, url+"/v1/chat/completions", "sk-eu-gap", `{"model":"gpt-4","max_tokens":3,"user":"eu-gap","messages":[{"role":"user","content":"hi"}]}`)
	if code != 400 || !strings.Contains(body, "budget_exceeded") {
		t.Fatalf("B served end user eu-gap, made after B's read in New and before Serve, as if it had no budget: %d %s", code, body)
	}
}

// TestProbeEndUserMadeBeforeAKeyMadeHere: an end user with a budget made
// on A, then a key made on B (a load balancer spreads the admin calls):
// the key is newer than B's snapshot as surely as one B reads through its
// miss path, so B's first request with it naming that end user holds it
// to its budget (docs/spend-and-limits.md: "an end user made before a key
// is enforced on a replica from the first request that uses that key
// there"), not only after B's next resync.
func TestProbeEndUserMadeBeforeAKeyMadeHere(t *testing.T) {
	cfg, st, a := strictReplicaA(t)
	b, srv := serveSrv(t, cfg, Options{Store: st, ResyncInterval: time.Hour})
	// The steady state: the resync that follows B's load has completed;
	// the next is an hour away.
	if _, ok := within(time.Minute, func() bool { return srv.resyncDone.Load() > 0 && srv.freshN.Load() == 0 }); !ok {
		t.Fatal("the resync after the start's load of the keys did not complete in a minute")
	}
	if code, resp := send(t, a+"/end_user/new", "sk-1234", `{"user_id": "eu-here", "max_budget": 0.00000001}`); code != 200 {
		t.Fatal(code, resp)
	}
	if code, resp := send(t, b+"/key/generate", "sk-1234", `{"key": "sk-eu-here"}`); code != 200 {
		t.Fatal(code, resp)
	}
	code, body := send(t, b+"/v1/chat/completions", "sk-eu-here", `{"model":"gpt-4","max_tokens":3,"user":"eu-here","messages":[{"role":"user","content":"hi"}]}`)
	if code != 400 || !strings.Contains(body, "budget_exceeded") {
		t.Fatalf("B served end user eu-here, made on A before the key made on B, as if it had no budget: %d %s", code, body)
	}
}

// pagedLoadStore gives the start's load the keys the store has when it
// begins as one page, closes first, waits for next, then gives the keys
// made meanwhile as a second page and closes loaded; it holds every
// Changes read (the resync) until changes is closed.
type pagedLoadStore struct {
	store.Store
	first, next, loaded, changes chan struct{}
}

func (g *pagedLoadStore) LoadKeys(ctx context.Context, page func([]*store.Key) error) error {
	seen := map[string]bool{}
	if err := g.Store.LoadKeys(ctx, func(p []*store.Key) error {
		for _, k := range p {
			seen[k.TokenHash] = true
		}
		return page(p)
	}); err != nil {
		return err
	}
	close(g.first)
	select {
	case <-g.next:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer close(g.loaded)
	return g.Store.LoadKeys(ctx, func(p []*store.Key) error {
		var late []*store.Key
		for _, k := range p {
			if !seen[k.TokenHash] {
				late = append(late, k)
			}
		}
		return page(late)
	})
}

func (g *pagedLoadStore) Changes(ctx context.Context, since time.Time) (*store.Snapshot, []store.Deletion, error) {
	select {
	case <-g.changes:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	return g.Store.Changes(ctx, since)
}

// TestEndUserLookedForAgainAfterALoadPage: during the start's load, B
// looks for an end user the store does not have yet (and remembers it
// missing); then A makes it, with a budget, and a key that a later page
// of B's load reads. That page may be newer than the end user: B's first
// request with the key naming it reads it again and holds it to its
// budget (each page starts a new end-user generation, loadKeys).
func TestEndUserLookedForAgainAfterALoadPage(t *testing.T) {
	cfg, st, a := strictReplicaA(t)
	if code, resp := send(t, a+"/key/generate", "sk-1234", `{"key": "sk-eu-page-1"}`); code != 200 {
		t.Fatal(code, resp)
	}
	g := &pagedLoadStore{Store: st, first: make(chan struct{}), next: make(chan struct{}), loaded: make(chan struct{}), changes: make(chan struct{})}
	b := serveCfg(t, cfg, Options{Store: g, ResyncInterval: time.Hour})
	defer close(g.changes) // lets B's resync end before B stops
	select {
	case <-g.first:
	case <-time.After(time.Minute):
		t.Fatal("B's load of the keys did not give its first page in a minute")
	}
	chat := `{"model":"gpt-4","max_tokens":3,"user":"eu-page","messages":[{"role":"user","content":"hi"}]}`
	if code, body := send(t, b+"/v1/chat/completions", "sk-eu-page-1", chat); code != 200 {
		t.Fatalf("eu-page on B before it exists: %d %s", code, body)
	}
	if code, resp := send(t, a+"/end_user/new", "sk-1234", `{"user_id": "eu-page", "max_budget": 0.00000001}`); code != 200 {
		t.Fatal(code, resp)
	}
	if code, resp := send(t, a+"/key/generate", "sk-1234", `{"key": "sk-eu-page-2"}`); code != 200 {
		t.Fatal(code, resp)
	}
	close(g.next)
	select {
	case <-g.loaded:
	case <-time.After(time.Minute):
		t.Fatal("B's load of the keys did not end in a minute")
	}
	code, body := send(t, b+"/v1/chat/completions", "sk-eu-page-2", chat)
	if code != 400 || !strings.Contains(body, "budget_exceeded") {
		t.Fatalf("B served eu-page, made on A before the key its load's second page read, as if it had no budget: %d %s", code, body)
	}
}
