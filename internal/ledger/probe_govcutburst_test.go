package ledger

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/tollgate/tollgate/internal/store"
)

// steadyStore is a store under steady load: every ApplySpend, once the
// gate is open, queues a few more rows on its writer, as requests ending
// during a write do.
type steadyStore struct {
	store.Store
	w       *Writer
	gate    chan struct{}
	mu      sync.Mutex
	n       int
	written int
}

func (s *steadyStore) ApplySpend(_ context.Context, batch []store.SpendLog) error {
	<-s.gate
	s.mu.Lock()
	s.written += len(batch)
	s.mu.Unlock()
	for range 50 {
		s.mu.Lock()
		s.n++
		id := "steady-" + strconv.Itoa(s.n)
		s.mu.Unlock()
		now := time.Now()
		s.w.Enqueue(store.SpendLog{RequestID: id, Cost: 1, StartedAt: now, EndedAt: now})
	}
	return nil
}

// TestProbeWriterLetsABurstArrayGoUnderLoad: a backlog (a store held up)
// grows the queue's array far past keepQueueRows. Once the backlog is
// written, that array must go even though rows keep arriving during every
// write (the queue is then never empty when a flush ends), as it went
// before the queue was kept (its slice moved along the array until an
// append needed another, of the queue's size): kept, every
// replica that once had a backlog holds its memory for as long as it
// serves traffic.
func TestProbeWriterLetsABurstArrayGoUnderLoad(t *testing.T) {
	st := &steadyStore{gate: make(chan struct{})}
	w := NewWriter(st, slog.New(slog.DiscardHandler))
	st.w = w
	w.FlushEvery = time.Hour // explicit flushes only
	go w.Run()
	defer w.Close()
	now := time.Now()
	const burst = 20000
	for i := range burst {
		w.Enqueue(store.SpendLog{RequestID: "burst-" + strconv.Itoa(i), Cost: 1, StartedAt: now, EndedAt: now})
	}
	w.mu.Lock()
	full := w.queue[:cap(w.queue)]
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(full)))
	hi := lo + uintptr(len(full))*unsafe.Sizeof(store.SpendLog{})
	full = nil
	w.mu.Unlock()
	close(st.gate)
	// The backlog written, then flushes of the rows arriving during each
	// write until more rows than the backlog's array holds have passed.
	written := 0
	for i := 0; i < 100000 && written < 3*burst; i++ {
		w.Flush()
		st.mu.Lock()
		written = st.written
		st.mu.Unlock()
	}
	if written < 3*burst {
		t.Fatalf("%d rows written; want %d", written, 3*burst)
	}
	w.mu.Lock()
	p := uintptr(unsafe.Pointer(unsafe.SliceData(w.queue[:cap(w.queue)])))
	queued, capacity := len(w.queue), cap(w.queue)
	w.mu.Unlock()
	if capacity > 0 && p >= lo && p < hi {
		t.Fatalf("after the backlog was written the queue (%d rows, capacity %d) still lives in the backlog's array of %d rows (%d KB)",
			queued, capacity, (hi-lo)/unsafe.Sizeof(store.SpendLog{}), (hi-lo)>>10)
	}
}
