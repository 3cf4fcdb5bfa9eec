package ledger

import (
	"time"
)

// Spend booked while Redis was away (an offline hold's settle, Spend on a
// charged cache hit or a batch, a call that never ran) reaches Redis with
// the account's next per-request hold, or with CarryUnheld. Neither may
// ever come: this replica's own view can refuse the account before any
// hold (the cache path's spentOut, a batch's MayAfford), and then Redis
// stays short of that spend, and other replicas keep serving past the
// budget, until this replica stops. So every account that comes to owe
// Redis spend on a path where nothing carries it at once is noted (owe),
// and once Redis answers again (a heartbeat answered, the runner not
// degraded) a sweep carries every noted account that still owes: in the
// background, one at a time, one carry per account at once (the unheld
// flag CarryUnheld takes), each bounded as CarryUnheld's, stopping when
// Redis goes away again (the accounts left stay noted) or the replica
// stops (CarryOffline carries them). A carry is CarryUnheld's: the amount
// claimed goes under a tag of its own, so Redis counts it once whatever
// else carries the account's other spend meanwhile (carry.go).

// owe notes that a (budgeted) may have spend for Redis that nothing is
// carrying: the next sweep looks at it.
func (s *Shared) owe(a *Account) {
	if a.Budget() == Unlimited || !a.remote().owed.CompareAndSwap(false, true) {
		return
	}
	s.owedMu.Lock()
	s.owedList = append(s.owedList, a)
	s.owedN.Store(int64(len(s.owedList)))
	s.owedMu.Unlock()
}

// oweAll notes every account of accounts.
func (s *Shared) oweAll(accounts []*Account) {
	for _, a := range accounts {
		s.owe(a)
	}
}

// Owed is how many accounts are noted as owing Redis spend that no carry
// has taken yet (tests; a sweep takes them once Redis answers).
func (s *Shared) Owed() int64 { return s.owedN.Load() }

// sweep starts the background carry of the noted accounts, unless one
// runs, Redis is known to be down, or the replica is stopping.
func (s *Shared) sweep() {
	if s.owedN.Load() == 0 || s.r.Degraded() || s.stopping.Load() || !s.sweeping.CompareAndSwap(false, true) {
		return
	}
	s.resolving.Add(1)
	s.unheld.Add(1) // CarryOffline waits for it (what it claimed is in carrying)
	go func() {
		defer s.resolving.Done()
		defer s.unheld.Add(-1)
		defer s.sweeping.Store(false)
		s.owedMu.Lock()
		list := s.owedList
		s.owedList = nil
		s.owedN.Store(0)
		s.owedMu.Unlock()
		for i, a := range list {
			if s.r.Degraded() || s.stopping.Load() {
				// Redis away again (the next answered heartbeat sweeps
				// again), or stopping (CarryOffline carries them).
				for _, b := range list[i:] {
					b.remote().owed.Store(false)
					if b.owesRedis() {
						s.owe(b)
					}
				}
				return
			}
			a.remote().owed.Store(false)
			// A CarryUnheld at work on a carries it (and notes it again if
			// its carry is not answered).
			if !a.owesRedis() || !a.remote().unheld.CompareAndSwap(false, true) {
				continue
			}
			for s.carryUnheld(a) {
			}
		}
	}()
}

// callWait bounds one background carry's call to Redis (CarryUnheld's,
// settleDoubt's, a settle's wait): at least 2 s, at least a hold's wait.
func (s *Shared) callWait() time.Duration { return max(2*time.Second, s.holdWait) }

// StopTimeout is how long a stop should give CarryOffline: the background
// carries in flight end within one call's bound (callWait), and its own
// carries need as long again.
func (s *Shared) StopTimeout() time.Duration { return 2*s.callWait() + time.Second }

// stop tells the background carries (CarryUnheld's, the sweep, settleDoubt)
// that the replica is stopping: none starts another call, and waits end.
func (s *Shared) stop() {
	if s.stopping.CompareAndSwap(false, true) {
		close(s.stopped)
	}
}

// pause waits d, or less when the replica stops.
func (s *Shared) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.stopped:
	}
}
