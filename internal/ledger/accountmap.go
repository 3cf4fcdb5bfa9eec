package ledger

import (
	"hash/maphash"
	"sync"
)

// accountShards is how many shards an accountMap has: enough that two
// requests rarely share one (each takes its shard's read lock, an atomic
// add), few enough that a gateway with a handful of accounts stays small.
const accountShards = 64

var accountSeed = maphash.MakeSeed()

// accountMap is one kind's accounts by id: shards of plain maps under
// read-write locks. Accounts are never removed. Lookups take one shard's
// read lock (no lock is global); a sync.Map, used before, cost ≈ 126 B an
// entry (its trie nodes, its entry node, the id boxed in an interface),
// a plain map's slot ≈ 42 B, and there is an account for every key used.
type accountMap struct {
	shards [accountShards]accountShard
}

type accountShard struct {
	mu sync.RWMutex
	m  map[string]*Account // key: the account's own ID, no copy
	_  [64 - 24 - 8]byte   // a cache line each: shards' locks do not share one
}

func (m *accountMap) shard(id string) *accountShard {
	return &m.shards[maphash.String(accountSeed, id)%accountShards]
}

// load returns id's account, if any.
func (m *accountMap) load(id string) (*Account, bool) {
	sh := m.shard(id)
	sh.mu.RLock()
	a, ok := sh.m[id]
	sh.mu.RUnlock()
	return a, ok
}

// loadOrStore returns id's account, storing a (whose ID is id) when there
// is none, as sync.Map.LoadOrStore.
func (m *accountMap) loadOrStore(a *Account) *Account {
	sh := m.shard(a.ID)
	sh.mu.RLock()
	cur, ok := sh.m[a.ID]
	sh.mu.RUnlock()
	if ok {
		return cur
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if cur, ok := sh.m[a.ID]; ok {
		return cur
	}
	if sh.m == nil {
		sh.m = make(map[string]*Account)
	}
	sh.m[a.ID] = a
	return a
}

// remove drops id's account, if any.
func (m *accountMap) remove(id string) {
	sh := m.shard(id)
	sh.mu.Lock()
	delete(sh.m, id)
	sh.mu.Unlock()
}

// rangeAll calls fn for every account, until fn returns false. fn is
// called with no lock held (it may look accounts up or create them); an
// account stored meanwhile may or may not be seen, as with sync.Map.Range.
func (m *accountMap) rangeAll(fn func(*Account) bool) {
	var buf []*Account
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.RLock()
		buf = buf[:0]
		for _, a := range sh.m {
			buf = append(buf, a)
		}
		sh.mu.RUnlock()
		for _, a := range buf {
			if !fn(a) {
				return
			}
		}
	}
}
