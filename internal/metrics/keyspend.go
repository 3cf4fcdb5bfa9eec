package metrics

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// keySpend is key_spend_usd_total, a counter per virtual key. It is kept
// in one map and read at scrape time rather than as a CounterVec, whose
// series cost ≈ 550 B each (the counter, its label pairs as protobuf
// messages, the vector's index): with 100,000 keys in use that was
// ≈ 55 MB of live heap. Here a series is its labels, a map slot and one
// word (≈ 80 B). Adding to an existing series takes the read lock, as
// CounterVec.WithLabelValues does.
type keySpend struct {
	desc *prometheus.Desc
	mu   sync.RWMutex
	m    map[keySeries]*uint64 // float64 bits
}

type keySeries struct{ hash, alias string }

func newKeySpend(name, help string) *keySpend {
	return &keySpend{desc: prometheus.NewDesc(name, help, []string{"key_hash", "key_alias"}, nil), m: map[keySeries]*uint64{}}
}

// add counts v dollars against the series (hash, alias). The labels are
// copied when the series is new: the request's hash is formatted into its
// principal, which a series keeping a slice of it would keep alive.
func (s *keySpend) add(hash, alias string, v float64) {
	k := keySeries{hash, alias}
	s.mu.RLock()
	p := s.m[k]
	s.mu.RUnlock()
	if p == nil {
		s.mu.Lock()
		if p = s.m[k]; p == nil {
			p = new(uint64)
			s.m[keySeries{strings.Clone(hash), strings.Clone(alias)}] = p
		}
		s.mu.Unlock()
	}
	for {
		old := atomic.LoadUint64(p)
		if atomic.CompareAndSwapUint64(p, old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

func (s *keySpend) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *keySpend) Collect(ch chan<- prometheus.Metric) {
	s.mu.RLock()
	ms := make([]prometheus.Metric, 0, len(s.m))
	for k, p := range s.m {
		ms = append(ms, prometheus.MustNewConstMetric(s.desc, prometheus.CounterValue, math.Float64frombits(atomic.LoadUint64(p)), k.hash, k.alias))
	}
	s.mu.RUnlock()
	for _, m := range ms {
		ch <- m
	}
}
