package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// heldKeyLoad is a store whose LoadKeys reads the keys at once but hands
// them over only once the test lets it, so that requests and writes arrive
// while the gateway's keys are still loading, after their rows were read.
type heldKeyLoad struct {
	store.Store
	release chan struct{}
}

func (h *heldKeyLoad) LoadKeys(ctx context.Context) ([]*store.Key, error) {
	ks, err := h.Store.LoadKeys(ctx)
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return ks, err
}

// TestKeysServedWhileLoading: a gateway answers before its keys are loaded
// (Server.loadKeys). A key not yet in the snapshot is read from the store
// on its first request and is authenticated, charged to its own and its
// user's accounts (which start from the spend their rows carry), held to
// its budget and its rpm limit; loading the keys afterwards keeps what
// was charged and counted, and a key deleted meanwhile stays deleted.
func TestKeysServedWhileLoading(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		ctx := context.Background()
		now := time.Now().UTC()
		f := func(v float64) *float64 { return &v }
		one := int64(1)
		if err := st.CreateUser(ctx, &store.User{UserID: "u-load", UserRole: "internal_user", Spend: 0.5, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		mk := func(raw string, k store.Key) string {
			k.TokenHash, k.KeyName, k.UserID, k.CreatedAt, k.UpdatedAt = config.HashKey(raw), "sk-...", "u-load", now, now
			if err := st.CreateKey(ctx, &k); err != nil {
				t.Fatal(err)
			}
			return k.TokenHash
		}
		paying := mk("sk-load-paying", store.Key{Spend: 0.25, Limits: store.Limits{MaxBudget: f(10)}})
		mk("sk-load-spent", store.Key{Spend: 2, Limits: store.Limits{MaxBudget: f(1)}})
		mk("sk-load-rpm", store.Key{Limits: store.Limits{RPMLimit: &one}})
		gone := mk("sk-load-gone", store.Key{})

		held := &heldKeyLoad{Store: st, release: make(chan struct{})}
		e := startSpendWith(t, held, mockupstream.Options{}, "", "", Options{})
		loaded := e.srv.snap.Loaded()
		chat := func(key string) (int, string) {
			t.Helper()
			resp, out := e.post(t, "/v1/chat/completions", key, chat3)
			b, _ := json.Marshal(out)
			return resp.StatusCode, string(b)
		}
		if code, body := chat("sk-load-paying"); code != http.StatusOK {
			t.Fatalf("a key not yet loaded: %d %s", code, body)
		}
		if code, body := chat("sk-load-spent"); code == http.StatusOK || !strings.Contains(body, "udget") {
			t.Fatalf("a key over its budget, not yet loaded: %d %s", code, body)
		}
		if code, body := chat("sk-load-rpm"); code != http.StatusOK {
			t.Fatalf("rpm key, first request: %d %s", code, body)
		}
		if code, body := chat("sk-load-rpm"); code != http.StatusTooManyRequests {
			t.Fatalf("rpm key, second request in the minute: %d %s", code, body)
		}
		if code, body := chat("sk-load-unknown"); code != http.StatusUnauthorized {
			t.Fatalf("an unknown key: %d %s", code, body)
		}
		// Deleted through the API while the keys are still loading.
		if resp, out := e.post(t, "/key/delete", "sk-1234", `{"keys": ["sk-load-gone"]}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("delete: %d %v", resp.StatusCode, out)
		}
		select {
		case <-loaded:
			t.Fatal("the keys were loaded before the test let them: the requests above did not test the miss path")
		default:
		}
		keyAcct, ok := e.srv.book.Lookup(store.KindKey, paying)
		userAcct, uok := e.srv.book.Lookup(store.KindUser, "u-load")
		if !ok || !uok {
			t.Fatalf("accounts of the key served before loading: key %v user %v", ok, uok)
		}
		kSpent, uSpent := keyAcct.Spent(), userAcct.Spent()
		if kSpent <= ledger.USD(0.25) || uSpent <= ledger.USD(0.5) {
			t.Fatalf("charged from the rows' spend: key %v (row 0.25), user %v (row 0.5)", kSpent.Dollars(), uSpent.Dollars())
		}

		close(held.release)
		select {
		case <-loaded:
		case <-time.After(30 * time.Second):
			t.Fatal("keys not loaded within 30 s of their release")
		}
		if code, body := chat("sk-load-paying"); code != http.StatusOK {
			t.Fatalf("after loading: %d %s", code, body)
		}
		if got := keyAcct.Spent(); got <= kSpent {
			t.Fatalf("key spend after loading %v, want above %v (the loaded row must not reset it)", got.Dollars(), kSpent.Dollars())
		}
		if a, _ := e.srv.book.Lookup(store.KindKey, paying); a != keyAcct {
			t.Fatal("loading the keys replaced the key's account")
		}
		if code, body := chat("sk-load-rpm"); code != http.StatusTooManyRequests {
			t.Fatalf("rpm key after loading, same minute: %d %s", code, body)
		}
		if code, body := chat("sk-load-gone"); code != http.StatusUnauthorized {
			t.Fatalf("a key deleted while loading came back: %d %s", code, body)
		}
		if _, ok := e.srv.snap.Key(gone); ok {
			t.Fatal("a key deleted while loading is in the snapshot")
		}
		n := 0
		e.srv.snap.RangeKeys(func(*store.Key) bool { n++; return true })
		if n != 3 {
			t.Fatalf("snapshot holds %d keys after loading, want 3", n)
		}
	})
}
