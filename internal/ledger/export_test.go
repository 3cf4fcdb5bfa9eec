package ledger

import (
	"context"
	"time"
)

// WaitOutcomes waits until every lost call's outcome known so far is booked.
func (s *Shared) WaitOutcomes() { s.outcomes.Wait() }

// WaitResolved waits until the background carries of items in doubt stop.
func (s *Shared) WaitResolved() { s.resolving.Wait() }

// seed is seedAt's spend.
func (a *Account) seed() int64 { s, _ := a.seedAt(); return s }

// Unsynced is a's spend Redis does not have that no carry has claimed.
func (a *Account) Unsynced() int64 { return a.remote().unsynced.Load() }

// Doubt is how many items a has in doubt.
func (a *Account) Doubt() int { return int(a.remote().doubt.n.Load()) }

// SetFusedReply makes s's fused holds' replies go through f (tests only).
func (s *Shared) SetFusedReply(f func(any, error) (any, error)) { s.fusedReply = f }

// Offline counts holds s decided against its share, without Redis.
func (s *Shared) Offline() int64 { return s.offlineN.Load() }

// RollTo starts a's next budget period, as Book.Account does past the
// reset time (rollTo): reset time next, spend s.
func (a *Account) RollTo(next time.Time, s Amount) bool {
	return a.rollTo(a.resetAt.Load(), next.UnixNano(), s)
}

// ReseedPending runs one round of the heartbeat's reseed (reseedMarked).
func (s *Shared) ReseedPending(ctx context.Context) error { return s.reseedPending(ctx) }
