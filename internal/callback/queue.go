package callback

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Sink is one logging service: it turns a payload into the bytes of one
// item, and sends a batch of items. Send is called by one goroutine at a
// time, again with the same batch after a retryable failure.
type Sink interface {
	Encode(p *Payload) ([]byte, error)
	Send(ctx context.Context, b *Batch) error
}

// Batch is what one send delivers.
type Batch struct {
	Items [][]byte  // encoded payloads, oldest first
	First time.Time // when the oldest was queued
	// ID is random and the same on every attempt, so that a retried write
	// lands on the same object.
	ID string
	// Done is for sinks that send item by item: how many an earlier
	// attempt delivered.
	Done int
}

// StatusError is a sink's answer that was not a success. Retryable says
// whether sending the same batch again may work: 408, 429 and 5xx may,
// other 4xx will not.
type StatusError struct {
	Code int
	Body string // the start of the answer, for the log
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("status %d: %s", e.Code, e.Body)
}

// retryable reports whether a failed send may be tried again: any error
// but an answer 3xx (a redirect, not followed) or 4xx other than 408 and
// 429.
func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code == 408 || se.Code == 429 || se.Code >= 500 || se.Code < 300
	}
	return true
}

// QueueOptions bound a sink's queue and say how it batches and retries.
// Zero values take the defaults.
type QueueOptions struct {
	Size          int           // payloads held and not yet sent, at most (default 10,000)
	MaxBytes      int           // estimated bytes of the payloads held and not yet sent, at most (default 64 MiB)
	BatchCount    int           // payloads per batch, at most (default 100)
	BatchBytes    int           // a batch is sent once its items reach this size (default 1 MiB)
	FlushInterval time.Duration // a batch is sent once its oldest payload is this old (default 5 s)
	MaxAttempts   int           // sends of one batch, at most (default 5)
	BackoffBase   time.Duration // wait after the first failure, doubled after each (default 500 ms)
	BackoffMax    time.Duration // longest wait between attempts (default 30 s)
	SendTimeout   time.Duration // one attempt's deadline (default 30 s)
}

func (o QueueOptions) withDefaults() QueueOptions {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Size, 10000)
	def(&o.MaxBytes, DefaultMaxBytes)
	def(&o.BatchCount, 100)
	def(&o.BatchBytes, 1<<20)
	def(&o.MaxAttempts, 5)
	defd(&o.FlushInterval, 5*time.Second)
	defd(&o.BackoffBase, 500*time.Millisecond)
	defd(&o.BackoffMax, 30*time.Second)
	defd(&o.SendTimeout, 30*time.Second)
	return o
}

// DefaultMaxBytes is a queue's byte bound unless the config sets one.
const DefaultMaxBytes = 64 << 20

// Stats are a queue's counters, for the metrics.
type Stats struct {
	Sink    string
	Depth   int           // payloads queued or being sent
	Queued  uint64        // payloads taken
	Sent    uint64        // payloads the sink accepted
	Dropped uint64        // payloads refused because the queue was full (count or bytes) or closed
	Failed  uint64        // payloads given up on (attempts spent, refused, or not encodable)
	Lag     time.Duration // age of the oldest payload not yet sent
}

type entry struct {
	p    *Payload
	at   time.Time
	size int // p's estimated size, counted in Queue.held
}

// Queue holds one sink's payloads and sends them in batches from its own
// goroutine (Run). Publish never blocks: a full queue drops the payload
// and counts it.
type Queue struct {
	name string
	sink Sink
	o    QueueOptions
	log  *slog.Logger

	mu      sync.Mutex
	pending []entry // taken, not yet in a batch: pending[head:]
	head    int     // how many of pending the worker has taken (their slots are cleared)
	closed  bool
	wake    chan struct{} // something was queued (capacity 1)

	inBatch atomic.Int64 // payloads the worker has taken and not finished with
	held    atomic.Int64 // estimated bytes of the pending payloads and of those the worker holds
	oldest  atomic.Int64 // unix nanos of the batch's oldest payload; 0 when none

	queued, sent, dropped, failed atomic.Uint64

	stop    chan struct{} // Close was called: flush and return
	abandon chan struct{} // Close's deadline passed: give up what is left
	done    chan struct{} // Run returned
	once    sync.Once
}

