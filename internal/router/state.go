package router

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/provider"
)

// Health is what the router knows of each deployment at run time: requests
// in flight, latency, recent failures, cooldown, the current minute's usage
// and the background health check's verdict. It outlives router rebuilds
// (config reloads, /model/new), keyed by deployment id.
type Health struct {
	m          sync.Map // id -> *DeploymentState
	now        func() time.Time
	onCooldown func(group, id string)
}

// NewHealth returns an empty health registry. onCooldown, when not nil, is
// told when a deployment starts a cooldown.
func NewHealth(onCooldown func(group, id string)) *Health {
	return &Health{now: time.Now, onCooldown: onCooldown}
}

// DeploymentState is one deployment's run-time state.
type DeploymentState struct {
	inflight  atomic.Int64
	latency   atomic.Int64 // EWMA of seconds-to-answer in nanoseconds; 0 until measured
	coolUntil atomic.Int64 // unix nanoseconds; 0 when not cooling down
	unhealthy atomic.Bool  // the last background health check failed

	mu     sync.Mutex
	fails  []int64 // unix nanoseconds of failures in the last minute
	minute int64   // the minute rpm, tpm, ok and failed count
	rpm    int64
	tpm    int64
	ok     int64 // attempts that succeeded this minute
	failed int64 // attempts that failed this minute
}

// State returns id's state, creating it.
func (h *Health) State(id string) *DeploymentState {
	if v, ok := h.m.Load(id); ok {
		return v.(*DeploymentState)
	}
	v, _ := h.m.LoadOrStore(id, &DeploymentState{})
	return v.(*DeploymentState)
}

// CoolingDown reports whether id takes no traffic now, and until when.
func (h *Health) CoolingDown(id string) (bool, time.Time) {
	s := h.State(id)
	until := s.coolUntil.Load()
	if until == 0 || h.now().UnixNano() >= until {
		return false, time.Time{}
	}
	return true, time.Unix(0, until)
}

// SetHealthy records a background health check's verdict.
func (h *Health) SetHealthy(id string, ok bool) { h.State(id).unhealthy.Store(!ok) }

// Healthy reports the last background health check's verdict (true when never checked).
func (h *Health) Healthy(id string) bool { return !h.State(id).unhealthy.Load() }

// Outcome is how an attempt ended, for the deployment's record.
type Outcome uint8

// The outcomes.
const (
	Succeeded Outcome = iota // answered: latency and tokens are recorded
	Failed                   // 429, 5xx, timeout, connection error: counts towards a cooldown
	Abandoned                // the client left: says nothing about the deployment
)

// Start counts a request sent to t and returns the function that records
// its outcome.
func (h *Health) Start(g *Group, t *provider.Target) func(o Outcome, tokens int64) {
	s := h.State(t.D.ID)
	s.inflight.Add(1)
	start := h.now()
	s.countRPM(start)
	return func(o Outcome, tokens int64) {
		s.inflight.Add(-1)
		now := h.now()
		if o == Abandoned {
			return
		}
		if o == Succeeded {
			d := now.Sub(start).Nanoseconds()
			for {
				old := s.latency.Load()
				next := d
				if old != 0 {
					next = old + (d-old)/5 // EWMA, alpha 0.2
				}
				if s.latency.CompareAndSwap(old, next) {
					break
				}
			}
			s.succeed(now, tokens)
			return
		}
		if s.fail(now, g.allowedFails, g.singleThreshold) {
			s.coolUntil.Store(now.Add(g.cooldown).UnixNano())
			if h.onCooldown != nil {
				h.onCooldown(g.Name, t.D.ID)
			}
		}
	}
}

// fail records a failure and reports whether the deployment should cool
// down. With threshold 0: more than allowed failures within a minute. With
// a threshold (a group's only deployment, see Settings.SingleDeploymentThreshold):
// every attempt it finished this minute failed, and they are at least
// threshold; allowed does not apply.
func (s *DeploymentState) fail(now time.Time, allowed, threshold int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roll(now)
	s.failed++
	if threshold > 0 {
		// s.fails is not kept: at thousands of failures a minute the
		// slice would be scanned on each one.
		return s.ok == 0 && s.failed >= int64(threshold)
	}
	cut := now.Add(-time.Minute).UnixNano()
	kept := s.fails[:0]
	for _, f := range s.fails {
		if f > cut {
			kept = append(kept, f)
		}
	}
	s.fails = append(kept, now.UnixNano())
	if len(s.fails) > allowed {
		s.fails = s.fails[:0]
		return true
	}
	return false
}

func (s *DeploymentState) countRPM(now time.Time) {
	s.mu.Lock()
	s.roll(now)
	s.rpm++
	s.mu.Unlock()
}

