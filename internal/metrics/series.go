package metrics

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// seriesCache keeps the series a vector's WithLabelValues resolved, keyed
// by their label values, for the labels every request observes: a hit is
// one map lookup under a read lock, where WithLabelValues validates every
// value as UTF-8 and hashes it byte by byte before its own lookup (five
// to seven calls a request were ≈ 7.6 k instructions).
//
// A series enters the cache the first time it is resolved, so a series
// exists in the exposition exactly when it did without the cache. The
// vectors cached here never have series deleted (no Delete, DeletePartial
// or Reset is called on them); one that does must drop its cache with them.
// Keys are copied on entry: a request's label values may be slices of a
// larger buffer, which a cache entry must not keep alive. Past maxCached
// entries a series is resolved as before and not kept.
type seriesCache[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]V
}

// maxCached bounds a cache; the vector itself holds every series anyway.
const maxCached = 4096

// get returns k's series, resolving it the first time from a copy of k
// made by clone (so that neither the cache nor the vector keeps the
// caller's strings).
func (c *seriesCache[K, V]) get(k K, clone func(K) K, resolve func(K) V) V {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return v
	}
	k = clone(k)
	v = resolve(k)
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[K]V)
	}
	if len(c.m) < maxCached {
		c.m[k] = v
	}
	c.mu.Unlock()
	return v
}

// genAIKey is a request's GenAI labels (genAILabels).
type genAIKey struct{ op, provider, requestModel, responseModel string }

func cloneGenAI(k genAIKey) genAIKey {
	return genAIKey{strings.Clone(k.op), strings.Clone(k.provider), strings.Clone(k.requestModel), strings.Clone(k.responseModel)}
}

// groupStatus is requests_total's labels.
type groupStatus struct{ group, status string }

func cloneGroupStatus(k groupStatus) groupStatus {
	return groupStatus{strings.Clone(k.group), strings.Clone(k.status)}
}

// tokenSeries is a request's two token-usage series, input and output:
// observed together, always.
type tokenSeries struct{ input, output prometheus.Observer }

// callSeries are the caches of the series ObserveRequest touches on every
// served request.
type callSeries struct {
	requests seriesCache[groupStatus, prometheus.Counter]
	duration seriesCache[genAIKey, prometheus.Observer]
	ttft     seriesCache[genAIKey, prometheus.Observer]
	tokens   seriesCache[genAIKey, tokenSeries]
	spend    seriesCache[string, prometheus.Counter]
}