// NewQueue makes sink's queue; nothing runs until Run.
func NewQueue(name string, sink Sink, o QueueOptions, log *slog.Logger) *Queue {
	if log == nil {
		log = slog.Default()
	}
	return &Queue{name: name, sink: sink, o: o.withDefaults(), log: log,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), abandon: make(chan struct{}), done: make(chan struct{})}
}

// Name is the sink's name.
func (q *Queue) Name() string { return q.name }

// Publish queues p, or drops it (counted) when the queue is full (by
// count or by estimated bytes) or closed. It holds a lock only for an
// append.
func (q *Queue) Publish(p *Payload) { q.publish(p, p.estimateSize()) }

// publish is Publish with p's estimated size.
func (q *Queue) publish(p *Payload, size int) {
	q.mu.Lock()
	if q.closed || len(q.pending)-q.head+int(q.inBatch.Load()) >= q.o.Size || q.held.Load()+int64(size) > int64(q.o.MaxBytes) {
		q.mu.Unlock()
		q.dropped.Add(1)
		return
	}
	q.pending = append(q.pending, entry{p: p, at: time.Now(), size: size})
	q.held.Add(int64(size))
	q.mu.Unlock()
	q.queued.Add(1)
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take removes the oldest pending payload; ok is false when none is.
// Taking moves an index: the slice is compacted only once most of it has
// been taken, so draining n payloads costs O(n).
func (q *Queue) take() (e entry, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head >= len(q.pending) {
		return entry{}, false
	}
	e = q.pending[q.head]
	q.pending[q.head] = entry{}
	q.head++
	switch {
	case q.head == len(q.pending):
		q.pending, q.head = q.pending[:0], 0
	case q.head >= 1024 && q.head*2 >= len(q.pending):
		n := copy(q.pending, q.pending[q.head:])
		clear(q.pending[n:])
		q.pending, q.head = q.pending[:n], 0
	}
	q.inBatch.Add(1)
	return e, true
}

// finish forgets n payloads of the worker's, of size bytes in all.
func (q *Queue) finish(n, size int) {
	q.inBatch.Add(-int64(n))
	q.held.Add(-int64(size))
}

// Stats reads the queue's counters.
func (q *Queue) Stats() Stats {
	s := Stats{Sink: q.name, Queued: q.queued.Load(), Sent: q.sent.Load(), Dropped: q.dropped.Load(), Failed: q.failed.Load()}
	q.mu.Lock()
	s.Depth = len(q.pending) - q.head + int(q.inBatch.Load())
	var head time.Time
	if q.head < len(q.pending) {
		head = q.pending[q.head].at
	}
	q.mu.Unlock()
	if o := q.oldest.Load(); o != 0 {
		head = time.Unix(0, o)
	}
	if !head.IsZero() {
		s.Lag = time.Since(head)
	}
	return s
}

// Run sends batches until Close, then sends what is left (until Close's
// deadline) and returns. A batch never passes BatchBytes by adding an
// item: an item that would take it past is kept for the next batch (an
// item larger than BatchBytes on its own is sent alone).
func (q *Queue) Run() {
	defer close(q.done)
	var batch [][]byte
	var size, held int // encoded bytes of the batch; estimated bytes it holds
	var first time.Time
	var abandoned bool
	var next []byte // encoded, for the next batch
	var nextEntry entry
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	stopping := false
	flush := func() {
		if len(batch) > 0 {
			select {
			case <-q.abandon:
				abandoned = true
			default:
			}
			if abandoned {
				q.failed.Add(uint64(len(batch)))
			} else {
				q.send(&Batch{Items: batch, First: first, ID: randomID()})
			}
			q.finish(len(batch), held)
		}
		batch, size, held, first = nil, 0, 0, time.Time{}
		q.oldest.Store(0)
	}
	for {
		for next == nil && len(batch) < q.o.BatchCount && size < q.o.BatchBytes {
			e, ok := q.take()
			if !ok {
				break
			}
			data, err := q.sink.Encode(e.p)
			if err != nil {
				q.failed.Add(1)
				q.finish(1, e.size)
				q.log.Warn("callback payload not encodable", "callback", q.name, "err", err)
				continue
			}
			if len(batch) > 0 && size+len(data) > q.o.BatchBytes {
				next, nextEntry = data, e
				break
			}
			if len(batch) == 0 {
				first = e.at
				q.oldest.Store(first.UnixNano())
			}
			batch = append(batch, data)
			size += len(data)
			held += e.size
		}
		full := next != nil || len(batch) >= q.o.BatchCount || size >= q.o.BatchBytes
		if len(batch) > 0 && (full || stopping || time.Since(first) >= q.o.FlushInterval) {
			flush()
			if next != nil {
				batch, size, held, first = append(batch, next), len(next), nextEntry.size, nextEntry.at
				q.oldest.Store(first.UnixNano())
				next, nextEntry = nil, entry{}
			}
			continue
		}
		if stopping {
			return // nothing in the batch and nothing pending
		}
		wait := time.Hour
		if len(batch) > 0 {
			wait = q.o.FlushInterval - time.Since(first)
		}
		timer.Reset(wait)
		select {
		case <-q.wake:
		case <-timer.C:
		case <-q.stop:
			stopping = true
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// send sends one batch, retrying with exponential backoff and jitter.
func (q *Queue) send(b *Batch) {
	n := uint64(len(b.Items))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // Close's deadline ends the attempt in flight
		select {
		case <-q.abandon:
			cancel()
		case <-ctx.Done():
		}
	}()
	for attempt := 1; ; attempt++ {
		actx, acancel := context.WithTimeout(ctx, q.o.SendTimeout)
		err := q.sink.Send(actx, b)
		acancel()
		if err == nil {
			q.sent.Add(n)
			return
		}
		if !retryable(err) || attempt >= q.o.MaxAttempts || ctx.Err() != nil {
			// A sink that sends item by item has delivered the first Done.
			done := uint64(min(max(b.Done, 0), len(b.Items)))
			q.sent.Add(done)
			q.failed.Add(n - done)
			q.log.Warn("callback batch not delivered", "callback", q.name, "payloads", n-done, "delivered", done, "attempts", attempt, "err", err)
			return
		}
		d := q.o.BackoffBase << (attempt - 1)
		if d > q.o.BackoffMax || d <= 0 {
			d = q.o.BackoffMax
		}
		d = d/2 + mrand.N(d/2+1) // jitter: between half and the whole
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// Close stops taking payloads and waits for Run to send what is queued,
// until ctx ends; then the send in flight is cancelled and what is left is
// counted as failed. It returns how many payloads failed while closing.
// Close with running false (Run never started) sends nothing and counts
// them all.
func (q *Queue) Close(ctx context.Context, running bool) int {
	before := q.failed.Load()
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.once.Do(func() { close(q.stop) })
	if running {
		select {
		case <-q.done:
		case <-ctx.Done():
			close(q.abandon)
			<-q.done
		}
	}
	q.mu.Lock()
	left := len(q.pending) - q.head
	for _, e := range q.pending[q.head:] {
		q.held.Add(-int64(e.size))
	}
	q.pending, q.head = nil, 0
	q.mu.Unlock()
	if left > 0 {
		q.failed.Add(uint64(left))
	}
	return int(q.failed.Load() - before)
}

// randomID is 8 random bytes in hex.
func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
