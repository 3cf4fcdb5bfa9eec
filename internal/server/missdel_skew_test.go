package server

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// aheadDeletions is a store whose key deletions read by a resync carry
// stamps `ahead` later than the store wrote them: they were made by
// another replica whose clock runs that much ahead of this one's.
type aheadDeletions struct {
	store.Store
	ahead time.Duration
}

func (a aheadDeletions) shift(s *store.Snapshot, ds []store.Deletion, err error) (*store.Snapshot, []store.Deletion, error) {
	for i := range ds {
		if ds[i].Kind == store.KindKey {
			ds[i].At = ds[i].At.Add(a.ahead)
		}
	}
	return s, ds, err
}

func (a aheadDeletions) Changes(ctx context.Context, since time.Time) (*store.Snapshot, []store.Deletion, error) {
	return a.shift(a.Store.Changes(ctx, since))
}

type aheadDeletionsFeed struct {
	aheadDeletions
	feed store.ChangeFeed
}

func (a aheadDeletionsFeed) ChangeMark(ctx context.Context) (uint64, bool, error) {
	return a.feed.ChangeMark(ctx)
}

func (a aheadDeletionsFeed) ChangesFrom(ctx context.Context, mark uint64) (*store.Snapshot, []store.Deletion, error) {
	return a.shift(a.feed.ChangesFrom(ctx, mark))
}

// TestKeyMadeAgainAfterSkewedDeletion: a key deleted on another
// replica whose clock runs 3 s ahead, then made again here with the same
// secret (/key/generate with "key"): the store holds the new key, so it
// must authenticate here. Its row is stamped by this replica's clock,
// before the other replica's deletion stamp. With branch missdel the
// snapshot dropped it (putKey: stamped no later than the deletion), the
// admin write and every miss alike, and the key was refused on every
// replica until the deletion's mark was pruned (a minute past the skewed
// stamp); a row the miss path began reading after the deletion was marked
// here is now taken whatever its stamp (putKeyAsOf).
func TestKeyMadeAgainAfterSkewedDeletion(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		ctx := context.Background()
		const raw = "sk-missdel-skew-1"
		var wrapped store.Store = aheadDeletions{st, 3 * time.Second}
		if feed, ok := st.(store.ChangeFeed); ok {
			wrapped = aheadDeletionsFeed{aheadDeletions{st, 3 * time.Second}, feed}
		}
		e, resync := startKicked(t, wrapped)
		// The other replica makes the key and deletes it.
		now := time.Now().UTC()
		if err := st.CreateKey(ctx, &store.Key{TokenHash: sha(raw), KeyName: "sk-...", CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteKey(ctx, sha(raw)); err != nil {
			t.Fatal(err)
		}
		resync() // this replica learns the deletion
		if code, body := send(t, e.url+"/key/generate", "sk-1234", `{"key": "`+raw+`"}`); code != http.StatusOK {
			t.Fatalf("generate: %d %s", code, body)
		}
		if code, body := send(t, e.url+"/v1/chat/completions", raw, chat3); code != http.StatusOK {
			t.Errorf("the key made again here after the skewed deletion: %d %s", code, body)
		}
		resync()
		if code, body := send(t, e.url+"/v1/chat/completions", raw, chat3); code != http.StatusOK {
			t.Errorf("the key made again here, after a resync: %d %s", code, body)
		}
	})
}
