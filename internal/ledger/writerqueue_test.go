package ledger

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// idStore records the request ids of the rows written, in order; the
// first ApplySpend, when gate is set, waits for it to close.
type idStore struct {
	store.Store
	mu      sync.Mutex
	ids     []string
	entered chan struct{}
	gate    chan struct{}
	once    sync.Once
}

func (s *idStore) ApplySpend(_ context.Context, batch []store.SpendLog) error {
	if s.gate != nil {
		s.once.Do(func() { close(s.entered); <-s.gate })
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range batch {
		s.ids = append(s.ids, l.RequestID)
	}
	return nil
}

func (s *idStore) written() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

// queueState is the writer's queue: its rows' ids, and whether every slot
// of its array past them is zero (no written row kept alive).
func queueState(w *Writer) (ids []string, capacity int, clean bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.queue {
		ids = append(ids, l.RequestID)
	}
	clean = true
	for _, l := range w.queue[len(w.queue):cap(w.queue)] {
		clean = clean && l.RequestID == "" && l.KeyHash == "" && l.RequestTags == nil
	}
	return ids, cap(w.queue), clean
}

// TestWriterKeepsItsQueueAcrossFlushes: once a flush has written the
// queue, its array serves the next rows (a queue regrown from nothing
// after every flush allocated and copied each row again), holding no
// written row; rows queued during a write, fewer or more than the batch,
// stay queued in order and are written once, in order.
func TestWriterKeepsItsQueueAcrossFlushes(t *testing.T) {
	for _, tt := range []struct {
		name          string
		before, while int // rows queued before the first flush, and during its write
	}{
		{"fewer during the write", 5, 2},
		{"as many during the write", 4, 4},
		{"more during the write", 2, 5},
		{"none during the write", 6, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := &idStore{entered: make(chan struct{}), gate: make(chan struct{})}
			w := NewWriter(st, slog.New(slog.DiscardHandler))
			w.FlushEvery = time.Hour // explicit flushes only
			go w.Run()
			defer w.Close()
			now := time.Now()
			n := 0
			var want []string
			enqueue := func(rows int) {
				for range rows {
					n++
					id := "r" + strconv.Itoa(n)
					want = append(want, id)
					w.Enqueue(store.SpendLog{RequestID: id, KeyHash: "k", RequestTags: []string{"t"}, Cost: 1, StartedAt: now, EndedAt: now})
				}
			}
			enqueue(tt.before)
			flushed := make(chan struct{})
			go func() { w.Flush(); close(flushed) }()
			select {
			case <-st.entered:
			case <-time.After(30 * time.Second):
				close(st.gate)
				t.Fatal("the flush never reached the store")
			}
			enqueue(tt.while)
			close(st.gate)
			select {
			case <-flushed:
			case <-time.After(30 * time.Second):
				t.Fatal("the flush did not return")
			}
			ids, capacity, clean := queueState(w)
			if !slices.Equal(ids, want[tt.before:]) || !clean {
				t.Fatalf("after the first flush the queue holds %v (rest of its array zero: %v); want %v", ids, clean, want[tt.before:])
			}
			if capacity == 0 {
				t.Fatal("the queue's array was let go after a flush: the next rows regrow it")
			}
			w.Flush()
			ids, capacity, clean = queueState(w)
			if len(ids) != 0 || capacity == 0 || !clean {
				t.Fatalf("after the second flush: queue %v, capacity %d, rest zero %v; want empty, kept and zero", ids, capacity, clean)
			}
			enqueue(3)
			w.Flush()
			if got := st.written(); !slices.Equal(got, want) {
				t.Fatalf("written %v; want %v, each once and in order", got, want)
			}
		})
	}
}

// TestWriterLetsAGrownQueueGo: a queue grown past keepQueueRows by a
// backlog is not kept once written.
func TestWriterLetsAGrownQueueGo(t *testing.T) {
	st := &idStore{}
	w := NewWriter(st, slog.New(slog.DiscardHandler))
	w.FlushEvery = time.Hour
	w.MaxBatch = keepQueueRows + 1 // not reached before the flush
	go w.Run()
	defer w.Close()
	now := time.Now()
	for i := range keepQueueRows + 1 {
		w.Enqueue(store.SpendLog{RequestID: "r" + strconv.Itoa(i), Cost: 1, StartedAt: now, EndedAt: now})
	}
	w.Flush()
	if _, capacity, _ := queueState(w); capacity != 0 {
		t.Fatalf("a queue array of %d rows kept after its rows were written; want it let go", capacity)
	}
	if got := len(st.written()); got != keepQueueRows+1 {
		t.Fatalf("%d rows written; want %d", got, keepQueueRows+1)
	}
}
