package ledger

import (
	"sync"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeRemotePartMadeConcurrently: an account's Redis-only part is
// made on first use by whichever goroutine comes first. Every path must
// then see that one part: a seed read while another goroutine's first
// move (Spend, which makes the part) is half done must wait for it, never
// read the movers of a part of its own (seed S−x); two mirrors made from
// different goroutines must share one mirror lock; a read-only accessor
// must never leave a part of its own behind.
func TestProbeRemotePartMadeConcurrently(t *testing.T) {
	const S, x = 1000, 7
	for i := range 3000 {
		a := NewAccount(store.KindKey, "k", S, USD(100))
		parts := make([]*remote, 3)
		var wg sync.WaitGroup
		var seeds [2][]int64
		start := make(chan struct{})
		run := func(f func()) {
			wg.Add(1)
			go func() { defer wg.Done(); <-start; f() }()
		}
		run(func() { Spend([]*Account{a}, Amount(x)) })
		for g := range 2 {
			run(func() {
				for range 20 {
					seeds[g] = append(seeds[g], a.seed())
				}
			})
		}
		for g := range 2 {
			run(func() {
				a.LastHeard()
				a.owesRedis()
				mirrorAt(a, S, uint64(g+1), 0)
				parts[g] = a.remote()
			})
		}
		run(func() { parts[2] = a.remote() })
		close(start)
		wg.Wait()
		for _, p := range parts {
			if p != a.rs.Load() {
				t.Fatalf("account %d: a goroutine got a part other than the account's", i)
			}
		}
		for _, ss := range seeds {
			for _, s := range ss {
				if s != S {
					t.Fatalf("account %d: seed %d read, want %d (a half-done move seen)", i, s, S)
				}
			}
		}
		if a.Unsynced() != x || a.seed() != S || a.Spent() != S+x {
			t.Fatalf("account %d: unsynced %d seed %d spent %d", i, a.Unsynced(), a.seed(), a.Spent())
		}
	}
}
