package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// probeRow is producer g's i-th row: every field that a store reads is
// derived from its id, so that a row whose slot was overwritten (aliased
// with another row) shows.
func probeRow(g, i int, now time.Time) store.SpendLog {
	id := fmt.Sprintf("p%d-%05d", g, i)
	return store.SpendLog{RequestID: id, KeyHash: "k" + strconv.Itoa(g), UserID: "u" + id, ModelGroup: "m",
		RequestTags: []string{id}, Messages: []byte(`["` + id + `"]`), Cost: float64(i + 1), PromptTokens: int64(i),
		Status: 200, StartedAt: now, EndedAt: now}
}

// probeRowOK reports whether l is the row its id names (a stripped row,
// rescued without its content and tags, is one too).
func probeRowOK(l store.SpendLog, now time.Time) bool {
	var g, i int
	if _, err := fmt.Sscanf(l.RequestID, "p%d-%05d", &g, &i); err != nil {
		return false
	}
	want := probeRow(g, i, now)
	if l.Messages == nil && l.RequestTags == nil { // stripped
		want.Messages, want.RequestTags = nil, nil
	}
	return l.KeyHash == want.KeyHash && l.UserID == want.UserID && l.Cost == want.Cost &&
		l.PromptTokens == want.PromptTokens && string(l.Messages) == string(want.Messages) && slices.Equal(l.RequestTags, want.RequestTags)
}

// chaosStore is an idempotent in-memory spend store that fails: every
// fifth call or so transiently, any call holding a poison row (its index a
// multiple of 97) with its content as refused (the writer halves the
// batch and rescues the row stripped), and every call while failing is
// set (a store away at shutdown). It checks, during each call, that
// every row of the batch is the row its id names, and records the order
// in which ids were first written.
type chaosStore struct {
	store.Store
	now     time.Time
	gate    chan struct{} // when not nil, a call waits for it to close
	mu      sync.Mutex
	calls   int
	failing int // calls still to fail outright
	rnd     *rand.Rand
	flaky   bool // fail about one call in five
	seen    map[string]bool
	order   []string
	bad     []string
}

var errProbeAway = errors.New("probe: store away")

func (s *chaosStore) ApplySpend(_ context.Context, batch []store.SpendLog) error {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	// Read every row while the writer's Enqueues run (outside s.mu, so
	// that the race detector sees the reads against their appends).
	var bad []string
	for _, l := range batch {
		if !probeRowOK(l, s.now) {
			bad = append(bad, fmt.Sprintf("%+v", l))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bad = append(s.bad, bad...)
	s.calls++
	if s.failing > 0 {
		s.failing--
		return errProbeAway
	}
	if s.flaky && s.rnd.IntN(5) == 0 {
		return errProbeAway
	}
	for _, l := range batch {
		var g, i int
		fmt.Sscanf(l.RequestID, "p%d-%05d", &g, &i)
		if i%97 == 0 && l.Messages != nil {
			return fmt.Errorf("probe: %w", store.ErrRejected)
		}
	}
	for _, l := range batch {
		if !s.seen[l.RequestID] {
			s.seen[l.RequestID] = true
			s.order = append(s.order, l.RequestID)
		}
	}
	return nil
}

// TestProbeWriterKeptQueueUnderConcurrentEnqueue: the writer keeps its
// queue's array across flushes and moves rows queued during a write to
// its front. Under producers enqueueing all the time, explicit flushes
// (the path a key's deletion takes) racing the ticker and full batches,
// transient failures retried, refused rows split out and rescued, a
// backlog grown past the array kept (the store held up), and a store away
// when Close flushes: every row is written, once, in each producer's
// order, and every row the store is handed is the row its id names.
func TestProbeWriterKeptQueueUnderConcurrentEnqueue(t *testing.T) {
	const producers, perProducer = 4, 2500
	now := time.Now()
	st := &chaosStore{now: now, seen: map[string]bool{}, rnd: rand.New(rand.NewPCG(7, 31)), flaky: true}
	w := ledger.NewWriter(st, slog.New(slog.DiscardHandler))
	w.MaxBatch = 64
	w.FlushEvery = time.Millisecond
	go w.Run()

	// A held-up store: the backlog grows past the array kept
	// (4,096 rows) before the first write ends.
	gate := make(chan struct{})
	st.mu.Lock()
	st.gate = gate
	st.mu.Unlock()

	var wg sync.WaitGroup
	var half sync.WaitGroup
	half.Add(producers)
	for g := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perProducer {
				w.Enqueue(probeRow(g, i, now))
				if i == perProducer/2+100 {
					half.Done()
				}
			}
		}()
	}
	stopFlushing := make(chan struct{})
	flusherDone := make(chan struct{})
	go func() { // the flushQueued path, racing Run's own flushes
		defer close(flusherDone)
		for {
			select {
			case <-stopFlushing:
				return
			default:
				w.Flush()
			}
		}
	}()
	half.Wait() // > 5,000 rows queued or written
	st.mu.Lock()
	st.gate = nil
	st.mu.Unlock()
	close(gate)
	wg.Wait()
	close(stopFlushing)
	<-flusherDone
	// The ticker drains the backlog through the failures.
	for start := time.Now(); w.Pending() > 0 && time.Since(start) < 2*time.Minute; {
		time.Sleep(10 * time.Millisecond)
	}
	st.mu.Lock()
	st.flaky = false
	st.failing = 3 // away when Close starts flushing: retried
	st.mu.Unlock()
	for i := range 10 { // the last requests' rows, queued just before the stop
		w.Enqueue(probeRow(producers, i, now))
	}
	if left := w.Close(); left != 0 {
		st.mu.Lock()
		t.Fatalf("Close left %d rows (%d calls, %d written, %d bad)", left, st.calls, len(st.order), len(st.bad))
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.bad) > 0 {
		t.Fatalf("%d rows handed to the store were not the rows their ids name, e.g. %s", len(st.bad), st.bad[0])
	}
	if got := len(st.order); got != producers*perProducer+10 {
		t.Errorf("%d rows written; want %d", got, producers*perProducer+10)
	}
	next := make([]int, producers+1)
	for _, id := range st.order {
		var g, i int
		fmt.Sscanf(id, "p%d-%05d", &g, &i)
		if i != next[g] {
			t.Fatalf("producer %d: row %d written where row %d was next", g, i, next[g])
		}
		next[g]++
	}
	if w.Stripped() == 0 {
		t.Error("no row was rescued stripped: the refused path was not exercised")
	}
}

