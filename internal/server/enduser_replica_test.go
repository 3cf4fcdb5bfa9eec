package server

import (
	"context"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// TestEndUserReachesReplicaWithItsKey: two gateways on one PostgreSQL and
// one Redis, whose resync is made too slow to matter, so that only what a
// request reads on demand can bring what was written on A. End users
// created on A with budgets, then a key, also on A: B's first request with
// that key already holds the end users' budgets (a spent one is refused,
// a live one's spend is on its shared account, none of it lost), and an
// end user B had looked for and not found before it existed is found once
// a key made after it is.
func TestEndUserReachesReplicaWithItsKey(t *testing.T) {
	// Long Redis deadlines: on a loaded machine a hold past the default
	// 500 ms falls back to this replica's share, and strict mode then
	// refuses (503) what the test expects served or refused on Redis.
	r := replicas(t, 2, rigSpec{name: "eusync", postgres: true, redis: true},
		pricedConfig+"  redis_url: {{REDIS}}\nlitellm_settings:\n  budget_enforcement: strict\n",
		Options{ResyncInterval: time.Hour, RedisHoldTimeout: time.Minute, RedisReadTimeout: time.Minute})
	a, b, rc := r.urls[0], r.urls[1], r.client(t)
	chat := func(user string) string {
		return `{"model":"gpt-4","max_tokens":3,"user":"` + user + `","messages":[{"role":"user","content":"one two three four"}]}`
	}
	mustSend := func(url, path, body string) {
		t.Helper()
		if code, resp := send(t, url+path, "sk-1234", body); code != 200 {
			t.Fatalf("%s: %d %s", path, code, resp)
		}
	}

	mustSend(a, "/end_user/new", `{"user_id": "eu-tiny", "max_budget": 0.00000001}`)
	mustSend(a, "/end_user/new", `{"user_id": "eu-nine", "max_budget": 9}`)
	mustSend(a, "/key/generate", `{"key": "sk-eu-sync-1"}`)
	if code, body := send(t, b+"/v1/chat/completions", "sk-eu-sync-1", chat("eu-tiny")); code != 400 || !strings.Contains(body, "budget_exceeded") {
		t.Fatalf("B served end user eu-tiny, made on A before the key, as if it had no budget: %d %s", code, body)
	}
	const n = 4
	for range n {
		if code, body := send(t, b+"/v1/chat/completions", "sk-eu-sync-1", chat("eu-nine")); code != 200 {
			t.Fatalf("eu-nine on B: %d %s", code, body)
		}
	}
	want := int64(ledger.USD(0.0003)) * n
	var spent, held int64
	var err error
	if _, ok := within(30*time.Second, func() bool {
		spent, err = rc.HGet(context.Background(), r.budget("end_user", "eu-nine"), "spent").Int64()
		held, _ = rc.HGet(context.Background(), r.budget("end_user", "eu-nine"), "held").Int64()
		return err == nil && held == 0 && spent == want
	}); !ok {
		t.Fatalf("eu-nine's shared account after %d requests on B: spent %d (%v), held %d; want spent %d, held 0", n, spent, err, held, want)
	}

	// B looks for eu-late before it exists (and remembers it does not);
	// then A makes it, and a key after it.
	if code, body := send(t, b+"/v1/chat/completions", "sk-eu-sync-1", chat("eu-late")); code != 200 {
		t.Fatalf("eu-late on B before it exists: %d %s", code, body)
	}
	// B's request brings eu-late into being in the store once B's spend
	// writer flushes (an end user comes with its first request), which on
	// a loaded machine can land before A's /end_user/new: A then sets the
	// budget on the end user that exists.
	late := `{"user_id": "eu-late", "max_budget": 0.00000001}`
	if code, resp := send(t, a+"/end_user/new", "sk-1234", late); code != 200 {
		if !strings.Contains(resp, "already exists") {
			t.Fatalf("/end_user/new eu-late: %d %s", code, resp)
		}
		mustSend(a, "/end_user/update", late)
	}
	mustSend(a, "/key/generate", `{"key": "sk-eu-sync-2"}`)
	if code, body := send(t, b+"/v1/chat/completions", "sk-eu-sync-2", chat("eu-late")); code != 400 || !strings.Contains(body, "budget_exceeded") {
		t.Fatalf("B served eu-late, made on A before the key it came with, as if it had no budget: %d %s", code, body)
	}
}

// endUserCounter counts the store's end user reads.
type endUserCounter struct {
	store.Store
	reads atomic.Int64
}

func (c *endUserCounter) GetEndUser(ctx context.Context, id string) (*store.EndUser, error) {
	c.reads.Add(1)
	return c.Store.GetEndUser(ctx, id)
}

// TestEndUserMissReadsStoreOnce: with a key newer than the snapshot (made
// behind the gateway's back, as by another replica, and read through the
// miss path), requests naming an end user the store does not have read the
// store once, not once per request; an end user that exists is read once
// and then served from the snapshot.
func TestEndUserMissReadsStoreOnce(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	counted := &endUserCounter{Store: st}
	url, srv := serveSrv(t, cfg, Options{Store: counted, ResyncInterval: time.Hour})
	// The resync that follows the start's load of the keys first: what
	// is made after it is in no snapshot until the next, an hour later.
	if _, ok := within(time.Minute, func() bool { return srv.resyncDone.Load() > 0 && srv.freshN.Load() == 0 }); !ok {
		t.Fatal("the resync after the start's load of the keys did not complete in a minute")
	}
	// An end user, then a key, made behind the gateway's back (as by
	// another replica): in neither its snapshot.
	ctx := context.Background()
	if err := st.CreateEndUser(ctx, &store.EndUser{UserID: "eu-known", Metadata: map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if err := st.CreateKey(ctx, &store.Key{TokenHash: auth.HashHex("sk-eu-count"), KeyName: "sk-...ount", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"nobody", "eu-known"} {
		before := counted.reads.Load()
		for range 5 {
			if code, body := send(t, url+"/v1/chat/completions", "sk-eu-count", `{"model":"gpt-4","max_tokens":3,"user":"`+user+`","messages":[{"role":"user","content":"hi"}]}`); code != 200 {
				t.Fatalf("%s: %d %s", user, code, body)
			}
		}
		if got := counted.reads.Load() - before; got != 1 {
			t.Errorf("5 requests naming %s read the store's end users %d times; want 1", user, got)
		}
	}
}

// TestEndUserUnknownWithSnapshotKeyReadsNothing: requests made with a key
// the snapshot already has (made through this gateway), each naming an end
// user nobody has made (a new end user: LiteLLM's come into being with
// their first request), are served without a single store read, however
// many distinct `user` values they send; an end user made on another
// replica behind the gateway's back is not read either (it comes with the
// resync), and its requests are served as a new end user's.
func TestEndUserUnknownWithSnapshotKeyReadsNothing(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	counted := &endUserCounter{Store: st}
	url, srv := serveSrv(t, cfg, Options{Store: counted, ResyncInterval: time.Hour})
	if code, body := send(t, url+"/key/generate", "sk-1234", `{"key": "sk-eu-snap"}`); code != 200 {
		t.Fatal(code, body)
	}
	// Until the resync that follows the start's load of the keys has
	// completed, every key may be newer than the end users (loadFresh),
	// and a key made here is until a resync after it completes (keyMade):
	// the steady state starts after both. The resync is asked for (an
	// hour's interval would not bring it).
	if _, ok := within(time.Minute, func() bool {
		select {
		case srv.resyncKick <- struct{}{}:
		default:
		}
		return srv.resyncDone.Load() > 0 && srv.freshN.Load() == 0
	}); !ok {
		t.Fatal("the resyncs after the start's load of the keys and after the key was made did not complete in a minute")
	}
	budget := 0.00000001
	if err := st.CreateEndUser(context.Background(), &store.EndUser{UserID: "eu-elsewhere", Metadata: map[string]any{}, Limits: store.Limits{MaxBudget: &budget}}); err != nil {
		t.Fatal(err)
	}
	before := counted.reads.Load()
	users := []string{"eu-elsewhere"}
	for i := range 40 {
		users = append(users, "eu-random-"+strconv.Itoa(i))
	}
	for _, user := range users {
		if code, body := send(t, url+"/v1/chat/completions", "sk-eu-snap", `{"model":"gpt-4","max_tokens":3,"user":"`+user+`","messages":[{"role":"user","content":"hi"}]}`); code != 200 {
			t.Fatalf("%s: %d %s", user, code, body)
		}
	}
	if got := counted.reads.Load() - before; got != 0 {
		t.Errorf("%d requests with a key the snapshot has, naming end users it lacks, read the store's end users %d times; want 0", len(users), got)
	}
}

// TestKeyNewerUntilALaterResyncCompletes: a key read through the miss
// path counts as newer than the snapshot (its requests may read missing
// end users) through the completion of a resync that had started before
// it was read, and no longer once one that started after it completes.
func TestKeyNewerUntilALaterResyncCompletes(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", "http://127.0.0.1:1")))
	if err != nil {
		t.Fatal(err)
	}
	_, srv := serveSrv(t, cfg, Options{Store: sqliteStore(t), ResyncInterval: time.Hour})
	// Every key is newer until the resync that follows the start's load
	// (TestEndUserMadeDuringTheStartsLoad); this test starts after it.
	if _, ok := within(time.Minute, func() bool { return srv.resyncDone.Load() > 0 && srv.freshN.Load() == 0 }); !ok {
		t.Fatal("the resync after the start's load of the keys did not complete in a minute")
	}
	if srv.keyNewer("h-old") {
		t.Fatal("a key never read through the miss path is newer")
	}
	before := srv.resyncSeq.Add(1) // a resync starts, then the key is read
	srv.markFresh("h-new")
	if !srv.keyNewer("h-new") {
		t.Fatal("a key just read through the miss path is not newer")
	}
	srv.resyncCompleted(before)
	if !srv.keyNewer("h-new") {
		t.Fatal("a resync that started before the key was read made it old")
	}
	after := srv.resyncSeq.Add(1)
	srv.resyncCompleted(after)
	if srv.keyNewer("h-new") {
		t.Fatal("still newer after a resync that started after it was read")
	}
	if n := srv.freshN.Load(); n != 0 {
		t.Fatalf("%d keys still remembered as newer", n)
	}
}

// BenchmarkEndUserLookup: what a request naming an end user pays to find
// it. "snapshot" is the snapshot alone (the old path, whether the end user
// is there or not), "known" an end user in the snapshot, "unknown-old-key"
// an id the snapshot lacks named with a key it already had, no key having
// come through keyMiss since the last resync (the steady state: no store
// read), "remembered" an id the store lacks named with a
// key newer than the snapshot, read once and remembered.
func BenchmarkEndUserLookup(b *testing.B) {
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", "http://127.0.0.1:1")))
	if err != nil {
		b.Fatal(err)
	}
	_, srv := serveSrv(b, cfg, Options{Store: sqliteStore(b), ResyncInterval: time.Hour})
	srv.snap.PutEndUser(&store.EndUser{UserID: "eu-bench-known"})
	ctx := context.Background()
	// The steady state first: no key read through keyMiss since the last
	// resync, so a missing end user costs the snapshot and one atomic load.
	// It starts once the resync after the start's load of the keys has
	// completed (until then every key is newer: loadFresh).
	if _, ok := within(time.Minute, func() bool { return srv.resyncDone.Load() > 0 && srv.freshN.Load() == 0 }); !ok {
		b.Fatal("the resync after the start's load of the keys did not complete in a minute")
	}
	old := &auth.Principal{KeyHash: auth.HashHex("sk-bench-old")}
	b.Run("unknown-old-key", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			srv.authn.EndUser(ctx, old, "eu-bench-missing")
		}
	})
	p := &auth.Principal{KeyHash: auth.HashHex("sk-bench-newer")}
	srv.markFresh(p.KeyHash) // as if read through keyMiss: missing end users are looked for
	if srv.authn.EndUser(ctx, p, "eu-bench-missing") != nil {
		b.Fatal("eu-bench-missing exists")
	}
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			srv.snap.EndUser("eu-bench-missing")
		}
	})
	b.Run("known", func(b *testing.B) {
		for b.Loop() {
			srv.authn.EndUser(ctx, p, "eu-bench-known")
		}
	})
	b.Run("remembered", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			srv.authn.EndUser(ctx, p, "eu-bench-missing")
		}
	})
}

