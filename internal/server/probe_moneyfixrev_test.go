package server

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeOwnerDeletionFlushesKeySpend: a key taken by its user's or its
// team's deletion has spend queued in this replica's writer; a key made
// again with its secret right after must not be booked that spend when
// the writer next flushes (as /key/delete guarantees by flushing first).
func TestProbeOwnerDeletionFlushesKeySpend(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		e := startSpend(t, st, mockupstream.Options{}, "")
		post := func(path, key, body string) {
			t.Helper()
			if resp, out := e.post(t, path, key, body); resp.StatusCode != 200 {
				t.Fatalf("%s: %d %v", path, resp.StatusCode, out)
			}
		}
		// The writer flushes every 100 ms on its own: rounds make the old
		// code's loss (spend still queued at the deletion) near certain.
		for _, tt := range []struct{ owner, make, field, del string }{
			{"user", "/user/new", "user_id", "user_ids"},
			{"team", "/team/new", "team_id", "team_ids"},
		} {
			t.Run(tt.owner, func(t *testing.T) {
				for i := range 6 {
					id := "probe-owner-" + tt.owner + strconv.Itoa(i)
					secret := "sk-probe-owner-" + tt.owner + strconv.Itoa(i)
					post(tt.make, "sk-1234", `{"`+tt.field+`": "`+id+`"}`)
					post("/key/generate", "sk-1234", `{"key": "`+secret+`", "`+tt.field+`": "`+id+`"}`)
					post("/v1/chat/completions", secret, chat3)
					post("/"+tt.owner+"/delete", "sk-1234", `{"`+tt.del+`": ["`+id+`"]}`)
					post("/key/generate", "sk-1234", `{"key": "`+secret+`"}`)
					e.srv.writer.Flush()
					k, err := e.store.GetKey(context.Background(), sha(secret))
					if err != nil {
						t.Fatal(err)
					}
					if k.Spend != 0 {
						t.Fatalf("round %d: the key made again after its %s's deletion has stored spend %v: the deleted key's queued spend", i, tt.owner, k.Spend)
					}
				}
			})
		}
	})
}

// TestProbeRecreatedKeyRedisSpendKept: two replicas on PostgreSQL and
// Redis. A deletes a key and makes it again with the same secret, and
// serves the new key; B's resync then brings both the deletion and the
// new record at once. B drops its own (the deleted key's) account, but it
// must not remove the Redis hash: since A removed it at the deletion, it
// holds the new key's spend only, and removed it is reseeded from a view
// that lacks that spend (overspend).
func TestProbeRecreatedKeyRedisSpendKept(t *testing.T) {
	yaml := pricedConfig + "  redis_url: {{REDIS}}\n  budget_allotments: false\nlitellm_settings:\n  budget_enforcement: strict\n"
	r := newRig(t, rigSpec{name: "recreate", postgres: true, redis: true})
	r.start(t, yaml, Options{ResyncInterval: 100 * time.Millisecond, RedisHoldTimeout: time.Minute, RedisReadTimeout: time.Minute})
	b := r.start(t, yaml, Options{ResyncInterval: time.Hour, RedisHoldTimeout: time.Minute, RedisReadTimeout: time.Minute})
	const key = "sk-probe-recreate"
	hash := r.key(t, key, `"max_budget": 1`) // B knows it (read on its miss)
	if code, body := send(t, r.urls[1]+"/v1/chat/completions", key, chat3); code != 200 {
		t.Fatal(code, body)
	}
	resync := func() {
		t.Helper()
		n := b.resyncSeq.Load()
		if _, ok := within(time.Minute, func() bool {
			select {
			case b.resyncKick <- struct{}{}:
			default:
			}
			return b.resyncDone.Load() > n
		}); !ok {
			t.Fatal("B's resync did not complete in a minute")
		}
	}
	resync() // B is past its start's resyncs: the next one is the test's
	if code, body := send(t, r.urls[0]+"/key/delete", "sk-1234", `{"keys": ["`+key+`"]}`); code != 200 {
		t.Fatal(code, body)
	}
	if code, body := send(t, r.urls[0]+"/key/generate", "sk-1234", `{"key": "`+key+`", "max_budget": 1}`); code != 200 {
		t.Fatal(code, body)
	}
	for range 3 {
		if code, body := send(t, r.urls[0]+"/v1/chat/completions", key, chat3); code != 200 {
			t.Fatal(code, body)
		}
	}
	c := r.client(t)
	ctx := context.Background()
	var before int64
	if _, ok := within(time.Minute, func() bool { // the settles may land after the responses
		before, _ = strconv.ParseInt(c.HGet(ctx, r.budget("key", hash), "spent").Val(), 10, 64)
		return before >= 900000
	}); !ok {
		t.Fatalf("Redis lacks the new key's three requests: %v", c.HGetAll(ctx, r.budget("key", hash)).Val())
	}
	resync()
	after, _ := strconv.ParseInt(c.HGet(ctx, r.budget("key", hash), "spent").Val(), 10, 64)
	if after < before {
		t.Fatalf("B's resync removed the new key's Redis spend: %d before, %d after (%v)", before, after, c.HGetAll(ctx, r.budget("key", hash)).Val())
	}
}

