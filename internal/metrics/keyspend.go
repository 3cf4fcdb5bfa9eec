package metrics

import (
	"encoding/binary"
	"math"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// keySpend is key_spend_usd_total, a counter per virtual key. It is kept
// in one map and read at scrape time rather than as a CounterVec, whose
// series cost ≈ 550 B each (the counter, its label pairs as protobuf
// messages, the vector's index): with 100,000 keys in use that was
// ≈ 55 MB of live heap. Here a series is one string holding both labels
// (seriesKey), a map slot with its counter's index, and the counter, a word
// in a chunk (≈ 70 B in all; ≈ 102 B as a map of label pairs to a pointer
// each). Adding to an existing series takes the read lock, as
// CounterVec.WithLabelValues does.
type keySpend struct {
	desc *prometheus.Desc
	mu   sync.RWMutex
	m    map[string]uint32   // seriesKey(hash, alias) -> index in counters
	c    []*[keyChunk]uint64 // float64 bits; chunks never move once made
	n    uint32              // series made
}

// keyChunk is how many counters a chunk holds.
const keyChunk = 512

func newKeySpend(name, help string) *keySpend {
	return &keySpend{desc: prometheus.NewDesc(name, help, []string{"key_hash", "key_alias"}, nil), m: map[string]uint32{}}
}

// seriesKey appends the map key of (hash, alias) to b: hash's length as a
// uvarint, hash, then alias, so that no two label pairs share a key.
func seriesKey(b []byte, hash, alias string) []byte {
	b = binary.AppendUvarint(b, uint64(len(hash)))
	b = append(b, hash...)
	return append(b, alias...)
}

// seriesLabels is seriesKey's inverse.
func seriesLabels(k string) (hash, alias string) {
	n, w := uint64(0), 0
	for shift := 0; w < len(k); shift += 7 {
		c := k[w]
		w++
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			break
		}
	}
	return k[w : w+int(n)], k[w+int(n):]
}

// add counts v dollars against the series (hash, alias). A new series's
// key is a string of its own: the request's hash is formatted into its
// principal, which a series keeping a slice of it would keep alive.
func (s *keySpend) add(hash, alias string, v float64) {
	var buf [128]byte // the key of any label pair that fits, without allocating
	k := seriesKey(buf[:0], hash, alias)
	s.mu.RLock()
	i, ok := s.m[string(k)]
	var p *uint64
	if ok {
		p = &s.c[i/keyChunk][i%keyChunk]
	}
	s.mu.RUnlock()
	if !ok {
		s.mu.Lock()
		if i, ok = s.m[string(k)]; !ok {
			i = s.n
			s.n++
			if int(i/keyChunk) == len(s.c) {
				s.c = append(s.c, new([keyChunk]uint64))
			}
			s.m[string(k)] = i
		}
		p = &s.c[i/keyChunk][i%keyChunk]
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
	for k, i := range s.m {
		hash, alias := seriesLabels(k)
		v := math.Float64frombits(atomic.LoadUint64(&s.c[i/keyChunk][i%keyChunk]))
		ms = append(ms, prometheus.MustNewConstMetric(s.desc, prometheus.CounterValue, v, hash, alias))
	}
	s.mu.RUnlock()
	for _, m := range ms {
		ch <- m
	}
}
