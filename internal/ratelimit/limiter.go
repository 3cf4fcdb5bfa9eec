package ratelimit

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Limiter admits requests on Redis when it has one and Redis answers, else
// in process. It never fails a request because Redis is down: it logs the
// switch, serves on local counters, probes Redis every ProbeEvery and
// returns to the shared counters when Redis answers again.
type Limiter struct {
	local *Local
	redis *Redis
	log   *slog.Logger
	// ProbeEvery is how often a degraded limiter asks Redis whether it is back.
	ProbeEvery time.Duration
	// OnDegraded is told when the limiter leaves (true) or regains (false)
	// the shared counters, for metrics.
	OnDegraded func(bool)

	degraded atomic.Bool
	stop     chan struct{}
	stopOnce sync.Once
}

// New returns a limiter; rd may be nil (local only).
func New(rd *Redis, log *slog.Logger) *Limiter {
	if log == nil {
		log = slog.Default()
	}
	return &Limiter{local: NewLocal(), redis: rd, log: log, ProbeEvery: time.Second, stop: make(chan struct{})}
}

// Degraded reports whether a limiter with Redis is on local counters now.
func (l *Limiter) Degraded() bool { return l.degraded.Load() }

// Admit decides t. A nil result admits; the caller must call Done.
func (l *Limiter) Admit(ctx context.Context, t *Ticket) *Denied {
	if t.n == 0 {
		t.admitted = true
		return nil
	}
	if l.redis != nil && !l.degraded.Load() {
		d, err := l.redis.Admit(ctx, t)
		if err == nil {
			return d
		}
		// The script may have run and taken parallel slots before the
		// error (a read timeout, a cancelled client): give them back.
		lease := *t
		go l.redis.releaseLease(&lease)
		t.lease = ""
		if ctx.Err() != nil {
			// The client went away while we asked; that says nothing about Redis.
			return l.local.Admit(t)
		}
		l.degrade(err)
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
	if t.n == 0 {
		return
	}
	if t.shared {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := l.redis.Done(ctx, t, tokens); err != nil {
			// The lease expires on its own; token corrections are lost.
			l.degrade(err)
		}
		return
	}
	l.local.Done(t, tokens)
}

// Degrade switches to local counters until Redis answers a probe; the
// server calls it when Redis does not answer at startup.
func (l *Limiter) Degrade(err error) { l.degrade(err) }

func (l *Limiter) degrade(err error) {
	if !l.degraded.CompareAndSwap(false, true) {
		return
	}
	l.log.Warn("redis unreachable: rate limits fall back to this replica's own counters", "err", err)
	if l.OnDegraded != nil {
		l.OnDegraded(true)
	}
	go l.probe()
}

func (l *Limiter) probe() {
	t := time.NewTicker(l.ProbeEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := l.redis.Ping(ctx)
		cancel()
		if err == nil {
			l.degraded.Store(false)
			l.log.Info("redis is back: rate limits are shared across replicas again")
			if l.OnDegraded != nil {
				l.OnDegraded(false)
			}
			return
		}
	}
}

// Close stops the Redis probe.
func (l *Limiter) Close() { l.stopOnce.Do(func() { close(l.stop) }) }
