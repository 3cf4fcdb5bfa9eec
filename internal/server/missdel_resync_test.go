package server

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// heldResync holds one armed resync read (Changes or ChangesFrom) after it
// has read, until the test lets it go on to Apply.
type heldResync struct {
	*heldMiss
	feed    store.ChangeFeed // nil: SQLite
	armed   atomic.Bool
	read    chan struct{}
	release chan struct{}
}

func (h *heldResync) hold() {
	if h.armed.CompareAndSwap(true, false) {
		close(h.read)
		select {
		case <-h.release:
		case <-time.After(time.Minute):
		}
	}
}

func (h *heldResync) Changes(ctx context.Context, since time.Time) (*store.Snapshot, []store.Deletion, error) {
	s, d, err := h.heldMiss.Changes(ctx, since)
	h.hold()
	return s, d, err
}

type heldResyncFeed struct{ *heldResync }

func (h heldResyncFeed) ChangeMark(ctx context.Context) (uint64, bool, error) {
	return h.feed.ChangeMark(ctx)
}

func (h heldResyncFeed) ChangesFrom(ctx context.Context, mark uint64) (*store.Snapshot, []store.Deletion, error) {
	s, d, err := h.feed.ChangesFrom(ctx, mark)
	h.hold()
	return s, d, err
}

// TestOtherReplicaDeletionReadByResyncInFlight: another replica deletes a
// key (straight in the store) while this replica's miss path holds the row
// it read before; a resync that began after that read reads the deletion
// and applies it only after the miss path has published the row. The
// deletion must win: the key is refused from that resync on. Before
// branch missdel the miss path marked the key as written here when it
// published, so the resync skipped the deletion as older than the write,
// and on PostgreSQL, whose next look does not read that deletion again,
// the deleted key was served until a restart (SQLite's overlap read it
// again at the next resync).
func TestOtherReplicaDeletionReadByResyncInFlight(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		ctx := context.Background()
		const raw = "sk-missdel-probe-1"
		miss, _ := newHeldMiss(st, raw)
		rs := &heldResync{heldMiss: miss, read: make(chan struct{}), release: make(chan struct{})}
		var wrapped store.Store = rs
		if feed, ok := st.(store.ChangeFeed); ok {
			rs.feed = feed
			wrapped = heldResyncFeed{rs}
		}
		e, resync := startKicked(t, wrapped)
		now := time.Now().UTC()
		if err := st.CreateKey(ctx, &store.Key{TokenHash: sha(raw), KeyName: "sk-...", CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		first := askHeld(t, e, miss, raw)
		if err := st.DeleteKey(ctx, sha(raw)); err != nil {
			t.Fatal(err)
		}
		seq := e.srv.resyncSeq.Load()
		rs.armed.Store(true)
		e.srv.resyncKick <- struct{}{}
		select {
		case <-rs.read:
		case <-time.After(time.Minute):
			t.Fatal("the resync never read")
		}
		close(miss.release)
		awaitHeld(t, first, "before the deletion")
		if _, ok := e.srv.snap.Key(sha(raw)); !ok {
			t.Fatal("the miss path did not publish the row: the test would not show the resync's order")
		}
		close(rs.release)
		if _, ok := within(time.Minute, func() bool { return e.srv.resyncDone.Load() > seq }); !ok {
			t.Fatal("the held resync never completed")
		}
		if code, body := send(t, e.url+"/v1/chat/completions", raw, chat3); code != http.StatusUnauthorized {
			t.Errorf("a key deleted on another replica, after the resync that read its deletion: %d %s", code, body)
		}
		for i := range 3 {
			resync()
			if code, body := send(t, e.url+"/v1/chat/completions", raw, chat3); code != http.StatusUnauthorized {
				t.Errorf("a key deleted on another replica, %d resyncs later: %d %s", i+1, code, body)
			}
		}
	})
}
