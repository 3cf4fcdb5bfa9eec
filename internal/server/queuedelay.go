package server

import (
	"context"
	"net/http"
	"time"
)

// Shedding on queueing delay (docs/performance.md, "Issue 31, item 4:
// shedding on queueing delay"). The in-flight bound does not see requests
// that wait before the gateway reads them: in the kernel's accept queue,
// or unread on a kept connection while the process is throttled or short
// of CPU. The kernel knows how long they waited: TCP_INFO's
// tcpi_last_data_recv is the time since the connection's last data
// segment arrived, so read when the shedder decides on a request it is how
// long that request's bytes have waited in the gateway. As CoDel does, a
// delay past the target is tolerated for an interval (a burst, a throttle
// period that the gateway catches up on); once every measured delay has
// stayed past the target for queueInterval, requests whose delay is past
// it are answered 503 overloaded_error at once, their connection kept,
// until one is measured under it. The target is
// general_settings.max_queue_delay (default 10 ms; -1 turns it off).
const (
	// queueInterval is CoDel's interval: how long the delay must stay
	// above the target before requests are shed on it.
	queueInterval = 100 * time.Millisecond
	// queueSampleEvery: while no delay above the target has been seen,
	// one request in queueSampleEvery is measured (a getsockopt); from
	// the first delay above it until one under it, every request is.
	queueSampleEvery = 16
)

// queueDelayKey is the context key under which a lean connection puts
// itself (a queueDelayer) in its requests' contexts.
type queueDelayKey struct{}

// queueDelayer reports how long the bytes of the request being decided
// have waited in the gateway (ok false when it cannot tell).
type queueDelayer interface {
	queueDelay() (d time.Duration, ok bool)
}

// queued reports whether r is to be shed on its queueing delay.
func (s *shedder) queued(r *http.Request) bool {
	above := s.qAbove.Load()
	if above == 0 && s.qCount.Add(1)%s.qEvery != 0 {
		return false
	}
	q, ok := r.Context().Value(queueDelayKey{}).(queueDelayer)
	if !ok {
		return false
	}
	d, ok := q.queueDelay()
	if !ok {
		return false
	}
	return s.judgeDelay(d, time.Now().UnixNano())
}

// judgeDelay is CoDel's rule on one measured delay d at now (unix ns).
func (s *shedder) judgeDelay(d time.Duration, now int64) bool {
	if d <= s.qTarget {
		if s.qAbove.Load() != 0 {
			s.qAbove.Store(0)
		}
		return false
	}
	above := s.qAbove.Load()
	if above == 0 {
		s.qAbove.CompareAndSwap(0, now)
		return false
	}
	return now-above >= int64(s.qInterval)
}

// withQueueDelay puts c in ctx for the shedder (queued).
func withQueueDelay(ctx context.Context, c *leanConn) context.Context {
	if !queueDelayMeasured {
		return ctx
	}
	return context.WithValue(ctx, queueDelayKey{}, c)
}
