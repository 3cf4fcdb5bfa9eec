package ledger

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/store"
)

// Writer moves spend-log rows to the store in batches: one goroutine, one
// transaction per batch of at most MaxBatch rows or FlushEvery of waiting,
// whichever comes first (group commit). Enqueue never blocks on the store.
// A failed batch is retried until it lands (ApplySpend is idempotent on the
// request id, so a retry after an ambiguous failure counts nothing twice),
// unless the store refused the data itself (store.ErrRejected): then the
// batch is split to find the row(s) refused, each is written again without
// what the client put in it (content, metadata, tags, end user), and only a
// row refused even so is dropped, logged by its call id and counted
// (Rejected). Close flushes everything still queued.
type Writer struct {
	st         store.Store
	log        *slog.Logger
	MaxBatch   int
	FlushEvery time.Duration

	mu      sync.Mutex
	queue   []store.SpendLog
	sliced  bool // queue does not start at its array's start (dropWritten)
	resets  []reset
	wake    chan struct{}
	flushes chan chan struct{}
	closing chan struct{}
	done    chan struct{}
	lag     time.Duration // age of the oldest row in the last flushed batch
	// enqueued and written count rows ever queued and written, to order resets.
	enqueued, written int64
	closed            bool // Close was called: rows queued now are never written

	// stripped and rejected count rows the store refused as they were:
	// written without their client-supplied fields, or not written at all.
	stripped, rejected atomic.Int64
}

// NewWriter returns a writer to st; Run starts it.
func NewWriter(st store.Store, log *slog.Logger) *Writer {
	return &Writer{st: st, log: log, MaxBatch: 1000, FlushEvery: 100 * time.Millisecond,
		wake: make(chan struct{}, 1), flushes: make(chan chan struct{}), closing: make(chan struct{}), done: make(chan struct{})}
}

// Enqueue queues one row. The lock is held for an append only. A row
// queued after Close is reported as lost: the server closes the writer only
// after its last request has settled, so this is a shutdown-order bug.
func (w *Writer) Enqueue(l store.SpendLog) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		w.log.Error("spend row queued after the spend writer closed: not written", "request_id", l.RequestID, "cost", l.Cost)
		return
	}
	w.queue = append(w.queue, l)
	w.enqueued++
	full := len(w.queue) >= w.MaxBatch
	w.mu.Unlock()
	if full {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

type reset struct {
	kind  store.Kind
	id    string
	next  time.Time
	after int64 // rows enqueued before the reset: they belong to the old period
}

// Reset queues the start of a new budget period for an entity. It is
// written after the spend rows queued before it and before those queued
// after it, so that neither period's spend lands in the other.
func (w *Writer) Reset(kind store.Kind, id string, next time.Time) {
	w.mu.Lock()
	w.resets = append(w.resets, reset{kind, id, next, w.enqueued})
	w.mu.Unlock()
}

// Pending is the number of rows not yet written.
func (w *Writer) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.queue)
}

// Run writes batches until Close.
func (w *Writer) Run() {
	defer close(w.done)
	t := time.NewTicker(w.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-w.closing:
			w.flushAll(30 * time.Second)
			return
		case <-t.C:
		case <-w.wake:
		case done := <-w.flushes:
			w.flushAll(0)
			close(done)
			continue
		}
		w.flushAll(0)
	}
}