// TestProbeRegenerateNotForgottenOnResync: two replicas on PostgreSQL and
// Redis. A key with spend on Redis is regenerated twice on A; B's resync
// then brings both deletions (of the first and second hashes) and the
// third record at once. A regenerate is not a deletion: the account (the
// first hash) keeps its Redis spend, and B keeps booking on it.
func TestProbeRegenerateNotForgottenOnResync(t *testing.T) {
	yaml := pricedConfig + "  redis_url: {{REDIS}}\n  budget_allotments: false\nlitellm_settings:\n  budget_enforcement: strict\n"
	r := newRig(t, rigSpec{name: "regenkeep", postgres: true, redis: true})
	r.start(t, yaml, Options{ResyncInterval: 100 * time.Millisecond, RedisHoldTimeout: time.Minute, RedisReadTimeout: time.Minute})
	b := r.start(t, yaml, Options{ResyncInterval: time.Hour, RedisHoldTimeout: time.Minute, RedisReadTimeout: time.Minute})
	const key = "sk-probe-regenkeep"
	hash := r.key(t, key, `"max_budget": 1`)
	for range 3 {
		if code, body := send(t, r.urls[1]+"/v1/chat/completions", key, chat3); code != 200 {
			t.Fatal(code, body)
		}
	}
	resync := func() {
		t.Helper()
		n := b.resyncSeq.Load()
		if _, ok := within(time.Minute, func() bool {
			select {
			case b.resyncKick <- struct{}{}:
			default:
			}
			return b.resyncDone.Load() > n
		}); !ok {
			t.Fatal("B's resync did not complete in a minute")
		}
	}
	resync()
	c := r.client(t)
	ctx := context.Background()
	spent := func() int64 {
		v, _ := strconv.ParseInt(c.HGet(ctx, r.budget("key", hash), "spent").Val(), 10, 64)
		return v
	}
	var before int64
	if _, ok := within(time.Minute, func() bool { before = spent(); return before >= 900000 }); !ok {
		t.Fatalf("Redis lacks the key's three requests: %v", c.HGetAll(ctx, r.budget("key", hash)).Val())
	}
	last := key
	for _, next := range []string{"sk-probe-regenkeep-2", "sk-probe-regenkeep-3"} {
		if code, body := send(t, r.urls[0]+"/key/regenerate", "sk-1234", `{"key": "`+last+`", "new_key": "`+next+`"}`); code != 200 {
			t.Fatal(code, body)
		}
		last = next
	}
	resync()
	if got := spent(); got < before {
		t.Fatalf("B's resync of the regenerates removed the account's Redis spend: %d before, %d after", before, got)
	}
	a, ok := b.book.Lookup(store.KindKey, hash)
	if !ok || a.Spent() <= 0 {
		t.Fatalf("B dropped the regenerated key's account (in the book: %v)", ok)
	}
	if code, body := send(t, r.urls[1]+"/v1/chat/completions", last, chat3); code != 200 {
		t.Fatal(code, body)
	}
	// The settle may land after the response.
	if _, ok := within(time.Minute, func() bool { return spent() > before }); !ok {
		t.Fatalf("B's request on the regenerated key did not book on its account's Redis hash: %d, was %d", spent(), before)
	}
}

