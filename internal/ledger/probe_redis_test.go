package ledger_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// realRedis is the Redis of TOLLGATE_TEST_REDIS_URL and a prefix of its own.
func realRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	u := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if u == "" {
		t.Skip("TOLLGATE_TEST_REDIS_URL is not set")
	}
	o, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	var b [6]byte
	_, _ = rand.Read(b[:])
	p := "probe" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		keys, _ := c.Keys(context.Background(), "{"+p+"}*").Result()
		if len(keys) > 0 {
			c.Del(context.Background(), keys...)
		}
	})
	return c, p
}

// TestProbeLegacySuffixCollision: an end user's id is the client's to
// choose. An account named "<id>:e" (or ":h") is a hash in the one-hash
// layout; the rolling-upgrade sweep of account "<id>" read that key as the
// old layout's lease zset and failed with WRONGTYPE, so every hold of
// "<id>" failed on Redis (falling back to a replica share, or refused
// under fail_closed) and its pending spend was half applied.
func TestProbeLegacySuffixCollision(t *testing.T) {
	c, p := realRedis(t)
	ctx := context.Background()
	s := ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: p, Log: slog.New(slog.DiscardHandler), FailClosed: true})
	for _, suffix := range []string{":e", ":h"} {
		other := ledger.NewAccount(store.KindEndUser, "bob"+suffix, 0, ledger.USD(10))
		h, err := s.Reserve(ctx, []*ledger.Account{other}, ledger.USD(1))
		if err != nil {
			t.Fatal(err)
		}
		h.Settle(ledger.USD(0.5))
	}
	bob := ledger.NewAccount(store.KindEndUser, "bob", 0, ledger.USD(10))
	h, err := s.Reserve(ctx, []*ledger.Account{bob}, ledger.USD(1))
	if err != nil {
		t.Fatalf("end user bob refused because end user bob:e exists: %v", err)
	}
	k := "{" + p + "}:bud:end_user:bob"
	if held, _ := c.HGet(ctx, k, "held").Result(); held != strconv.FormatInt(int64(ledger.USD(1)), 10) {
		t.Fatalf("bob's hold is not on Redis: held %q", held)
	}
	h.Settle(ledger.USD(1))
	if spent, _ := c.HGet(ctx, k, "spent").Result(); spent != strconv.FormatInt(int64(ledger.USD(1)), 10) {
		t.Fatalf("bob's spend on Redis %q", spent)
	}
}

// TestProbeLargeSpendStaysInteger: amounts go up to MaxAmount (2^61
// nano-dollars). The settle wrote spent as a Lua number, which Redis 7
// formats shortest (1.2345678901234568e+17): the value was no longer exact,
// and every HINCRBY of it (the next hold's pending spend, CarryOffline, a
// replica of the layout before) failed with "hash value is not an integer".
func TestProbeLargeSpendStaysInteger(t *testing.T) {
	c, p := realRedis(t)
	ctx := context.Background()
	s := ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: p, Log: slog.New(slog.DiscardHandler)})
	const seed = 123456789012345678
	a := ledger.NewAccount(store.KindTeam, "big", seed, ledger.MaxAmount)
	h, err := s.Reserve(ctx, []*ledger.Account{a}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(3)
	k := "{" + p + "}:bud:team:big"
	for _, f := range []string{"spent", "held"} {
		v, _ := c.HGet(ctx, k, f).Result()
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("%s stored as %q, not an integer", f, v)
		}
	}
	if v, _ := c.HGet(ctx, k, "spent").Result(); v != strconv.FormatInt(seed+3, 10) {
		t.Fatalf("spent %s, want %d", v, int64(seed+3))
	}
	if err := c.HIncrBy(ctx, k, "spent", 1).Err(); err != nil {
		t.Fatalf("HINCRBY of spent: %v", err)
	}
}
