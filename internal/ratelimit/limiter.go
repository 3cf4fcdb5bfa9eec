package ratelimit

import (
	"context"
	"time"

	"github.com/tollgate/tollgate/internal/rscript"
)

// Limiter admits requests on Redis when it has one and Redis answers, else
// in process. It never fails a request because Redis is down: it serves on
// local counters and returns to the shared counters when Redis answers
// again. Whether Redis answers is the rscript.Runner's to say (Degraded,
// Degrade, and its Watch that notices Redis coming back), shared with the
// budgets.
type Limiter struct {
	local *Local
	redis *Redis
	allot *Allotter // nil: every admission asks Redis
}

// New returns a limiter; rd may be nil (local only).
func New(rd *Redis) *Limiter {
	return &Limiter{local: NewLocal(), redis: rd}
}

// Allotter is the limiter's allotments (nil: off).
func (l *Limiter) Allotter() *Allotter { return l.allot }

// Shared reports whether the limiter counts on Redis (a round trip per
// admission).
func (l *Limiter) Shared() bool { return l.redis != nil }

// Degraded reports whether a limiter with Redis is on local counters now.
func (l *Limiter) Degraded() bool { return l.redis != nil && l.redis.r.Degraded() }

// Admit decides t. A nil result admits; the caller must call Done.
func (l *Limiter) Admit(ctx context.Context, t *Ticket) *Denied {
	if len(t.rules) == 0 {
		t.admitted = true
		return nil
	}
	if t.allotted || (l.allot != nil && l.allot.take(t)) {
		return nil // decided on this replica's allotments (maybe by Gate)
	}
	if l.redis != nil && !l.redis.r.Degraded() {
		d, err := l.redis.Admit(ctx, t)
		if err == nil && d != nil && l.allot != nil && l.allot.giveBack(ctx, &d.Rule) {
			// Refused on Redis while this replica's own allotment of the
			// rule held room unused (Redis counts it as used): that room is
			// returned, and the request decided once more, so that it is
			// refused only as it would be without allotments.
			if l.allot.take(t) {
				return nil
			}
			d, err = l.redis.Admit(ctx, t)
		}
		if err == nil {
			return d
		}
		// The script may have run and taken parallel slots before the
		// error (a read timeout, a cancelled client): give them back.
		go l.redis.releaseLease(t.lease, t.Rules())
		t.lease = ""
		if ctx.Err() != nil {
			// The client went away while we asked; that says nothing about Redis.
			return l.local.Admit(t)
		}
		l.redis.r.Degrade(err)
	}
	return l.local.Admit(t)
}

// Done settles an admitted ticket with the tokens the request really used.
// It is safe to call more than once; only the first call counts.
func (l *Limiter) Done(t *Ticket, tokens int64) {
	if !t.admitted || t.done {
		return
	}
	t.done = true
	if len(t.rules) == 0 {
		return
	}
	if t.allotted {
		l.allot.done(t, tokens)
		return
	}
	if t.shared {
		// Queued in the runner's ordered stream, not waited for: the
		// request does not pay a round trip for it, and every admission
		// this replica asks for later runs after it on Redis (its parallel
		// slot is free for them). Another replica may be answered in
		// between, for about one round trip.
		l.redis.untrack(t) // the settlement gives its slot back
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		wait := l.redis.send(ctx, t, tokens)
		go func() {
			defer cancel()
			if err := wait(); err != nil && !rscript.IsReply(err) {
				// The lease expires on its own; token corrections are lost.
				l.redis.r.Degrade(err)
			}
		}()
		return
	}
	l.local.Done(t, tokens)
}

// Gate is t's admission on Redis, for a script that also places a budget
// hold (ledger.Shared.ReserveGated), or nil when t is not decided on Redis
// now (no Redis, Redis known to be down, no rules, or t just admitted on
// this replica's allotments): the caller then calls Admit. When the
// script's answer never comes (Gate.Lost) the caller calls Admit too.
func (l *Limiter) Gate(t *Ticket) *Gate {
	if len(t.rules) == 0 || l.redis == nil || t.allotted || (l.allot != nil && l.allot.take(t)) || l.redis.r.Degraded() {
		return nil
	}
	return &Gate{l: l, t: t}
}

// Closing is the settlement of an admitted ticket that was decided on
// Redis, for a script that also settles a budget hold
// (ledger.SettleGated), or nil: the caller then calls Done. The ticket is
// done once the script has run (Gate.Settled).
func (l *Limiter) Closing(t *Ticket, tokens int64) *Gate {
	if !t.admitted || t.done || !t.shared || len(t.rules) == 0 {
		return nil
	}
	return &Gate{l: l, t: t, tokens: tokens}
}

// Renew keeps the parallel slots on Redis of this replica's requests alive
// while they run, until ctx ends (nothing without Redis; renew.go).
func (l *Limiter) Renew(ctx context.Context) {
	if l.redis == nil {
		<-ctx.Done()
		return
	}
	l.redis.Renew(ctx)
}

// AdmitLocal decides t on this replica's own counters: after a fused
// script's answer never came (Gate.WasLost), so that a request does not
// wait for a slow Redis twice. The caller must call Done.
func (l *Limiter) AdmitLocal(t *Ticket) *Denied {
	if len(t.rules) == 0 {
		t.admitted = true
		return nil
	}
	return l.local.Admit(t)
}
