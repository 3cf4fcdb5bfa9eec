package cache

import (
	"container/list"
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// DefaultMaxBytes bounds a Local cache whose size is not configured.
const DefaultMaxBytes = 256 << 20

// localShards spreads a Local cache over locks: no request waits on one
// global lock.
const localShards = 16

// Local is an in-process LRU of entries bounded by their bytes, in shards
// each holding a 16th of the bound. An entry past its TTL is dropped when
// it is read or when room is needed.
type Local struct {
	seed   maphash.Seed
	shards [localShards]localShard
}

type localShard struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	ll    *list.List // front: most recently used
	items map[string]*list.Element
}

type localItem struct {
	key     string
	e       *Entry
	size    int64
	expires time.Time
}

var _ Backend = (*Local)(nil)

// NewLocal returns a Local cache of at most maxBytes (DefaultMaxBytes
// when 0 or less).
func NewLocal(maxBytes int64) *Local {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	l := &Local{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i] = localShard{max: max(maxBytes/localShards, 1), ll: list.New(), items: map[string]*list.Element{}}
	}
	return l
}

func (l *Local) shard(key string) *localShard {
	return &l.shards[maphash.String(l.seed, key)%localShards]
}

func (l *Local) Name() string { return "local" }

func (l *Local) Get(_ context.Context, key string) (*Entry, error) {
	s := l.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.items[key]
	if !ok {
		return nil, nil
	}
	it := el.Value.(*localItem)
	if time.Now().After(it.expires) {
		s.remove(el)
		return nil, nil
	}
	s.ll.MoveToFront(el)
	return it.e, nil
}

// Set stores e; an entry larger than the shard's bound is not stored.
func (l *Local) Set(_ context.Context, key string, e *Entry, ttl time.Duration) error {
	s := l.shard(key)
	size := e.Size() + int64(len(key))
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.items[key]; ok {
		s.remove(el)
	}
	if size > s.max {
		return nil
	}
	for s.bytes+size > s.max {
		s.remove(s.ll.Back())
	}
	s.items[key] = s.ll.PushFront(&localItem{key: key, e: e, size: size, expires: time.Now().Add(ttl)})
	s.bytes += size
	return nil
}

func (s *localShard) remove(el *list.Element) {
	it := el.Value.(*localItem)
	s.ll.Remove(el)
	delete(s.items, it.key)
	s.bytes -= it.size
}

func (l *Local) Delete(_ context.Context, keys ...string) error {
	for _, k := range keys {
		s := l.shard(k)
		s.mu.Lock()
		if el, ok := s.items[k]; ok {
			s.remove(el)
		}
		s.mu.Unlock()
	}
	return nil
}

func (l *Local) Flush(context.Context) error {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		s.ll.Init()
		clear(s.items)
		s.bytes = 0
		s.mu.Unlock()
	}
	return nil
}

func (l *Local) Ping(context.Context) error { return nil }

// Bytes is what the entries take now.
func (l *Local) Bytes() int64 {
	var n int64
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += s.bytes
		s.mu.Unlock()
	}
	return n
}
