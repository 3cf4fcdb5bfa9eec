package ledger

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// A period reset or a spend edit of an account Redis does not have makes
// its hash: the hash must expire as every hash a hold touches does, or an
// account never held again (a deleted key's) keeps it for ever. A hash
// that has an expiry keeps it.
func TestResetAndEditOfAnAbsentAccountExpire(t *testing.T) {
	c, r, prefix := redisRig(t, "expirynew")
	ctx := context.Background()
	period := strconv.FormatInt(time.Now().Add(-time.Second).UnixNano(), 10)
	week := 7 * 24 * time.Hour
	for _, tc := range []struct {
		name string
		run  func(k string) error
	}{
		{"reset", func(k string) error { _, err := r.Run(ctx, resetScript, []string{k}, period); return err }},
		{"edit", func(k string) error { _, err := r.Run(ctx, setSpentScript, []string{k}, int64(5), period); return err }},
		{"edit without a period", func(k string) error { _, err := r.Run(ctx, setSpentScript, []string{k}, int64(5), "0"); return err }},
	} {
		k := "{" + prefix + "}:key:" + tc.name
		if err := tc.run(k); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		ttl, err := c.PTTL(ctx, k).Result()
		if err != nil || ttl <= week-time.Hour || ttl > week {
			t.Errorf("%s of an absent account: hash TTL %v (%v), want about a week", tc.name, ttl, err)
		}
		// An expiry already set is kept, not pushed back.
		if err := c.PExpire(ctx, k, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if err := tc.run(k); err != nil {
			t.Fatalf("%s again: %v", tc.name, err)
		}
		if ttl, _ := c.PTTL(ctx, k).Result(); ttl > time.Hour {
			t.Errorf("%s of a hash with an expiry: TTL %v, want the hour it had", tc.name, ttl)
		}
	}
}