// flushAll writes the rows queued when it was called in batches, and each
// budget reset between the rows queued before and after it; with a deadline
// > 0 it keeps retrying failures until then (shutdown), else it leaves them
// for the next tick.
//
// Rows queued while it writes wait for the next tick (or for the queue to
// fill a batch), as a row queued just after a flush always did: chasing
// them with one transaction after another made the writer commit
// continuously in batches of a few rows under load, each transaction
// paying its round trips, rollups and commit for little, on the CPUs the
// requests need (docs/performance.md, "governed-pg's tail").
func (w *Writer) flushAll(deadline time.Duration) {
	until := time.Now().Add(deadline)
	backoff := 50 * time.Millisecond
	w.mu.Lock()
	upTo := w.enqueued // rows queued after this are the next flush's
	w.mu.Unlock()
	for {
		w.mu.Lock()
		n := min(len(w.queue), w.MaxBatch, int(max(upTo-w.written, 0)))
		resetDue := false
		if len(w.resets) > 0 {
			// Resets are queued in order: the first is the next to fall due.
			left := max(w.resets[0].after-w.written, 0)
			n = min(n, int(left))
			resetDue = left == 0
		}
		batch := w.queue[:n:n]
		w.mu.Unlock()
		if n == 0 {
			if !resetDue || !w.applyDueResets() {
				return
			}
			continue
		}
		err := w.write(batch)
		if err != nil {
			w.log.Error("spend batch not written; will retry", "rows", n, "err", err)
			if deadline == 0 || time.Now().After(until) {
				return
			}
			time.Sleep(backoff)
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		w.mu.Lock()
		w.lag = time.Since(batch[0].EndedAt)
		w.dropWritten(n)
		w.written += int64(n)
		w.mu.Unlock()
	}
}

// dropWritten takes the first n rows, written, off the queue (w.mu held).
// The rows queued behind them, when they are no more than n (the rows a
// flush's write saw arrive), move to the front of the queue's array, which
// serves the next rows: a queue regrown from nothing after each flush
// allocated about twice its rows' bytes, and copied each row about once
// more, for every batch (≈ 0.9 KB a request). The written rows are
// cleared, so that the array keeps no row's strings, tags or content
// alive. A longer backlog is sliced off as before (no copy of it per
// batch). An array grown past keepQueueRows rows, or one the queue was
// sliced along (whose size the queue's capacity no longer shows), is let
// go at the first flush that leaves no more rows than it wrote, the rows
// left copied into one of a batch's size: rows arrive during nearly every
// write under load, so an array kept until the queue is empty would keep
// a burst's memory for as long as the traffic lasts.
//
// The store has the batch (a prefix of the queue's array) only for its
// ApplySpend call: no store keeps it (they copy what they keep).
func (w *Writer) dropWritten(n int) {
	rest := len(w.queue) - n
	switch {
	case rest > n:
		clear(w.queue[:n])
		w.queue = w.queue[n:]
		w.sliced = true
	case w.sliced || cap(w.queue) > keepQueueRows:
		var q []store.SpendLog // an empty queue of a grown array: none
		if rest > 0 || cap(w.queue) <= keepQueueRows {
			q = make([]store.SpendLog, rest, max(rest, min(n, keepQueueRows)))
			copy(q, w.queue[n:])
		}
		w.queue, w.sliced = q, false
	default:
		copy(w.queue, w.queue[n:])
		clear(w.queue[rest:])
		w.queue = w.queue[:rest]
	}
}

// keepQueueRows is the largest queue array kept across flushes: above a
// full default batch (1,000 rows) and what arrives at several thousand
// requests a second in a flush's 100 ms.
const keepQueueRows = 4096

// apply writes one batch in one transaction.
func (w *Writer) apply(batch []store.SpendLog) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return w.st.ApplySpend(ctx, batch)
}

// write writes batch. When the store refuses its data (not its own
// unavailability), the batch is halved until the refused rows are alone,
// so that one poison row does not hold back every row queued with it; the
// halves are written in order, and a half written before a later failure
// is written again harmlessly (ApplySpend is idempotent on the request id).
// It returns an error only for a failure worth retrying as a whole.
func (w *Writer) write(batch []store.SpendLog) error {
	batch = cleanBatch(batch)
	err := w.apply(batch)
	if err == nil || !errors.Is(err, store.ErrRejected) {
		return err
	}
	if len(batch) == 1 {
		return w.rescue(batch[0], err)
	}
	mid := len(batch) / 2
	if err := w.write(batch[:mid]); err != nil {
		return err
	}
	return w.write(batch[mid:])
}

