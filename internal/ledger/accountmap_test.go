package ledger

import (
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/tollgate/tollgate/internal/memtest"
	"github.com/tollgate/tollgate/internal/store"
)

// Concurrent first uses of the same ids get one account each, and Range
// sees every account once, also while accounts are being created.
func TestBookAccountsOncePerIDConcurrently(t *testing.T) {
	b := NewBook(nil)
	const ids, workers = 2000, 4
	got := make([][]*Account, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				got[w] = append(got[w], b.Account(store.KindKey, fmt.Sprintf("k%d", (i*7+w)%ids), Spec{}))
			}
		}()
		wg.Add(1)
		go func() { // ranges meanwhile, creating accounts from inside fn
			defer wg.Done()
			b.Range(store.KindKey, func(a *Account) bool {
				b.Account(store.KindUser, a.ID, Spec{})
				return true
			})
		}()
	}
	wg.Wait()
	byID := map[string]*Account{}
	for w := range workers {
		for _, a := range got[w] {
			if prev, ok := byID[a.ID]; ok && prev != a {
				t.Fatalf("two accounts for %s", a.ID)
			}
			byID[a.ID] = a
		}
	}
	if len(byID) != ids {
		t.Fatalf("%d accounts, want %d", len(byID), ids)
	}
	seen := map[*Account]int{}
	b.Range(store.KindKey, func(a *Account) bool { seen[a]++; return true })
	if len(seen) != ids {
		t.Fatalf("Range saw %d accounts, want %d", len(seen), ids)
	}
	for a, n := range seen {
		if n != 1 || byID[a.ID] != a {
			t.Fatalf("Range saw %s %d times (or another account)", a.ID, n)
		}
		if l, ok := b.Lookup(store.KindKey, a.ID); !ok || l != a {
			t.Fatalf("Lookup(%s) is not the account", a.ID)
		}
	}
	if _, ok := b.Lookup(store.KindKey, "none"); ok {
		t.Fatal("Lookup found an account never made")
	}
	stop := 0
	b.Range(store.KindKey, func(*Account) bool { stop++; return stop < 3 })
	if stop != 3 {
		t.Fatalf("Range went on after fn returned false: %d calls", stop)
	}
}

// A key's account, as a gateway without Redis keeps one for every key
// used, costs ≈ 200 B of live heap with its id and its place in the book
// (224 B for the account alone before its Redis-only part went behind a
// pointer, ≈ 125 B more for a sync.Map's entry: ≈ 410 B in all). The
// bound has room for a map caught just after it grew.
func TestKeyAccountBytes(t *testing.T) {
	const n = 20_000
	budget := 10.0
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%064x", i) // a key hash: 64 hex digits
	}
	b := NewBook(nil)
	b.Account(store.KindKey, "warm", Spec{Budget: &budget}) // the book's own tables
	before := memtest.LiveHeap()
	for _, id := range ids {
		// The id is the request's: the book keeps its own copy.
		a := b.Account(store.KindKey, string([]byte(id)), Spec{Spent: 1, Budget: &budget})
		r, err := Reserve([]*Account{a}, USD(0.01))
		if err != nil {
			t.Fatal(err)
		}
		// What a request does with it after: settle, read the spend
		// and what Redis said (the answer's headers).
		r.Settle(USD(0.005))
		var s Settling
		if s.Spent(a) != USD(1.005) {
			t.Fatalf("spent %v", s.Spent(a))
		}
		a.LastHeard()
	}
	after := memtest.LiveHeap()
	perKey := float64(after-before) / n
	t.Logf("%.0f B a key account", perKey)
	if perKey > 300 {
		t.Fatalf("a key account costs %.0f B of live heap, want ≤ 300", perKey)
	}
	runtime.KeepAlive(b)
	runtime.KeepAlive(ids)
}