// gatedLoadStore holds the start's load of the keys until load is closed,
// closes loaded once it is done, and holds every Changes read (the resync)
// until changes is closed.
type gatedLoadStore struct {
	store.Store
	load, loaded, changes chan struct{}
}

func (g *gatedLoadStore) LoadKeys(ctx context.Context, page func([]*store.Key) error) error {
	<-g.load
	defer close(g.loaded)
	return g.Store.LoadKeys(ctx, page)
}

func (g *gatedLoadStore) Changes(ctx context.Context, since time.Time) (*store.Snapshot, []store.Deletion, error) {
	select {
	case <-g.changes:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	return g.Store.Changes(ctx, since)
}

// TestEndUserMadeDuringTheStartsLoad: replica B reads its end users when
// it is made and its keys later, under Serve. An end user with a budget
// and then a key are made on A in between: the key reaches B through the
// start's load, not through the miss path, and before the resync that
// brings the end user. B must still hold the key's first request naming
// that end user to its budget (CI once saw B serve it, as a new end user).
func TestEndUserMadeDuringTheStartsLoad(t *testing.T) {
	cfg, st, a := strictReplicaA(t)
	g := &gatedLoadStore{Store: st, load: make(chan struct{}), loaded: make(chan struct{}), changes: make(chan struct{})}
	b := serveCfg(t, cfg, Options{Store: g, ResyncInterval: time.Hour})
	defer close(g.changes) // lets B's resync end before B stops
	for _, body := range []string{`{"user_id": "eu-start", "max_budget": 0.00000001}`} {
		if code, resp := send(t, a+"/end_user/new", "sk-1234", body); code != 200 {
			t.Fatal(code, resp)
		}
	}
	if code, resp := send(t, a+"/key/generate", "sk-1234", `{"key": "sk-eu-start"}`); code != 200 {
		t.Fatal(code, resp)
	}
	close(g.load)
	select {
	case <-g.loaded:
	case <-time.After(time.Minute):
		t.Fatal("B's load of the keys did not end in a minute")
	}
	code, body := send(t, b+"/v1/chat/completions", "sk-eu-start", `{"model":"gpt-4","max_tokens":3,"user":"eu-start","messages":[{"role":"user","content":"hi"}]}`)
	if code != 400 || !strings.Contains(body, "budget_exceeded") {
		t.Fatalf("B served end user eu-start, made on A before the key its load read, as if it had no budget: %d %s", code, body)
	}
}

// strictReplicaA starts the end-user tests' replica A: strict budgets, the
// priced config on a mock upstream, a SQLite store the test's other
// replicas share, a resync an hour away. It returns the config, the store
// and A's URL.
func strictReplicaA(t *testing.T) (*config.Config, store.Store, string) {
	t.Helper()
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	t.Cleanup(up.Close)
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL)+"litellm_settings:\n  budget_enforcement: strict\n"))
	if err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	return cfg, st, serveCfg(t, cfg, Options{Store: st, ResyncInterval: time.Hour})
}
