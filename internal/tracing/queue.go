package tracing

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// queue is a span processor with a bounded queue in front of one
// exporter. OnEnd never blocks: a span that finds the queue full is
// dropped and counted. One goroutine (run) takes spans off the queue in
// batches and exports them with a deadline, so an exporter that is slow
// or down costs requests nothing but the spans dropped.
type queue struct {
	name     string
	newExp   func(ctx context.Context) (sdktrace.SpanExporter, error)
	exp      sdktrace.SpanExporter
	ch       chan sdktrace.ReadOnlySpan
	batch    int
	interval time.Duration
	timeout  time.Duration

	content                   bool // the exporter takes ContentAttrs
	strip                     bool // spans may hold ContentAttrs this exporter does not take
	log                       *slog.Logger
	lastErr                   time.Time // when a failed export was last logged
	exported, dropped, failed atomic.Uint64
	flush                     chan chan struct{}
	stopOnce                  sync.Once
	stop                      chan struct{}
	done                      chan struct{}
	running                   atomic.Bool
	// abort cancels the export in flight and every later one: Shutdown
	// calls it when its deadline passes, so that run returns at once.
	ctx   context.Context
	abort context.CancelFunc
}

var _ sdktrace.SpanProcessor = (*queue)(nil)

func newQueue(name string, size, batch int, interval, timeout time.Duration, newExp func(context.Context) (sdktrace.SpanExporter, error)) *queue {
	ctx, abort := context.WithCancel(context.Background())
	return &queue{name: name, newExp: newExp, ch: make(chan sdktrace.ReadOnlySpan, size), batch: batch,
		interval: interval, timeout: timeout, flush: make(chan chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
		ctx: ctx, abort: abort}
}

// OnStart does nothing: spans are queued when they end.
func (q *queue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues s, or drops it when the queue is full.
func (q *queue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	select {
	case q.ch <- s:
	default:
		q.dropped.Add(1)
	}
}

// start makes the exporter (nothing is dialled before the server runs).
func (q *queue) start(ctx context.Context) error {
	exp, err := q.newExp(ctx)
	if err != nil {
		return err
	}
	q.exp = exp
	return nil
}

// run exports batches until stopped, then exports what is queued (within
// ctx's deadline, given by Shutdown) and shuts the exporter down.
func (q *queue) run() {
	defer close(q.done)
	buf := make([]sdktrace.ReadOnlySpan, 0, q.batch)
	tick := time.NewTicker(q.interval)
	defer tick.Stop()
	send := func() {
		if len(buf) == 0 {
			return
		}
		buf = q.withoutSkipped(buf)
		if len(buf) == 0 {
			return
		}
		if q.strip {
			withoutContent(buf)
		}
		ctx, cancel := context.WithTimeout(q.ctx, q.timeout)
		err := q.exp.ExportSpans(ctx, buf)
		cancel()
		if err != nil {
			q.failed.Add(uint64(len(buf)))
			if q.log != nil && time.Since(q.lastErr) > time.Minute {
				// At most once a minute: the metrics count every batch.
				q.lastErr = time.Now()
				q.log.Warn("tracing: spans not exported", "exporter", q.name, "spans", len(buf), "err", err)
			}
		} else {
			q.exported.Add(uint64(len(buf)))
		}
		clear(buf)
		buf = buf[:0]
	}
	for {
		select {
		case s := <-q.ch:
			buf = append(buf, s)
			if len(buf) >= q.batch {
				send()
			}
		case <-tick.C:
			send()
		case ack := <-q.flush:
			q.drain(&buf, send)
			close(ack)
		case <-q.stop:
			q.drain(&buf, send)
			return
		}
	}
}

// withoutContent replaces each span of buf that holds content attributes
// by a view of it without them (on the queue's goroutine: the request
// path never pays for it).
func withoutContent(buf []sdktrace.ReadOnlySpan) {
	for i, s := range buf {
		attrs := s.Attributes()
		if !slices.ContainsFunc(attrs, isContent) {
			continue
		}
		kept := make([]attribute.KeyValue, 0, len(attrs))
		for _, a := range attrs {
			if !isContent(a) {
				kept = append(kept, a)
			}
		}
		buf[i] = strippedSpan{ReadOnlySpan: s, attrs: kept}
	}
}

// SkipAttr marks a span that named exporters must not get (a request's
// x-litellm-disable-callbacks): its value lists exporter names.
const SkipAttr attribute.Key = "tollgate.disabled_callbacks"

// withoutSkipped removes from buf the spans that name this exporter under
// SkipAttr (on the queue's goroutine: the request path never pays for it).
func (q *queue) withoutSkipped(buf []sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	return slices.DeleteFunc(buf, func(s sdktrace.ReadOnlySpan) bool {
		for _, a := range s.Attributes() {
			if a.Key == SkipAttr {
				return slices.Contains(a.Value.AsStringSlice(), q.name)
			}
		}
		return false
	})
}

func isContent(a attribute.KeyValue) bool { return slices.Contains(ContentAttrs, a.Key) }

// strippedSpan is a span with other attributes.
type strippedSpan struct {
	sdktrace.ReadOnlySpan
	attrs []attribute.KeyValue
}

func (s strippedSpan) Attributes() []attribute.KeyValue { return s.attrs }

// drain exports everything queued now.
func (q *queue) drain(buf *[]sdktrace.ReadOnlySpan, send func()) {
	for {
		select {
		case s := <-q.ch:
			*buf = append(*buf, s)
			if len(*buf) >= q.batch {
				send()
			}
		default:
			send()
			return
		}
	}
}

// ForceFlush exports what is queued, waiting at most until ctx ends.
func (q *queue) ForceFlush(ctx context.Context) error {
	if !q.running.Load() {
		return nil
	}
	ack := make(chan struct{})
	select {
	case q.flush <- ack:
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is queued and stops, waiting at most until ctx
// ends; the exporter is shut down after.
func (q *queue) Shutdown(ctx context.Context) error {
	var err error
	q.stopOnce.Do(func() {
		if q.running.Load() {
			close(q.stop)
			select {
			case <-q.done:
			case <-ctx.Done():
				// Past the deadline: what is still queued is counted as
				// failed, and run returns without waiting on the exporter.
				q.abort()
				<-q.done
				err = errors.Join(ctx.Err(), errors.New("tracing: spans still queued for "+q.name+" at the shutdown deadline"))
			}
		}
		q.abort()
		if q.exp != nil {
			err = errors.Join(err, q.exp.Shutdown(ctx))
		}
	})
	return err
}

// Stats is one exporter's queue, for the metrics.
type Stats struct {
	Exporter                  string
	Queued, Capacity          int
	Exported, Dropped, Failed uint64
}

func (q *queue) stats() Stats {
	return Stats{Exporter: q.name, Queued: len(q.ch), Capacity: cap(q.ch),
		Exported: q.exported.Load(), Dropped: q.dropped.Load(), Failed: q.failed.Load()}
}
