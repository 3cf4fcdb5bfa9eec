package ledger

import (
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// Roll starts a new budget period for an entity whose stored period
// (duration, ending at stored) is over, whether or not a request has come
// since: the periodic sweep calls it for every entity the store says is due.
// An account this replica holds rolls over as a request would roll it
// (spend to zero, next reset, onReset told once); an entity with no account
// here is reset through onReset alone (the store and Redis; both are
// conditional on the period that ended, so replicas sweeping at once reset
// once). It reports whether a reset was started here.
func (b *Book) Roll(kind store.Kind, id, duration string, stored time.Time) bool {
	now := b.now()
	if stored.IsZero() || stored.After(now) {
		return false
	}
	per, err := ParsePeriod(duration)
	if err != nil {
		return false
	}
	a, ok := b.Lookup(kind, id)
	if !ok {
		if b.onReset != nil {
			b.onReset(kind, id, per.NextReset(now))
		}
		return true
	}
	at := a.resetAt.Load()
	if at < stored.UnixNano() && !a.resetAt.CompareAndSwap(at, stored.UnixNano()) {
		return false // a request is changing it now
	}
	before := a.resetAt.Load()
	b.maybeReset(a, duration)
	return a.resetAt.Load() != before
}
