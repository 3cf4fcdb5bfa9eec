package dynamostore

import "time"

// SetClock makes f the time s's ResetBudget stamps with.
func SetClock(s *DB, f func() time.Time) { s.clock.Store(&f) }
