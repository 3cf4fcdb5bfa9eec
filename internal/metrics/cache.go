package metrics

import "github.com/prometheus/client_golang/prometheus"

// cacheMetrics count what the response cache did (docs/caching.md).
type cacheMetrics struct {
	hits, misses, errors *prometheus.CounterVec
	servedBytes          prometheus.Counter
	storedBytes          prometheus.Counter
	stored               prometheus.Counter
	saved                *prometheus.CounterVec
}

func newCacheMetrics(reg *prometheus.Registry, name func(string) string) cacheMetrics {
	counter := func(n, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name(n), Help: help}, labels)
	}
	c := cacheMetrics{
		hits:        counter("cache_hits_total", "Requests answered from the response cache, by model group.", "model_group"),
		misses:      counter("cache_misses_total", "Cacheable requests the response cache did not answer, by model group.", "model_group"),
		errors:      counter("cache_errors_total", "Response-cache backend calls that failed (each a miss or an answer not stored), by backend and operation.", "backend", "op"),
		saved:       counter("cache_saved_usd_total", "What the answers served from the cache would have cost at their deployments' prices, in USD, by model group.", "model_group"),
		servedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: name("cache_served_bytes_total"), Help: "Bytes of answers served from the response cache."}),
		storedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: name("cache_stored_bytes_total"), Help: "Bytes of answers stored in the response cache."}),
		stored:      prometheus.NewCounter(prometheus.CounterOpts{Name: name("cache_stores_total"), Help: "Answers stored in the response cache."}),
	}
	reg.MustRegister(c.hits, c.misses, c.errors, c.saved, c.servedBytes, c.storedBytes, c.stored)
	return c
}

// CacheHit counts a request answered from the cache: its bytes and what
// it would have cost.
func (m *Metrics) CacheHit(group string, bytes int, saved float64) {
	m.cache.hits.WithLabelValues(group).Inc()
	m.cache.servedBytes.Add(float64(bytes))
	if saved > 0 {
		m.cache.saved.WithLabelValues(group).Add(saved)
	}
}

// CacheMiss counts a cacheable request the cache did not answer.
func (m *Metrics) CacheMiss(group string) { m.cache.misses.WithLabelValues(group).Inc() }

// CacheStored counts an answer stored, and its bytes.
func (m *Metrics) CacheStored(bytes int) {
	m.cache.stored.Inc()
	m.cache.storedBytes.Add(float64(bytes))
}

// CacheError counts a failed backend call (op: get, set, delete, flush).
func (m *Metrics) CacheError(backend, op string) { m.cache.errors.WithLabelValues(backend, op).Inc() }
