package ledger_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// gated is a store whose first ApplySpend waits for release (after saying
// it entered), and which records every batch's size.
type gated struct {
	store.Store
	entered, release chan struct{}
	once             sync.Once
	mu               sync.Mutex
	sizes            []int
}

func (g *gated) ApplySpend(ctx context.Context, batch []store.SpendLog) error {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	g.mu.Lock()
	g.sizes = append(g.sizes, len(batch))
	g.mu.Unlock()
	return g.Store.ApplySpend(ctx, batch)
}

func (g *gated) batches() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sizes)
}

// TestWriterLeavesRowsQueuedDuringAWriteToTheNextFlush: a flush writes the
// rows queued when it began, and rows
// queued while it writes wait for the next flush instead of being chased
// with one small transaction after another; none is lost, and Close writes
// what is left.
func TestWriterLeavesRowsQueuedDuringAWriteToTheNextFlush(t *testing.T) {
	ctx := context.Background()
	sq, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	st := &gated{Store: sq, entered: make(chan struct{}), release: make(chan struct{})}
	w := ledger.NewWriter(st, slog.New(slog.DiscardHandler))
	w.FlushEvery = time.Hour // only explicit flushes
	w.MaxBatch = 10          // not reached: a full queue would wake the writer on its own
	go w.Run()
	now := time.Now()
	n := 0
	enqueue := func(rows int) {
		for range rows {
			n++
			w.Enqueue(store.SpendLog{RequestID: "r" + strconv.Itoa(n), KeyHash: "k", Cost: 1, StartedAt: now, EndedAt: now})
		}
	}
	enqueue(3)
	flushed := make(chan struct{})
	go func() { w.Flush(); close(flushed) }()
	select { // the first batch is being written
	case <-st.entered:
	case <-time.After(30 * time.Second):
		close(st.release)
		t.Fatal("the flush never reached the store")
	}
	enqueue(2)
	close(st.release)
	select {
	case <-flushed:
	case <-time.After(30 * time.Second):
		t.Fatal("the flush did not return after the store answered")
	}
	if got := st.batches(); !slices.Equal(got, []int{3}) || w.Pending() != 2 {
		t.Fatalf("first flush wrote batches %v with %d rows left queued; want [3] and the 2 queued during it left", got, w.Pending())
	}
	w.Flush()
	if got := st.batches(); !slices.Equal(got, []int{3, 2}) || w.Pending() != 0 {
		t.Fatalf("second flush: batches %v, %d rows left; want [3 2] and none", got, w.Pending())
	}
	enqueue(1)
	if left := w.Close(); left != 0 {
		t.Fatalf("Close left %d rows", left)
	}
	for i := 1; i <= n; i++ {
		rows, _, err := sq.ListSpendLogs(ctx, store.SpendFilter{RequestID: "r" + strconv.Itoa(i)})
		if err != nil || len(rows) != 1 {
			t.Errorf("row r%d: %d rows, err %v; want it written once", i, len(rows), err)
		}
	}
}
