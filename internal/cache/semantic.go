package cache

import (
	"context"
	"math"
	"sync"
)

// DefaultIndexSize bounds a semantic Index whose size is not configured.
const DefaultIndexSize = 2000

// Index is the semantic cache's in-process vector index: for each
// partition (everything in a request but its prompt), the prompts'
// embeddings and the cache keys of their answers. A lookup is a linear
// scan of the partition under a read lock, so its cost grows with the
// vectors held: 1,536-dimension vectors cost ~2.8 µs each to compare
// (BenchmarkIndexNearest), ~6 ms for a lookup at the default 2,000, ~28 ms
// at 10,000; past a few thousand a real vector index (Redis Search, Qdrant)
// is the tool. When full, the oldest vector is dropped.
type Index struct {
	mu    sync.RWMutex
	max   int
	parts map[string][]vector
	order []indexRef // insertion order, for eviction
}

type vector struct {
	v   []float32 // unit length
	key string
}

type indexRef struct{ part, key string }

// NewIndex returns an index of at most size vectors (DefaultIndexSize when
// 0 or less).
func NewIndex(size int) *Index {
	if size <= 0 {
		size = DefaultIndexSize
	}
	return &Index{max: size, parts: map[string][]vector{}}
}

// Add files v (normalised here) under part with the answer's key.
func (x *Index) Add(part string, v []float32, key string) {
	u := unit(v)
	if u == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, e := range x.parts[part] {
		if e.key == key {
			x.parts[part][i].v = u
			return
		}
	}
	x.parts[part] = append(x.parts[part], vector{v: u, key: key})
	x.order = append(x.order, indexRef{part, key})
	for len(x.order) > x.max {
		old := x.order[0]
		x.order = x.order[1:]
		vs := x.parts[old.part]
		for i, e := range vs {
			if e.key == old.key {
				x.parts[old.part] = append(vs[:i:i], vs[i+1:]...)
				break
			}
		}
		if len(x.parts[old.part]) == 0 {
			delete(x.parts, old.part)
		}
	}
}

// Nearest is the key of the vector of part most similar to v (cosine), and
// its similarity, when that is at least threshold.
func (x *Index) Nearest(part string, v []float32, threshold float64) (string, float64, bool) {
	u := unit(v)
	if u == nil {
		return "", 0, false
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	best, bestKey := -2.0, ""
	for _, e := range x.parts[part] {
		if len(e.v) != len(u) {
			continue
		}
		var dot float64
		for i := range u {
			dot += float64(u[i]) * float64(e.v[i])
		}
		if dot > best {
			best, bestKey = dot, e.key
		}
	}
	if bestKey == "" || best < threshold {
		return "", best, false
	}
	return bestKey, best, true
}

// Len is the number of vectors held.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.order)
}

func unit(v []float32) []float32 {
	var n float64
	for _, f := range v {
		n += float64(f) * float64(f)
	}
	if n == 0 || math.IsNaN(n) || math.IsInf(n, 0) {
		return nil
	}
	n = math.Sqrt(n)
	u := make([]float32, len(v))
	for i, f := range v {
		u[i] = float32(float64(f) / n)
	}
	return u
}

// Remove drops the vectors filed under keys, in every partition.
func (x *Index) Remove(keys ...string) {
	if len(keys) == 0 {
		return
	}
	drop := make(map[string]bool, len(keys))
	for _, k := range keys {
		drop[k] = true
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for part, vs := range x.parts {
		kept := vs[:0:0]
		for _, e := range vs {
			if !drop[e.key] {
				kept = append(kept, e)
			}
		}
		if len(kept) == 0 {
			delete(x.parts, part)
		} else {
			x.parts[part] = kept
		}
	}
	order := x.order[:0:0]
	for _, r := range x.order {
		if !drop[r.key] {
			order = append(order, r)
		}
	}
	x.order = order
}

// Clear drops every vector.
func (x *Index) Clear() {
	x.mu.Lock()
	defer x.mu.Unlock()
	clear(x.parts)
	x.order = nil
}

// indexed is a Backend whose Delete and Flush also drop the semantic
// index's vectors of the entries removed.
type indexed struct {
	Backend
	x *Index
}

// WithIndex is b, with Delete and Flush also dropping x's vectors.
func WithIndex(b Backend, x *Index) Backend { return indexed{Backend: b, x: x} }

func (b indexed) Delete(ctx context.Context, keys ...string) error {
	b.x.Remove(keys...)
	return b.Backend.Delete(ctx, keys...)
}

func (b indexed) Flush(ctx context.Context) error {
	b.x.Clear()
	return b.Backend.Flush(ctx)
}
