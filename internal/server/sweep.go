package server

import (
	"context"
	"time"

	"github.com/tollgate/tollgate/internal/lifecycle"
	"github.com/tollgate/tollgate/internal/store"
)

// sweepBudgets moves budget periods without traffic: every
// BudgetSweepInterval it rolls over each key, user, team and end user whose
// budget_reset_at has passed (spend to zero in memory, in the store and on
// Redis; next reset time), so /key/info and the others show the new period
// even for an idle entity. Replicas sweeping together reset once.
func (s *Server) sweepBudgets(ctx context.Context) {
	if s.book == nil || s.writer == nil {
		return
	}
	lifecycle.Every(ctx, s.opts.BudgetSweepInterval, func() { s.sweepOnce() })
}

// sweepOnce rolls over every period the snapshot says has ended, and
// returns how many resets it started.
func (s *Server) sweepOnce() int {
	n := 0
	s.snap.Periods(func(kind store.Kind, id, duration string, resetAt time.Time) {
		// A regenerated key's account is its first hash's (store.Key.Account):
		// roll that one, named by the current hash the store's record is
		// under. With no account here, Roll resets by id (budgetReset finds
		// the account's Redis hash).
		if kind == store.KindKey {
			if k, ok := s.snap.Key(id); ok && k.Account() != id {
				if a, ok := s.book.Lookup(kind, k.Account()); ok {
					a.SetName(id)
					id = k.Account()
				}
			}
		}
		if s.book.Roll(kind, id, duration, resetAt) {
			n++
		}
	})
	if n > 0 {
		s.log.Info("budget periods rolled over by the sweep", "entities", n)
	}
	return n
}
