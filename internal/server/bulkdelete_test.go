package server

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// replacedCounting counts the store's replaced-hash queries: one call of
// HashReplaced is one query, one of HashesReplaced a few bounded ones.
type replacedCounting struct {
	store.Store
	calls atomic.Int64
}

func (c *replacedCounting) HashReplaced(ctx context.Context, hash string) (bool, error) {
	c.calls.Add(1)
	return c.Store.HashReplaced(ctx, hash)
}

func (c *replacedCounting) HashesReplaced(ctx context.Context, hashes []string) (map[string]bool, error) {
	c.calls.Add(1)
	return c.Store.HashesReplaced(ctx, hashes)
}

// ChangeMark and ChangesFrom are the PostgreSQL store's, so that the
// replica's resync reads by change marks, as it does in production.
func (c *replacedCounting) ChangeMark(ctx context.Context) (uint64, bool, error) {
	return c.Store.(store.ChangeFeed).ChangeMark(ctx)
}

func (c *replacedCounting) ChangesFrom(ctx context.Context, mark uint64) (*store.Snapshot, []store.Deletion, error) {
	return c.Store.(store.ChangeFeed).ChangesFrom(ctx, mark)
}

// TestBulkDeletionForgottenInFewQueries: on PostgreSQL and Redis, 5,000
// of a replica's 7,000 keys (each with a budget account in its book and
// on Redis, some with a model budget) are deleted by another replica (the
// store's DeleteKey, as its /key/delete does). The
// replica's resync forgets every one of them, here and on Redis, keeps the
// 2,000 others, and asks the store whether their hashes were replaced in
// a bounded number of calls. Before branch keygaps it made one query (a
// scan of the keys table) and one Redis call per deleted key.
func TestBulkDeletionForgottenInFewQueries(t *testing.T) {
	pg, ru := os.Getenv("TOLLGATE_TEST_POSTGRES_URL"), os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if pg == "" || ru == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL and TOLLGATE_TEST_REDIS_URL are needed")
	}
	const deleted, kept = 5000, 2000
	ctx := context.Background()
	st := &replacedCounting{Store: storetest.OpenPostgres(t, pg)}
	now := time.Now().UTC()
	hash := func(i int) string { return sha(fmt.Sprintf("sk-bulk-%d", i)) }
	// Made by 8 writers: one at a time, 7,000 transactions take long.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < deleted+kept; i += 8 {
				k := &store.Key{TokenHash: hash(i), KeyName: "sk-...", CreatedAt: now, UpdatedAt: now}
				if i%10 == 0 {
					k.ModelMaxBudget = map[string]float64{"gpt-4": 1}
				}
				if err := st.CreateKey(ctx, k); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	prefix := "bulk-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	yaml := strings.Replace(pricedConfig, "general_settings:\n", "general_settings:\n  redis_url: "+ru+"\n", 1)
	e := startConfigWith(t, st, mockupstream.Options{}, yaml, Options{ResyncInterval: 20 * time.Second, RedisPrefix: prefix})
	if _, ok := within(2*time.Minute, func() bool {
		select {
		case <-e.srv.snap.Loaded():
			_, ok := e.srv.snap.Key(hash(deleted + kept - 1))
			return ok
		default:
			return false
		}
	}); !ok {
		t.Fatal("the keys were never loaded")
	}
	opt, err := redis.ParseURL(ru)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	t.Cleanup(func() { rc.Close() })
	bud := func(kind store.Kind, id string) string { return "{" + prefix + "}:bud:" + string(kind) + ":" + id }
	pipe := rc.Pipeline()
	for i := range deleted + kept {
		e.srv.book.Seed(store.KindKey, hash(i), ledger.Amount(1))
		pipe.HSet(ctx, bud(store.KindKey, hash(i)), "spent", 1)
		if i%10 == 0 {
			e.srv.book.Seed(store.KindKeyModel, hash(i)+"/gpt-4", ledger.Amount(1))
			pipe.HSet(ctx, bud(store.KindKeyModel, hash(i)+"/gpt-4"), "spent", 1)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	before := st.calls.Load()
	start := time.Now()
	// Deleted by 8 writers, as another replica's /key/delete of many keys
	// does (one transaction each: an owner's deletion of 5,000 keys is one
	// transaction whose tombstones are stamped as it goes, longer than the
	// resync's overlap under -race). The resync interval is long: the
	// deletions are read together, by the resync kicked after them.
	var next atomic.Int64
	errs = make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < deleted; i = int(next.Add(1) - 1) {
				if err := st.DeleteKey(ctx, hash(i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	select {
	case e.srv.resyncKick <- struct{}{}:
	default:
	}
	deletedAt := time.Now()
	forgotten := func() int {
		n := 0
		for i := range deleted {
			if _, ok := e.srv.book.Lookup(store.KindKey, hash(i)); !ok {
				n++
			}
		}
		return n
	}
	if _, ok := within(5*time.Minute, func() bool { return forgotten() == deleted }); !ok {
		t.Fatalf("the resync forgot %d of the %d deleted keys' accounts", forgotten(), deleted)
	}
	// ForgetKeys drops the book's accounts first, then Redis's hashes, a
	// script per forgetBatch (the model budgets' last): wait for those too.
	redisLeft := func() int64 {
		var n int64
		for i := range deleted {
			if i%10 == 0 {
				m, _ := rc.Exists(ctx, bud(store.KindKey, hash(i)), bud(store.KindKeyModel, hash(i)+"/gpt-4")).Result()
				n += m
			}
		}
		return n
	}
	if _, ok := within(5*time.Minute, func() bool { return redisLeft() == 0 }); !ok {
		t.Fatalf("%d Redis hashes of deleted keys left", redisLeft())
	}
	t.Logf("deleting %d keys took %v; their accounts gone %v after the last deletion (a resync kicked), with %d replaced-hash calls",
		deleted, deletedAt.Sub(start), time.Since(deletedAt), st.calls.Load()-before)
	if n := st.calls.Load() - before; n > 20 {
		t.Errorf("the resync asked the store about replaced hashes %d times for %d deleted keys, want a few bounded batches", n, deleted)
	}
	for i := range deleted + kept {
		_, inBook := e.srv.book.Lookup(store.KindKey, hash(i))
		_, modelInBook := e.srv.book.Lookup(store.KindKeyModel, hash(i)+"/gpt-4")
		n, err := rc.Exists(ctx, bud(store.KindKey, hash(i)), bud(store.KindKeyModel, hash(i)+"/gpt-4")).Result()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case i < deleted && (inBook || modelInBook || n != 0):
			t.Fatalf("deleted key %d: account in the book %v, model account %v, %d Redis hashes left", i, inBook, modelInBook, n)
		case i >= deleted && (!inBook || (i%10 == 0) != modelInBook || n != int64(1+btoi(i%10 == 0))):
			t.Fatalf("kept key %d: account in the book %v, model account %v, %d Redis hashes: want them kept", i, inBook, modelInBook, n)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestKeyUpdateRemovesDroppedModelBudgets: on Redis, a key's model budget
// that /key/update drops from model_max_budget has its hash removed, as a
// deletion removes all of them; the one kept stays. Before branch keygaps
// the dropped one stayed on Redis for a week.
func TestKeyUpdateRemovesDroppedModelBudgets(t *testing.T) {
	ru := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if ru == "" {
		t.Skip("TOLLGATE_TEST_REDIS_URL is not set")
	}
	ctx := context.Background()
	prefix := "mbdrop-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	models := "  - model_name: gpt-4b\n    litellm_params: {model: openai/gpt-4o-mini, api_base: \"{{UP}}\", input_cost_per_token: 0, output_cost_per_token: 0.0001}\n"
	yaml := strings.Replace(pricedConfig, "general_settings:\n", models+"general_settings:\n  redis_url: "+ru+"\n  budget_allotments: false\n", 1)
	e := startConfigWith(t, sqliteStore(t), mockupstream.Options{}, yaml, Options{RedisPrefix: prefix})
	const key = "sk-mbdrop-key-1"
	if resp, out := e.post(t, "/key/generate", "sk-1234", `{"key": "`+key+`", "model_max_budget": {"gpt-4": 1, "gpt-4b": 1}}`); resp.StatusCode != 200 {
		t.Fatalf("generate: %d %v", resp.StatusCode, out)
	}
	for _, m := range []string{"gpt-4", "gpt-4b"} {
		if resp, out := e.post(t, "/v1/chat/completions", key, strings.Replace(chat3, `"gpt-4"`, `"`+m+`"`, 1)); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", m, resp.StatusCode, out)
		}
	}
	opt, err := redis.ParseURL(ru)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	t.Cleanup(func() { rc.Close() })
	hashOf := func(m string) string { return "{" + prefix + "}:bud:key_model:" + sha(key) + "/" + m }
	if n := rc.Exists(ctx, hashOf("gpt-4"), hashOf("gpt-4b")).Val(); n != 2 {
		t.Fatalf("%d of the two model budgets' hashes on Redis after a request on each, want 2", n)
	}
	if resp, out := e.post(t, "/key/update", "sk-1234", `{"key": "`+key+`", "model_max_budget": {"gpt-4": 1}}`); resp.StatusCode != 200 {
		t.Fatalf("update: %d %v", resp.StatusCode, out)
	}
	if rc.Exists(ctx, hashOf("gpt-4b")).Val() != 0 {
		t.Errorf("the dropped model budget's hash stays on Redis: %v", rc.HGetAll(ctx, hashOf("gpt-4b")).Val())
	}
	if rc.Exists(ctx, hashOf("gpt-4")).Val() != 1 {
		t.Error("the kept model budget's hash was removed")
	}
}

// TestProbeOwnerDeletionForgetsItsKeysOnRedis: a team's deletion, which
// takes its keys, removes every key's budget hash and model budget hash
// from Redis in the request (all of them at once since branch keygapsrev,
// one round trip per key before), and /key/delete of several keys does
// too; a key of another team keeps its hashes.
func TestProbeOwnerDeletionForgetsItsKeysOnRedis(t *testing.T) {
	ru := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if ru == "" {
		t.Skip("TOLLGATE_TEST_REDIS_URL is not set")
	}
	ctx := context.Background()
	prefix := "ownerdel-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	yaml := strings.Replace(pricedConfig, "general_settings:\n", "general_settings:\n  redis_url: "+ru+"\n  budget_allotments: false\n", 1)
	e := startConfigWith(t, sqliteStore(t), mockupstream.Options{}, yaml, Options{RedisPrefix: prefix})
	for _, team := range []string{"t-gone", "t-kept"} {
		if resp, out := e.post(t, "/team/new", "sk-1234", `{"team_id": "`+team+`"}`); resp.StatusCode != 200 {
			t.Fatalf("team %s: %d %v", team, resp.StatusCode, out)
		}
	}
	keys := map[string]string{ // key -> its team
		"sk-ownerdel-1": "t-gone", "sk-ownerdel-2": "t-gone", "sk-ownerdel-3": "t-gone",
		"sk-ownerdel-4": "t-kept", "sk-ownerdel-5": "t-kept", "sk-ownerdel-6": "t-kept",
	}
	for k, team := range keys {
		body := `{"key": "` + k + `", "team_id": "` + team + `", "max_budget": 10, "model_max_budget": {"gpt-4": 1}}`
		if resp, out := e.post(t, "/key/generate", "sk-1234", body); resp.StatusCode != 200 {
			t.Fatalf("generate %s: %d %v", k, resp.StatusCode, out)
		}
		if resp, out := e.post(t, "/v1/chat/completions", k, chat3); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", k, resp.StatusCode, out)
		}
	}
	opt, err := redis.ParseURL(ru)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	t.Cleanup(func() { rc.Close() })
	hashes := func(k string) int64 {
		return rc.Exists(ctx, "{"+prefix+"}:bud:key:"+sha(k), "{"+prefix+"}:bud:key_model:"+sha(k)+"/gpt-4").Val()
	}
	for k := range keys {
		if n := hashes(k); n != 2 {
			t.Fatalf("%s has %d of its 2 budget hashes on Redis after a request", k, n)
		}
	}
	if resp, out := e.post(t, "/team/delete", "sk-1234", `{"team_ids": ["t-gone"]}`); resp.StatusCode != 200 {
		t.Fatalf("team delete: %d %v", resp.StatusCode, out)
	}
	if resp, out := e.post(t, "/key/delete", "sk-1234", `{"keys": ["sk-ownerdel-4", "sk-ownerdel-5"]}`); resp.StatusCode != 200 {
		t.Fatalf("key delete: %d %v", resp.StatusCode, out)
	}
	for k := range keys {
		want := int64(0)
		if k == "sk-ownerdel-6" {
			want = 2
		}
		if n := hashes(k); n != want {
			t.Errorf("%s has %d budget hashes on Redis after the deletions, want %d", k, n, want)
		}
		if _, ok := e.srv.book.Lookup(store.KindKey, sha(k)); ok != (want == 2) {
			t.Errorf("%s: account in the book %v, want %v", k, ok, want == 2)
		}
	}
}
