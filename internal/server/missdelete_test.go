package server

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// heldMiss is a store whose GetKey of one armed hash reads the row at once
// but returns it only once the test lets it: the miss path (Server.keyMiss)
// then publishes a row read before whatever the test does meanwhile.
type heldMiss struct {
	store.Store
	hash    string
	armed   atomic.Bool
	read    chan struct{} // closed once the armed row is read
	release chan struct{}
}

func (h *heldMiss) GetKey(ctx context.Context, hash string) (*store.Key, error) {
	k, err := h.Store.GetKey(ctx, hash)
	if hash == h.hash && h.armed.CompareAndSwap(true, false) {
		close(h.read)
		select { // not the caller's context: the row is read, only its hand-over waits
		case <-h.release:
		case <-time.After(time.Minute):
		}
	}
	return k, err
}

// heldMissFeed is heldMiss on a store with a change feed (PostgreSQL), so
// that the server resyncs by transaction ids as it does in production.
type heldMissFeed struct {
	*heldMiss
	feed store.ChangeFeed
}

func (h heldMissFeed) ChangeMark(ctx context.Context) (uint64, bool, error) {
	return h.feed.ChangeMark(ctx)
}

func (h heldMissFeed) ChangesFrom(ctx context.Context, mark uint64) (*store.Snapshot, []store.Deletion, error) {
	return h.feed.ChangesFrom(ctx, mark)
}

// newHeldMiss is a heldMiss of raw's hash on st, and the store to serve
// (with st's change feed when it has one).
func newHeldMiss(st store.Store, raw string) (*heldMiss, store.Store) {
	h := &heldMiss{Store: st, hash: sha(raw), read: make(chan struct{}), release: make(chan struct{})}
	if feed, ok := st.(store.ChangeFeed); ok {
		return h, heldMissFeed{h, feed}
	}
	return h, h
}

// askHeld arms h and presents raw in a request of its own, and returns
// once the miss path has read the row (held until h.release): the request's
// status arrives on the channel.
func askHeld(t *testing.T, e *spendEnv, h *heldMiss, raw string) <-chan int {
	t.Helper()
	h.armed.Store(true)
	first := make(chan int, 1)
	go func() {
		code, _ := send(t, e.url+"/v1/chat/completions", raw, chat3)
		first <- code
	}()
	select {
	case <-h.read:
	case <-time.After(time.Minute):
		t.Fatal("the miss path never read the key")
	}
	return first
}

// awaitHeld waits for askHeld's request to answer and logs its status.
func awaitHeld(t *testing.T, first <-chan int, what string) {
	t.Helper()
	select {
	case code := <-first:
		t.Logf("the request whose miss read the row %s: %d", what, code)
	case <-time.After(time.Minute):
		t.Fatal("the held request never answered")
	}
}

// startKicked serves st with resyncs only when the test asks (the
// returned function kicks one and waits for it), once the start's keys
// are loaded and its first resync has completed: nothing else decides
// when a row or a deletion is read again.
func startKicked(t *testing.T, st store.Store) (*spendEnv, func()) {
	t.Helper()
	e := startSpendWith(t, st, mockupstream.Options{}, "", "", Options{ResyncInterval: time.Hour})
	select {
	case <-e.srv.snap.Loaded():
	case <-time.After(time.Minute):
		t.Fatal("keys not loaded within a minute")
	}
	if _, ok := within(time.Minute, func() bool { return e.srv.resyncDone.Load() > 0 }); !ok {
		t.Fatal("the resync after the start's load never completed")
	}
	return e, func() {
		t.Helper()
		seq := e.srv.resyncSeq.Load()
		e.srv.resyncKick <- struct{}{}
		if _, ok := within(time.Minute, func() bool { return e.srv.resyncDone.Load() > seq }); !ok {
			t.Fatal("no resync completed")
		}
	}
}

// TestMissReadBeforeDeleteDoesNotRevive: a key made on another replica
// (straight into the store) is presented here, where the snapshot lacks
// it; the miss path reads its row, and before it publishes it the key is
// deleted through this replica's /key/delete. The row read before the
// deletion must not put the key back: the key is refused from then on,
// through later resyncs too. Before the fix putKey cleared the deletion's
// mark and published the row, and the deletion here was the last word
// this replica had of it (the next resync skips a deletion read before a
// write marked here), so the deleted key authenticated.
func TestMissReadBeforeDeleteDoesNotRevive(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		ctx := context.Background()
		const raw = "sk-missdel-key-1"
		held, wrapped := newHeldMiss(st, raw)
		e, resync := startKicked(t, wrapped)
		chat := func() (int, string) {
			t.Helper()
			return send(t, e.url+"/v1/chat/completions", raw, chat3)
		}

		now := time.Now().UTC()
		if err := st.CreateKey(ctx, &store.Key{TokenHash: sha(raw), KeyName: "sk-...", CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if _, ok := e.srv.snap.Key(sha(raw)); ok {
			t.Fatal("the key is in the snapshot before its first request: the test would not go through the miss path")
		}
		first := askHeld(t, e, held, raw)
		if code, body := send(t, e.url+"/key/delete", "sk-1234", `{"keys": ["`+raw+`"]}`); code != http.StatusOK {
			t.Fatalf("delete: %d %s", code, body)
		}
		close(held.release)
		awaitHeld(t, first, "before the deletion")

		if _, ok := e.srv.snap.Key(sha(raw)); ok {
			t.Error("the deleted key is back in the snapshot after the miss path published its row")
		}
		if code, body := chat(); code != http.StatusUnauthorized {
			t.Errorf("the deleted key, after the miss path published its row: %d %s", code, body)
		}
		for i := range 3 {
			resync()
			if code, body := chat(); code != http.StatusUnauthorized {
				t.Errorf("the deleted key, after resync %d: %d %s", i+1, code, body)
			}
		}
	})
}

// TestRegenerateWithItsOwnSecretKeepsTheKey: /key/regenerate given the
// key's own secret as new_key replaces the row under the same hash; the
// key must stay served here. The snapshot drops a row stamped no later
// than its key's deletion here (putKey), and the store stamps the new row
// before the handler publishes it: deleting the old hash from the
// snapshot first would have the key refused here for a minute.
func TestRegenerateWithItsOwnSecretKeepsTheKey(t *testing.T) {
	e, resync := startKicked(t, sqliteStore(t))
	const raw = "sk-missdel-same-secret"
	if code, body := send(t, e.url+"/key/generate", "sk-1234", `{"key": "`+raw+`"}`); code != http.StatusOK {
		t.Fatalf("generate: %d %s", code, body)
	}
	if code, body := send(t, e.url+"/key/regenerate", "sk-1234", `{"key": "`+raw+`", "new_key": "`+raw+`"}`); code != http.StatusOK {
		t.Fatalf("regenerate: %d %s", code, body)
	}
	if code, body := send(t, e.url+"/v1/chat/completions", raw, chat3); code != http.StatusOK {
		t.Fatalf("the key regenerated with its own secret: %d %s", code, body)
	}
	resync()
	if code, body := send(t, e.url+"/v1/chat/completions", raw, chat3); code != http.StatusOK {
		t.Fatalf("the key regenerated with its own secret, after a resync: %d %s", code, body)
	}
}