// TestProbeWriterRowsLandOnceInRealStores: the same producers and racing
// flushes against SQLite and PostgreSQL (when configured): each key's
// spend is the sum of its producer's rows, and every row is listed once
// with its own content.
func TestProbeWriterRowsLandOnceInRealStores(t *testing.T) {
	ctx := context.Background()
	stores := map[string]func(t *testing.T) store.Store{
		"sqlite": func(t *testing.T) store.Store {
			s, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "t.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"postgres": func(t *testing.T) store.Store {
			base := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
			if base == "" {
				t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set")
			}
			return storetest.OpenPostgres(t, base)
		},
	}
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			st := stores[name](t)
			const producers, perProducer = 3, 400
			for g := range producers {
				if err := st.CreateKey(ctx, &store.Key{TokenHash: "k" + strconv.Itoa(g), KeyName: "sk-...k"}); err != nil {
					t.Fatal(err)
				}
			}
			now := time.Now().UTC().Truncate(time.Millisecond)
			w := ledger.NewWriter(st, slog.New(slog.DiscardHandler))
			w.MaxBatch = 16
			w.FlushEvery = time.Millisecond
			go w.Run()
			var wg sync.WaitGroup
			for g := range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range perProducer {
						w.Enqueue(probeRow(g, i, now))
						if i%50 == 0 {
							w.Flush() // a key deletion's flush
						}
					}
				}()
			}
			wg.Wait()
			if left := w.Close(); left != 0 {
				t.Fatalf("Close left %d rows", left)
			}
			for g := range producers {
				k, err := st.GetKey(ctx, "k"+strconv.Itoa(g))
				if err != nil {
					t.Fatal(err)
				}
				if want := float64(perProducer*(perProducer+1)) / 2; k.Spend != want {
					t.Errorf("key k%d: spend %v; want %v", g, k.Spend, want)
				}
				rows, _, err := st.ListSpendLogs(ctx, store.SpendFilter{KeyHash: "k" + strconv.Itoa(g), Page: store.Page{Number: 1, Size: 2 * perProducer}})
				if err != nil {
					t.Fatal(err)
				}
				ids := map[string]int{}
				for _, l := range rows {
					ids[l.RequestID]++
					if !probeRowOK(l, now) || !strings.HasPrefix(l.RequestID, fmt.Sprintf("p%d-", g)) {
						t.Errorf("listed row is not the row its id names: %+v", l)
					}
				}
				if len(ids) != perProducer || len(rows) != perProducer {
					t.Errorf("key k%d: %d rows listed, %d distinct; want %d once each", g, len(rows), len(ids), perProducer)
				}
			}
		})
	}
}
