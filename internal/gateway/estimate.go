package gateway

import (
	"sync"
	"sync/atomic"

	"github.com/tollgate/tollgate/internal/pricing"
)

// outputs learns how long each deployment's answers are, so that a request
// without max_tokens holds a realistic amount in default budget mode rather
// than the model's whole output ceiling.
type outputs struct {
	m sync.Map     // outputKey -> *recent
	n atomic.Int64 // entries, bounded: wildcard routes see client-chosen names
}

// maxLearned bounds how many (deployment, model) pairs are learned; past
// it, new pairs keep the cold estimate (the output ceiling).
const maxLearned = 4096

// recent keeps the completion lengths of the last answers of one
// (deployment, model), lock-free: a write is one atomic store.
type recent struct {
	next atomic.Uint64
	seen [32]atomic.Int64 // completion tokens per output; 0: empty
}

// outputKey is a (deployment id, upstream model) pair: a struct, not the
// two joined, so that a lookup allocates nothing.
type outputKey struct{ deployment, model string }

func (o *outputs) stats(deployment, model string, create bool) *recent {
	k := outputKey{deployment, model}
	if v, ok := o.m.Load(k); ok {
		return v.(*recent)
	}
	if !create || o.n.Load() >= maxLearned {
		return nil
	}
	v, loaded := o.m.LoadOrStore(k, &recent{})
	if !loaded {
		o.n.Add(1)
	}
	return v.(*recent)
}

// observe records one answer's completion tokens per output.
func (o *outputs) observe(deployment, model string, perOutput int64) {
	if r := o.stats(deployment, model, true); r != nil {
		r.seen[r.next.Add(1)%uint64(len(r.seen))].Store(max(perOutput, 1))
	}
}

// estimate is the longest of the recent answers (a high percentile of what
// the model has produced lately, not its mean: holds cut short are what
// can overspend), or false before any answer was seen.
func (o *outputs) estimate(deployment, model string) (int64, bool) {
	r := o.stats(deployment, model, false)
	if r == nil {
		return 0, false
	}
	var most int64
	for i := range r.seen {
		most = max(most, r.seen[i].Load())
	}
	return most, most > 0
}

// servedPrices remembers, for deployments priced only by the model their
// answers name, the price of the last answer, so that the next request can
// hold at it. Bounded like outputs.
type servedPrices struct {
	m sync.Map // deployment id + "\x00" + upstream model -> pricing.Price
	n atomic.Int64
}

func (s *servedPrices) learn(deployment, model string, p pricing.Price) {
	k := deployment + "\x00" + model
	if _, ok := s.m.Load(k); !ok && s.n.Load() >= maxLearned {
		return
	}
	if _, loaded := s.m.Swap(k, p); !loaded {
		s.n.Add(1)
	}
}

func (s *servedPrices) price(deployment, model string) (pricing.Price, bool) {
	v, ok := s.m.Load(deployment + "\x00" + model)
	if !ok {
		return pricing.Price{}, false
	}
	return v.(pricing.Price), true
}