// TestProbeInflightSettleAfterKeyDelete: one replica on PostgreSQL and
// Redis. A request of a key (its user budgeted too) is in flight when the
// key is deleted. Its settle finds the key's Redis hash gone: the user's
// hash must get its spend (and the user's stored spend too), and the
// deleted key's hash must stay gone (a key made again with the secret
// would count the deleted key's spend), also once the replica has stopped
// (its carries done).
func TestProbeInflightSettleAfterKeyDelete(t *testing.T) {
	r, s, up, release, c := leaseRig(t, "  budget_allotments: false\nlitellm_settings:\n  budget_enforcement: strict\n")
	if code, body := send(t, r.urls[0]+"/user/new", "sk-1234", `{"user_id": "probe-inflight-user", "max_budget": 1}`); code != 200 {
		t.Fatal(code, body)
	}
	const key = "sk-probe-inflight"
	hash := r.key(t, key, `"max_budget": 1, "user_id": "probe-inflight-user"`)
	if code, body := send(t, r.urls[0]+"/v1/chat/completions", key, chat3); code != 200 {
		t.Fatal(code, body)
	}
	done := make(chan int, 1)
	go func() {
		code, _ := send(t, r.urls[0]+"/v1/chat/completions", key, `{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"hold"}]}`)
		done <- code
	}()
	if _, ok := within(time.Minute, func() bool { return up.arrived.Load() >= 1 }); !ok {
		t.Fatal("the held request never reached the upstream")
	}
	if code, body := send(t, r.urls[0]+"/key/delete", "sk-1234", `{"keys": ["`+key+`"]}`); code != 200 {
		t.Fatal(code, body)
	}
	ctx := context.Background()
	if n := c.Exists(ctx, r.budget("key", hash)).Val(); n != 0 {
		t.Fatalf("the deleted key's Redis hash is still there: %v", c.HGetAll(ctx, r.budget("key", hash)).Val())
	}
	release()
	if code := <-done; code != 200 {
		t.Fatalf("the request in flight: %d", code)
	}
	r.flush()
	// The settle found the key's hash gone: what it owes Redis is taken by
	// the sweep after a heartbeat; the stop then waits for its carries.
	if _, ok := within(time.Minute, func() bool { return s.shared.Owed() == 0 }); !ok {
		t.Fatal("the owed spend was never swept")
	}
	r.stops[0]() // graceful: its writer and Redis carries are done
	u, err := r.st.GetUser(ctx, "probe-inflight-user")
	if err != nil {
		t.Fatal(err)
	}
	userRedis, _ := strconv.ParseInt(c.HGet(ctx, r.budget("user", "probe-inflight-user"), "spent").Val(), 10, 64)
	t.Logf("user stored spend %v, Redis %d; key hash %v", u.Spend, userRedis, c.HGetAll(ctx, r.budget("key", hash)).Val())
	if u.Spend < 0.0006-1e-9 {
		t.Fatalf("the user's stored spend %v lacks the request in flight at the deletion (want 2 requests' 0.0006)", u.Spend)
	}
	if userRedis < 600000 {
		t.Fatalf("the user's Redis spend %d lacks the request in flight at the deletion", userRedis)
	}
	if n := c.Exists(ctx, r.budget("key", hash)).Val(); n != 0 {
		t.Fatalf("the deleted key's Redis hash came back (its in-flight request's carry): %v", c.HGetAll(ctx, r.budget("key", hash)).Val())
	}
}
