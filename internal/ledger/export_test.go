package ledger

// WaitOutcomes waits until every lost call's outcome known so far is booked.
func (s *Shared) WaitOutcomes() { s.outcomes.Wait() }
