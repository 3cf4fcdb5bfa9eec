package server

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestMissDoesNotOverwriteFresherResync: the miss path reads a key's
// row (made on another replica); before it publishes it, the other
// replica blocks the key and a resync here reads and applies the blocked
// row. The miss path's older row must not replace it: on PostgreSQL no
// later resync reads the row again, and the blocked key would be served
// until its next change or a restart. Before branch missdelrev the miss
// path put its row over whatever was there (also before branch missdel).
func TestMissDoesNotOverwriteFresherResync(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		ctx := context.Background()
		const raw = "sk-missblock-key-1"
		held, wrapped := newHeldMiss(st, raw)
		e, resync := startKicked(t, wrapped)
		now := time.Now().UTC()
		k := &store.Key{TokenHash: sha(raw), KeyName: "sk-...", CreatedAt: now, UpdatedAt: now}
		if err := st.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		first := askHeld(t, e, held, raw)
		blocked := *k
		blocked.Blocked, blocked.BlockedBy = true, "admin"
		if err := st.UpdateKey(ctx, &blocked); err != nil {
			t.Fatal(err)
		}
		resync()
		if got, ok := e.srv.snap.Key(sha(raw)); !ok || !got.Blocked {
			t.Fatalf("the resync did not publish the blocked row (%v)", ok)
		}
		close(held.release)
		awaitHeld(t, first, "before the block")
		if code, body := send(t, e.url+"/v1/chat/completions", raw, chat3); code == http.StatusOK {
			t.Errorf("the blocked key, after the miss published its older row: %d %s", code, body)
		}
		for i := range 2 {
			resync()
			if code, body := send(t, e.url+"/v1/chat/completions", raw, chat3); code == http.StatusOK {
				t.Errorf("the blocked key, after resync %d: %d %s", i+1, code, body)
			}
		}
	})
}
