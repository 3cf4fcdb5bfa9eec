package server

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
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
		held := &heldMiss{Store: st, hash: sha(raw), read: make(chan struct{}), release: make(chan struct{})}
		var wrapped store.Store = held
		if feed, ok := st.(store.ChangeFeed); ok {
			wrapped = heldMissFeed{held, feed}
		}
		e := startSpendWith(t, wrapped, mockupstream.Options{}, "", "", Options{ResyncInterval: time.Hour})
		select {
		case <-e.srv.snap.Loaded():
		case <-time.After(time.Minute):
			t.Fatal("keys not loaded within a minute")
		}
		if _, ok := within(time.Minute, func() bool { return e.srv.resyncDone.Load() > 0 }); !ok {
			t.Fatal("the resync after the start's load never completed")
		}
		resync := func() {
			t.Helper()
			seq := e.srv.resyncSeq.Load()
			e.srv.resyncKick <- struct{}{}
			if _, ok := within(time.Minute, func() bool { return e.srv.resyncDone.Load() > seq }); !ok {
				t.Fatal("no resync completed")
			}
		}
		now := time.Now().UTC()
		k := &store.Key{TokenHash: sha(raw), KeyName: "sk-...", CreatedAt: now, UpdatedAt: now}
		if err := st.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		held.armed.Store(true)
		first := make(chan int, 1)
		go func() {
			code, _ := send(t, e.url+"/v1/chat/completions", raw, chat3)
			first <- code
		}()
		select {
		case <-held.read:
		case <-time.After(time.Minute):
			t.Fatal("the miss path never read the key")
		}
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
		select {
		case code := <-first:
			t.Logf("the request whose miss read the row before the block: %d", code)
		case <-time.After(time.Minute):
			t.Fatal("the held request never answered")
		}
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