// succeed counts an attempt that succeeded, and its tokens.
func (s *DeploymentState) succeed(now time.Time, tokens int64) {
	s.mu.Lock()
	s.roll(now)
	s.tpm += tokens
	s.ok++
	s.mu.Unlock()
}

// roll starts a new minute's counts. Like LiteLLM's per-minute success and
// failure counts (and rpm/tpm), they are for the calendar minute, not a
// sliding window.
func (s *DeploymentState) roll(now time.Time) {
	if m := now.Unix() / 60; m != s.minute {
		s.minute, s.rpm, s.tpm, s.ok, s.failed = m, 0, 0, 0, 0
	}
}

// usage is the share of the deployment's rpm/tpm used this minute (0 when
// it sets neither), and whether it is full.
func (s *DeploymentState) usage(t *provider.Target, now time.Time) (share float64, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roll(now)
	if r := t.D.RPM; r > 0 {
		share = max(share, float64(s.rpm)/float64(r))
		full = full || s.rpm >= r
	}
	if tp := t.D.TPM; tp > 0 {
		share = max(share, float64(s.tpm)/float64(tp))
		full = full || s.tpm >= tp
	}
	return share, full
}

// Strategies (router_settings.routing_strategy).
const (
	SimpleShuffle = "simple-shuffle"
	LeastBusy     = "least-busy"
	LatencyBased  = "latency-based-routing"
	UsageBased    = "usage-based-routing"
	CostBased     = "cost-based-routing"
)

// Pick chooses a deployment for the next attempt, skipping those in tried
// (already failed for this request), cooling down or failing health checks,
// and among the rest those of the lowest `order`; then by the strategy.
// When none is available it returns nil and how long until the first
// cooldown ends.
func (g *Group) Pick(tried []*provider.Target) (*provider.Target, time.Duration) {
	h := g.health
	if h == nil {
		return g.shuffle(g.Targets), 0
	}
	now := h.now()
	var buf [16]*provider.Target
	avail := buf[:0]
	best := 0
	var soonest time.Time
	for _, t := range g.Targets {
		if containsTarget(tried, t) {
			continue
		}
		if cool, until := h.CoolingDown(t.D.ID); cool {
			if soonest.IsZero() || until.Before(soonest) {
				soonest = until
			}
			continue
		}
		if !h.Healthy(t.D.ID) {
			continue
		}
		o := t.D.Order
		switch {
		case len(avail) == 0 || o < best:
			avail, best = append(avail[:0], t), o
		case o == best:
			avail = append(avail, t)
		}
	}
	if len(avail) == 0 {
		if soonest.IsZero() {
			return nil, 0
		}
		return nil, soonest.Sub(now)
	}
	if len(avail) == 1 {
		return avail[0], 0
	}
	switch g.strategy {
	case LeastBusy:
		return g.minBy(avail, func(t *provider.Target) float64 { return float64(h.State(t.D.ID).inflight.Load()) }), 0
	case LatencyBased:
		return g.minBy(avail, func(t *provider.Target) float64 { return float64(h.State(t.D.ID).latency.Load()) }), 0
	case CostBased:
		return g.minBy(avail, func(t *provider.Target) float64 { return t.Price.InputPerToken + t.Price.OutputPerToken }), 0
	case UsageBased:
		var open []*provider.Target
		for _, t := range avail {
			if _, full := h.State(t.D.ID).usage(t, now); !full {
				open = append(open, t)
			}
		}
		if len(open) == 0 {
			return nil, time.Duration(60-now.Unix()%60) * time.Second
		}
		return g.minBy(open, func(t *provider.Target) float64 { s, _ := h.State(t.D.ID).usage(t, now); return s }), 0
	}
	return g.shuffle(avail), 0
}

// minBy returns the target with the least f, ties broken at random.
func (g *Group) minBy(ts []*provider.Target, f func(*provider.Target) float64) *provider.Target {
	var pick *provider.Target
	least, ties := 0.0, 0
	for _, t := range ts {
		v := f(t)
		switch {
		case pick == nil || v < least:
			pick, least, ties = t, v, 1
		case v == least:
			ties++
			if rand.IntN(ties) == 0 {
				pick = t
			}
		}
	}
	return pick
}

// shuffle is simple-shuffle over ts: weighted by weight, else rpm, else
// tpm, else even.
func (g *Group) shuffle(ts []*provider.Target) *provider.Target {
	if len(ts) == 1 {
		return ts[0]
	}
	sum := 0.0
	for _, t := range ts {
		sum += weight(t.D, ts)
	}
	x := rand.Float64() * sum
	for _, t := range ts {
		x -= weight(t.D, ts)
		if x < 0 {
			return t
		}
	}
	return ts[len(ts)-1]
}

func containsTarget(ts []*provider.Target, t *provider.Target) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}
