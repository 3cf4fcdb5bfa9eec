package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// countdown is a context that ends (Canceled) at the n-th call of its Err:
// a deadline that passes at a chosen point of a batch, without a clock. Its
// Deadline is set, so that the store keeps it rather than adding its own.
type countdown struct {
	context.Context
	mu   sync.Mutex
	left int
	done chan struct{}
}

func newCountdown(n int) *countdown {
	return &countdown{Context: context.Background(), left: n, done: make(chan struct{})}
}

func (c *countdown) Deadline() (time.Time, bool) { return time.Now().Add(time.Hour), true }
func (c *countdown) Done() <-chan struct{}       { return c.done }

func (c *countdown) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.left > 0 {
		if c.left--; c.left > 0 {
			return nil
		}
		close(c.done)
	}
	return context.Canceled
}

// TestApplySpendEndsBetweenStatements: SQLite's spend statements run
// without the driver watching the batch's context; the batch checks it
// between statements and before the commit. A context that ends at any
// of those points fails the batch and leaves nothing of it (rows, spend,
// rollups), and the store goes on writing; one that outlives every check
// writes the whole batch.
func TestApplySpendEndsBetweenStatements(t *testing.T) {
	ctx := context.Background()
	s, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k"}); err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	spend := 0.0
	failedMidBatch, succeeded := false, false
	for n := 1; n <= 40 && !succeeded; n++ {
		var batch []store.SpendLog
		for i := range 5 {
			batch = append(batch, store.SpendLog{RequestID: fmt.Sprintf("n%02d-r%d", n, i), KeyHash: "k", UserID: "u", ModelGroup: "m",
				Cost: 1, PromptTokens: 1, StartedAt: day, EndedAt: day})
		}
		c := newCountdown(n)
		err := s.ApplySpend(c, batch)
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("countdown %d: %v, want context.Canceled", n, err)
		}
		if err == nil {
			succeeded = true
			spend += 5
		} else if c.left == 0 && n > 1 {
			failedMidBatch = true
		}
		k, err := s.GetKey(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		_, rows, err := s.ListSpendLogs(ctx, store.SpendFilter{})
		if err != nil {
			t.Fatal(err)
		}
		report, err := s.SpendReport(ctx, store.ReportFilter{GroupBy: "key_hash"})
		if err != nil {
			t.Fatal(err)
		}
		var requests int64
		for _, r := range report {
			requests += r.Requests
		}
		if k.Spend != spend || rows != int(spend) || requests != int64(spend) {
			t.Fatalf("countdown %d (err %v): key spend %v, %d rows, %d requests in the rollup; want %v each", n, err, k.Spend, rows, requests, spend)
		}
	}
	if !failedMidBatch || !succeeded {
		t.Fatalf("ended mid-batch: %v, a batch outlived every check: %v", failedMidBatch, succeeded)
	}
}
