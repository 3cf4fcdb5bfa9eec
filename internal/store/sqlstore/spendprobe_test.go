package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

var probeDay = time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)

func probeBatch(prefix string, n int) []store.SpendLog {
	var b []store.SpendLog
	for i := range n {
		b = append(b, store.SpendLog{RequestID: fmt.Sprintf("%s-%d", prefix, i), KeyHash: "k", UserID: "u", EndUser: "e",
			ModelGroup: "m", Cost: 1, PromptTokens: 1, RequestTags: []string{"t"}, StartedAt: probeDay, EndedAt: probeDay,
			Budgets: []store.BudgetRef{{Kind: store.KindOrganization, ID: "o"}}})
	}
	return b
}

func probeOpen(t *testing.T) (*DB, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := OpenSQLite(context.Background(), filepath.Join(dir, "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(context.Background(), &store.Key{TokenHash: "k"}); err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// probeTotals is key spend, spend_logs rows and rollup requests.
func probeTotals(t *testing.T, s *DB) (float64, int, int64) {
	t.Helper()
	ctx := context.Background()
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
	var req int64
	for _, r := range report {
		req += r.Requests
	}
	return k.Spend, rows, req
}

// openFiles counts this process's descriptors open on files under dir.
func openFiles(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	n := 0
	for _, e := range ents {
		if p, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(p, dir) {
			n++
		}
	}
	return n
}

// TestProbeSpendFailsMidwayThenNextBatch: the rows' block rejected (ABORT:
// the statement fails, the transaction stays) and a rollup rejected with
// RAISE(ROLLBACK) (SQLite ends the transaction itself, so the driver's
// rollback fails) leave nothing, and the next batch on the store writes.
func TestProbeSpendFailsMidwayThenNextBatch(t *testing.T) {
	ctx := context.Background()
	s, _ := probeOpen(t)
	defer s.Close()
	if err := s.ApplySpend(ctx, probeBatch("ok0", 3)); err != nil {
		t.Fatal(err)
	}
	for i, trig := range []string{
		// The batch's rows go into the open block (spend_blocks), which the
		// first batch made: an UPDATE.
		`CREATE TRIGGER probe BEFORE UPDATE ON spend_blocks BEGIN SELECT RAISE(ABORT, 'probe'); END`,
		`CREATE TRIGGER probe BEFORE INSERT ON spend_daily_tags BEGIN SELECT RAISE(ROLLBACK, 'probe'); END`,
		`CREATE TRIGGER probe BEFORE INSERT ON spend_daily BEGIN SELECT RAISE(FAIL, 'probe'); END`,
	} {
		if err := Exec(ctx, s, trig); err != nil {
			t.Fatal(err)
		}
		if err := s.ApplySpend(ctx, probeBatch("bad", 4)); err == nil {
			t.Fatalf("trigger %d: batch succeeded", i)
		}
		if sp, rows, req := probeTotals(t, s); sp != float64(3+3*i) || rows != 3+3*i || req != int64(3+3*i) {
			t.Fatalf("trigger %d: failed batch left spend %v rows %d requests %d", i, sp, rows, req)
		}
		if err := Exec(ctx, s, `DROP TRIGGER probe`); err != nil {
			t.Fatal(err)
		}
		if err := s.ApplySpend(ctx, probeBatch(fmt.Sprintf("ok%d", i+1), 3)); err != nil {
			t.Fatalf("trigger %d: next batch: %v", i, err)
		}
		if sp, rows, _ := probeTotals(t, s); sp != float64(6+3*i) || rows != 6+3*i {
			t.Fatalf("trigger %d: next batch: spend %v rows %d", i, sp, rows)
		}
	}
	// Replays count nothing twice.
	for range 2 {
		if err := s.ApplySpend(ctx, probeBatch("ok1", 3)); err != nil {
			t.Fatal(err)
		}
	}
	if sp, rows, req := probeTotals(t, s); sp != 12 || rows != 12 || req != 12 {
		t.Fatalf("replay: spend %v rows %d requests %d", sp, rows, req)
	}
}

// TestProbeSpendStatementsOnReplacedConnection: when database/sql drops
// the store's connection (ErrBadConn here; an interrupted statement's
// IsValid false is another way), the next batch prepares on the new one
// and writes, and the old connection's statements do not keep it open
// (a zombie SQLite connection holding the file) once the store closes.
func TestProbeSpendStatementsOnReplacedConnection(t *testing.T) {
	ctx := context.Background()
	s, dir := probeOpen(t)
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	for i := range 3 {
		if err := s.ApplySpend(ctx, probeBatch(fmt.Sprint("r", i), 2)); err != nil {
			t.Fatal(err)
		}
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Raw(func(any) error { return driver.ErrBadConn })
		c.Close()
	}
	if err := s.ApplySpend(ctx, probeBatch("last", 2)); err != nil {
		t.Fatal(err)
	}
	if sp, rows, _ := probeTotals(t, s); sp != 8 || rows != 8 {
		t.Fatalf("spend %v rows %d", sp, rows)
	}
	closed = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openFiles(t, dir); n != 0 {
		t.Fatalf("%d files still open under the store's directory after Close", n)
	}
}

// TestProbeSpendConcurrentStoreUse: batches, admin writes and reads on the
// one connection at once (-race); every batch counts exactly once.
func TestProbeSpendConcurrentStoreUse(t *testing.T) {
	ctx := context.Background()
	s, _ := probeOpen(t)
	defer s.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				b := probeBatch(fmt.Sprintf("w%d-%d", w, i), 3)
				if err := s.ApplySpend(ctx, b); err != nil {
					errs <- err
					return
				}
				if err := s.ApplySpend(ctx, b); err != nil { // replay
					errs <- err
					return
				}
			}
		}()
	}
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				if err := s.CreateKey(ctx, &store.Key{TokenHash: fmt.Sprintf("x%d-%d", g, i)}); err != nil {
					errs <- err
					return
				}
				if _, _, err := s.ListSpendLogs(ctx, store.SpendFilter{}); err != nil {
					errs <- err
					return
				}
				// A key update (full replace) while the writer adds to its spend.
				k, err := s.GetKey(ctx, "k")
				if err != nil {
					errs <- err
					return
				}
				alias := fmt.Sprintf("alias-%d-%d", g, i)
				k.KeyAlias = &alias
				if err := s.UpdateKey(ctx, k); err != nil {
					errs <- err
					return
				}
				// A read whose context has ended.
				cctx, cancel := context.WithCancel(ctx)
				cancel()
				_, _, _ = s.ListSpendLogs(cctx, store.SpendFilter{})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if sp, rows, req := probeTotals(t, s); sp != 180 || rows != 180 || req != 180 {
		t.Fatalf("spend %v rows %d requests %d, want 180", sp, rows, req)
	}
}

