package ledger

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/rscript"
)

// redisClient connects to TOLLGATE_TEST_REDIS_URL, closed at the test's
// end; without it the test is skipped.
func redisClient(t *testing.T) *redis.Client {
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
	return c
}

// redisRig is a client, a started script runner on it, and a key prefix
// of the test's own (name and a fresh lease) whose keys are deleted at
// the test's end.
func redisRig(t *testing.T, name string) (*redis.Client, *rscript.Runner, string) {
	t.Helper()
	c := redisClient(t)
	r := rscript.NewRunner(c, rscript.Options{Log: slog.New(slog.DiscardHandler)})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	prefix := name + newLease()
	t.Cleanup(func() {
		keys, _ := c.Keys(context.Background(), "{"+prefix+"}*").Result()
		if len(keys) > 0 {
			c.Del(context.Background(), keys...)
		}
	})
	return c, r, prefix
}
