package server

import (
	"context"
	"encoding/json"
	"fmt"
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

func (h *heldKeyLoad) LoadKeys(ctx context.Context, page func([]*store.Key) error) error {
	var pages [][]*store.Key
	err := h.Store.LoadKeys(ctx, func(p []*store.Key) error {
		pages = append(pages, p)
		return nil
	})
	select {
	case <-h.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err != nil {
		return err
	}
	for _, p := range pages {
		if err := page(p); err != nil {
			return err
		}
	}
	return nil
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

// pausedKeyLoad is a store whose LoadKeys hands over the store's first page
// of keys and then waits, between pages (the store's connection free: the
// next page is not yet read), until the test lets it go on.
type pausedKeyLoad struct {
	store.Store
	first   chan struct{} // closed once the first page is in the snapshot
	release chan struct{}
}

func (p *pausedKeyLoad) LoadKeys(ctx context.Context, page func([]*store.Key) error) error {
	n := 0
	return p.Store.LoadKeys(ctx, func(ks []*store.Key) error {
		if err := page(ks); err != nil {
			return err
		}
		if n++; n == 1 {
			close(p.first)
			select {
			case <-p.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
}

// TestKeysServedBetweenPages: while the start-up load is between its pages
// (Store.LoadKeys reads store.KeyPage keys at a time), keys of pages still
// to come are served through the miss path, each from its own row: a key
// over its budget is refused, a key charged keeps one account whose spend
// is not counted again when its page, read after the spend reached the
// store, arrives; a key blocked or deleted meanwhile stays so; a key made
// meanwhile works. Real SQLite and PostgreSQL.
func TestKeysServedBetweenPages(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		ctx := context.Background()
		now := time.Now().UTC()
		f := func(v float64) *float64 { return &v }
		if err := st.CreateUser(ctx, &store.User{UserID: "u-page", UserRole: "internal_user", CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		// The first page: keys whose hashes sort before any digest of the
		// test's raw keys below (all of which start with a letter or 1-9
		// after "sk-page-": checked), so the test's keys come later.
		for i := range store.KeyPage {
			h := fmt.Sprintf("0000%060d", i)
			if err := st.CreateKey(ctx, &store.Key{TokenHash: h, KeyName: "sk-...", CreatedAt: now, UpdatedAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		mk := func(raw string, k store.Key) string {
			t.Helper()
			k.TokenHash, k.KeyName, k.UserID, k.CreatedAt, k.UpdatedAt = config.HashKey(raw), "sk-...", "u-page", now, now
			if strings.HasPrefix(k.TokenHash, "0000") {
				t.Fatalf("%s's digest sorts into the first page", raw)
			}
			if err := st.CreateKey(ctx, &k); err != nil {
				t.Fatal(err)
			}
			return k.TokenHash
		}
		paying := mk("sk-page-paying", store.Key{Spend: 0.25, Limits: store.Limits{MaxBudget: f(10)}})
		mk("sk-page-spent", store.Key{Spend: 2, Limits: store.Limits{MaxBudget: f(1)}})
		mk("sk-page-block", store.Key{})
		gone := mk("sk-page-gone", store.Key{})

		p := &pausedKeyLoad{Store: st, first: make(chan struct{}), release: make(chan struct{})}
		// No resync while the test runs: it reads rows changed in the last
		// 5 s, these keys among them, and would put the second page's keys
		// in the snapshot before their page (seen on a busy machine, where
		// the first page came after the first resync's tick).
		e := startSpendWith(t, p, mockupstream.Options{}, "", "", Options{ResyncInterval: time.Hour})
		select {
		case <-p.first:
		case <-time.After(60 * time.Second):
			t.Fatal("the first page of keys did not arrive within 60 s")
		}
		loaded := e.srv.snap.Loaded()
		chat := func(key string) (int, string) {
			t.Helper()
			resp, out := e.post(t, "/v1/chat/completions", key, chat3)
			b, _ := json.Marshal(out)
			return resp.StatusCode, string(b)
		}
		if _, ok := e.srv.snap.Key(paying); ok {
			t.Fatal("a key of the second page is in the snapshot before its page: the test does not test the miss path")
		}
		for range 3 {
			if code, body := chat("sk-page-paying"); code != http.StatusOK {
				t.Fatalf("a key of a page not yet read: %d %s", code, body)
			}
		}
		if code, body := chat("sk-page-spent"); code == http.StatusOK || !strings.Contains(body, "udget") {
			t.Fatalf("a key over its budget, page not yet read: %d %s", code, body)
		}
		if code, body := chat("sk-page-block"); code != http.StatusOK {
			t.Fatalf("key to block, before: %d %s", code, body)
		}
		if resp, out := e.post(t, "/key/block", "sk-1234", `{"key": "sk-page-block"}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("block: %d %v", resp.StatusCode, out)
		}
		if resp, out := e.post(t, "/key/delete", "sk-1234", `{"keys": ["sk-page-gone"]}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("delete: %d %v", resp.StatusCode, out)
		}
		if resp, out := e.post(t, "/key/generate", "sk-1234", `{"key": "sk-page-made", "user_id": "u-page"}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("generate: %d %v", resp.StatusCode, out)
		}
		keyAcct, ok := e.srv.book.Lookup(store.KindKey, paying)
		if !ok {
			t.Fatal("no account for the key served before its page")
		}
		kSpent := keyAcct.Spent()
		if kSpent <= ledger.USD(0.25) {
			t.Fatalf("key charged from its row's spend: %v, want above 0.25", kSpent.Dollars())
		}
		// The spend reaches the row before the key's page is read, so the
		// page carries it: it must not be added to the account again.
		waitFor(t, "the key's spend in its row", func() bool {
			k, err := st.GetKey(ctx, paying)
			return err == nil && ledger.USD(k.Spend) >= kSpent
		})
		select {
		case <-loaded:
			t.Fatal("the keys were loaded before the test let them")
		default:
		}
		close(p.release)
		select {
		case <-loaded:
		case <-time.After(60 * time.Second):
			t.Fatal("keys not loaded within 60 s of their release")
		}
		if a, _ := e.srv.book.Lookup(store.KindKey, paying); a != keyAcct || a.Spent() != kSpent {
			t.Fatalf("after the page: account replaced %v, spend %v, want %v", a != keyAcct, a.Spent().Dollars(), kSpent.Dollars())
		}
		// The next request, the first on the loaded record, adds its cost
		// once: as much to the key as to its user (whose record the load
		// does not touch).
		userAcct, ok := e.srv.book.Lookup(store.KindUser, "u-page")
		if !ok {
			t.Fatal("no account for the keys' user")
		}
		uBefore := userAcct.Spent()
		if code, body := chat("sk-page-paying"); code != http.StatusOK {
			t.Fatalf("after loading: %d %s", code, body)
		}
		if dk, du := keyAcct.Spent()-kSpent, userAcct.Spent()-uBefore; dk != du || dk <= 0 {
			t.Fatalf("request after loading added %v to the key, %v to its user", dk.Dollars(), du.Dollars())
		}
		if code, body := chat("sk-page-spent"); code == http.StatusOK || !strings.Contains(body, "udget") {
			t.Fatalf("a key over its budget, after loading: %d %s", code, body)
		}
		if code, body := chat("sk-page-block"); code != http.StatusUnauthorized {
			t.Fatalf("a key blocked while loading came back: %d %s", code, body)
		}
		if code, body := chat("sk-page-gone"); code != http.StatusUnauthorized {
			t.Fatalf("a key deleted while loading came back: %d %s", code, body)
		}
		if _, ok := e.srv.snap.Key(gone); ok {
			t.Fatal("a key deleted while loading is in the snapshot")
		}
		if code, body := chat("sk-page-made"); code != http.StatusOK {
			t.Fatalf("a key made while loading: %d %s", code, body)
		}
		n := 0
		e.srv.snap.RangeKeys(func(*store.Key) bool { n++; return true })
		if want := store.KeyPage + 4; n != want {
			t.Fatalf("snapshot holds %d keys after loading, want %d", n, want)
		}
	})
}