// TestProbeSpendCloseWithBatchesInFlight: Close while batches run: no
// panic or race, batches after it fail, and no file stays open.
func TestProbeSpendCloseWithBatchesInFlight(t *testing.T) {
	ctx := context.Background()
	s, dir := probeOpen(t)
	var wg sync.WaitGroup
	started := make(chan struct{})
	var once sync.Once
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				err := s.ApplySpend(ctx, probeBatch(fmt.Sprintf("w%d-%d", w, i), 5))
				once.Do(func() { close(started) })
				if err != nil {
					if !strings.Contains(err.Error(), "closed") {
						t.Errorf("batch after close: %v", err)
					}
					return
				}
			}
		}()
	}
	<-started
	if err := s.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	wg.Wait()
	if err := s.ApplySpend(ctx, probeBatch("after", 1)); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("batch after close: %v", err)
	}
	if n := openFiles(t, dir); n != 0 {
		t.Fatalf("%d files still open under the store's directory after Close", n)
	}
}

// TestProbeSpendNoSpendLogs: disable_spend_logs books spend and rollups
// without rows, and a failed batch leaves nothing.
func TestProbeSpendNoSpendLogs(t *testing.T) {
	ctx := context.Background()
	s, _ := probeOpen(t)
	defer s.Close()
	s.noSpendLogs.Store(true)
	if err := s.ApplySpend(ctx, probeBatch("a", 3)); err != nil {
		t.Fatal(err)
	}
	if err := Exec(ctx, s, `CREATE TRIGGER probe BEFORE INSERT ON spend_daily_tags BEGIN SELECT RAISE(ABORT, 'probe'); END`); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, probeBatch("b", 3)); err == nil {
		t.Fatal("batch succeeded")
	}
	if sp, rows, req := probeTotals(t, s); sp != 3 || rows != 0 || req != 3 {
		t.Fatalf("spend %v rows %d requests %d", sp, rows, req)
	}
}

// TestProbeSpendStatementsAfterInterruptedRead: a read whose context ends
// while it runs interrupts SQLite, and database/sql then drops the
// connection (modernc's IsValid is false while it is interrupted): the
// everyday way the store's connection is replaced. The spend statements
// prepared on it must not keep it open.
func TestProbeSpendStatementsAfterInterruptedRead(t *testing.T) {
	ctx := context.Background()
	s, dir := probeOpen(t)
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	interrupted := 0
	for i := 0; i < 20 && interrupted < 2; i++ {
		if err := s.ApplySpend(ctx, probeBatch(fmt.Sprint("r", i), 2)); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() {
			done <- Exec(cctx, s, `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100000000) SELECT count(*) FROM c`)
		}()
		// End the context once the statement has the connection.
		for s.db.Stats().InUse == 0 {
			runtime.Gosched()
		}
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		if s.db.Stats().OpenConnections == 0 { // dropped: it was interrupted
			interrupted++
		}
		cancel()
	}
	if interrupted == 0 {
		t.Skip("no read was interrupted mid-statement")
	}
	closed = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openFiles(t, dir); n != 0 {
		t.Fatalf("%d files still open under the store's directory after Close (%d interrupted reads)", n, interrupted)
	}
}

// TestProbeSpendEndsWaitingForTheWriteLock: another connection holds the
// write lock; a batch whose context ends while its BEGIN IMMEDIATE waits
// fails and writes nothing, and once the lock is free the next batch
// writes (the connection is usable or replaced, the statements with it).
func TestProbeSpendEndsWaitingForTheWriteLock(t *testing.T) {
	ctx := context.Background()
	s, dir := probeOpen(t)
	defer s.Close()
	if err := s.ApplySpend(ctx, probeBatch("a", 2)); err != nil {
		t.Fatal(err)
	}
	other, err := OpenSQLite(ctx, filepath.Join(dir, "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	lock, err := other.db.BeginTx(ctx, nil) // IMMEDIATE (_txlock)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- s.ApplySpend(cctx, probeBatch(fmt.Sprint("b", i), 2)) }()
		for s.db.Stats().InUse == 0 {
			runtime.Gosched()
		}
		cancel()
		if err := <-done; err == nil {
			t.Fatal("batch written while another connection held the write lock")
		}
	}
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, probeBatch("c", 2)); err != nil {
		t.Fatalf("batch after the lock was freed: %v", err)
	}
	if sp, rows, req := probeTotals(t, s); sp != 4 || rows != 4 || req != 4 {
		t.Fatalf("spend %v rows %d requests %d, want 4", sp, rows, req)
	}
}