// rescue writes a row the store refused without what the client put in
// it, so that its spend is still booked; a row refused even so is dropped
// and counted. Neither log line carries the row's content.
func (w *Writer) rescue(l store.SpendLog, cause error) error {
	s := stripRow(l)
	err := w.apply([]store.SpendLog{s})
	switch {
	case err == nil:
		w.stripped.Add(1)
		w.log.Warn("spend row refused by the store; written without its content, metadata, tags and end user",
			"request_id", l.RequestID, "err", cause)
		return nil
	case errors.Is(err, store.ErrRejected):
		w.rejected.Add(1)
		w.log.Error("spend row refused by the store even without its content: not written",
			"request_id", l.RequestID, "cost", l.Cost, "err", err)
		return nil
	}
	return err
}

// stripRow is l without the fields a client controls (content, metadata,
// tags, end user), and with every other string made valid UTF-8 without
// NUL bytes, which PostgreSQL's text refuses.
func stripRow(l store.SpendLog) store.SpendLog {
	l.Messages, l.Response, l.Metadata, l.RequestTags, l.EndUser = nil, nil, nil, nil, ""
	for _, f := range []*string{&l.RequestID, &l.ResponseID, &l.CallType, &l.KeyHash, &l.UserID, &l.TeamID,
		&l.ModelGroup, &l.Deployment, &l.Provider} {
		*f = cleanText(*f)
	}
	return l
}

// cleanBatch is batch with the strings of its rows that the gateway does
// not already clean (the end user, the model group and tags a client
// sent) made valid UTF-8 without NUL bytes; batch itself when nothing
// needs it (the common case: no allocation). The queue's rows are shared
// with Enqueue, so a row is changed on a copy.
func cleanBatch(batch []store.SpendLog) []store.SpendLog {
	var out []store.SpendLog
	for i := range batch {
		l := &batch[i]
		dirty := cleanText(l.EndUser) != l.EndUser || cleanText(l.ModelGroup) != l.ModelGroup ||
			cleanText(l.ResponseID) != l.ResponseID || cleanText(l.UserID) != l.UserID || cleanText(l.TeamID) != l.TeamID
		for _, t := range l.RequestTags {
			dirty = dirty || cleanText(t) != t
		}
		if !dirty {
			continue
		}
		if out == nil {
			out = slices.Clone(batch)
		}
		c := &out[i]
		c.EndUser, c.ModelGroup, c.ResponseID = cleanText(c.EndUser), cleanText(c.ModelGroup), cleanText(c.ResponseID)
		c.UserID, c.TeamID = cleanText(c.UserID), cleanText(c.TeamID)
		tags := make([]string, len(c.RequestTags))
		for j, t := range c.RequestTags {
			tags[j] = cleanText(t)
		}
		c.RequestTags = tags
	}
	if out == nil {
		return batch
	}
	return out
}

// cleanText is s as valid UTF-8 without NUL bytes.
func cleanText(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// Stripped counts rows the store refused and took without their
// client-supplied fields; Rejected, rows it refused even so (not written).
func (w *Writer) Stripped() int64 { return w.stripped.Load() }

// Rejected counts rows the store refused even stripped: not written.
func (w *Writer) Rejected() int64 { return w.rejected.Load() }

// Flush writes everything queued now (through the writer goroutine, so there
// is still one writer) and returns when that attempt is over.
func (w *Writer) Flush() {
	done := make(chan struct{})
	select {
	case w.flushes <- done:
		<-done
	case <-w.done:
	}
}

// Close stops the writer after flushing everything queued (retrying for up
// to 30 s while the store is unreachable), and reports rows it had to leave.
func (w *Writer) Close() int {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	close(w.closing)
	<-w.done
	return w.Pending()
}

// applyDueResets writes the resets whose rows before them are written. It
// reports false when one failed (it stays queued for the next flush).
func (w *Writer) applyDueResets() bool {
	for {
		w.mu.Lock()
		if len(w.resets) == 0 || w.resets[0].after > w.written {
			w.mu.Unlock()
			return true
		}
		r := w.resets[0]
		w.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := w.st.ResetBudget(ctx, r.kind, r.id, r.next)
		cancel()
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			w.log.Error("budget reset not written; will retry", "kind", r.kind, "id", r.id, "err", err)
			return false
		}
		w.mu.Lock()
		w.resets = w.resets[1:]
		w.mu.Unlock()
	}
}

// Lag is the age of the oldest row of the last batch written when it was written.
func (w *Writer) Lag() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lag
}
