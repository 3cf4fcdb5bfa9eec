package callback

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"
)

// scripted is a Sink whose sends answer with the errors given, in turn
// (nil once they run out), recording every batch; block, when set, holds
// every send until it closes or the send's context ends.
type scripted struct {
	mu      sync.Mutex
	errs    []error
	batches [][]string
	ids     []string
	block   chan struct{}
}

func (s *scripted) Encode(p *Payload) ([]byte, error) { return []byte(p.ID), nil }

func (s *scripted) Send(ctx context.Context, b *Batch) error {
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	items := make([]string, len(b.Items))
	for i, it := range b.Items {
		items[i] = string(it)
	}
	s.batches = append(s.batches, items)
	s.ids = append(s.ids, b.ID)
	if len(s.errs) > 0 {
		err := s.errs[0]
		s.errs = s.errs[1:]
		return err
	}
	return nil
}

func (s *scripted) sent() ([][]string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]string(nil), s.batches...), append([]string(nil), s.ids...)
}

func wait(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func run(t *testing.T, q *Queue) {
	t.Helper()
	go q.Run()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		q.Close(ctx, true)
	})
}

// TestQueueRetriesWithBackoffThenGivesUp: retryable errors are retried
// with the same batch (and id) up to MaxAttempts; a 4xx other than 408
// and 429 is not retried.
func TestQueueRetriesWithBackoffThenGivesUp(t *testing.T) {
	tests := []struct {
		name       string
		errs       []error
		wantSends  int
		wantSent   uint64
		wantFailed uint64
	}{
		{"500 then ok", []error{&StatusError{Code: 500}}, 2, 1, 0},
		{"429 and 408 then ok", []error{&StatusError{Code: 429}, &StatusError{Code: 408}}, 3, 1, 0},
		{"connection errors past the attempts", []error{errors.New("refused"), errors.New("refused"), errors.New("refused"), errors.New("refused")}, 3, 0, 1},
		{"400 not retried", []error{&StatusError{Code: 400}}, 1, 0, 1},
		{"401 not retried", []error{&StatusError{Code: 401}}, 1, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &scripted{errs: tt.errs}
			q := NewQueue("t", s, QueueOptions{BatchCount: 1, MaxAttempts: 3, BackoffBase: time.Millisecond, BackoffMax: 4 * time.Millisecond}, nil)
			run(t, q)
			q.Publish(&Payload{ID: "a"})
			// The outcome is counted before the worker lets the batch go
			// (Depth): wait for both, or Depth may be read in between.
			wait(t, "the outcome", func() bool { st := q.Stats(); return st.Sent+st.Failed == 1 && st.Depth == 0 })
			batches, ids := s.sent()
			if len(batches) != tt.wantSends {
				t.Errorf("sends = %d, want %d", len(batches), tt.wantSends)
			}
			for i := range ids {
				if ids[i] != ids[0] || batches[i][0] != "a" {
					t.Errorf("attempt %d sent %v (id %s), want the same batch as the first", i, batches[i], ids[i])
				}
			}
			if st := q.Stats(); st.Sent != tt.wantSent || st.Failed != tt.wantFailed || st.Depth != 0 {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

// TestQueueBatchesByCountBytesAndTime: a batch goes when it is full, when
// its bytes reach the bound, or when its oldest payload is old enough.
func TestQueueBatchesByCountBytesAndTime(t *testing.T) {
	s := &scripted{}
	q := NewQueue("t", s, QueueOptions{BatchCount: 3, BatchBytes: 4, FlushInterval: time.Hour}, nil)
	run(t, q)
	for _, id := range []string{"a", "b", "c"} {
		q.Publish(&Payload{ID: id})
	}
	wait(t, "a full batch", func() bool { b, _ := s.sent(); return len(b) == 1 })
	q.Publish(&Payload{ID: "long-id"}) // past BatchBytes alone
	wait(t, "a batch past its bytes", func() bool { b, _ := s.sent(); return len(b) == 2 })
	b, _ := s.sent()
	if len(b[0]) != 3 || len(b[1]) != 1 || b[1][0] != "long-id" {
		t.Errorf("batches = %v", b)
	}

	s2 := &scripted{}
	q2 := NewQueue("t2", s2, QueueOptions{BatchCount: 100, FlushInterval: 50 * time.Millisecond}, nil)
	run(t, q2)
	start := time.Now()
	q2.Publish(&Payload{ID: "x"})
	wait(t, "the flush interval", func() bool { b, _ := s2.sent(); return len(b) == 1 })
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("sent after %v, before the flush interval", took)
	}
}

// TestQueueFullDropsAndCloseGivesUpAtItsDeadline: Publish never waits on a
// sink that hangs; a full queue drops (counted); Close returns by its
// deadline and counts what it could not send. The sink never returns and
// sends have an hour: a Publish or Close that waited on it would not
// return at all (the bounds below only report that, generous for a loaded
// machine).
func TestQueueFullDropsAndCloseGivesUpAtItsDeadline(t *testing.T) {
	s := &scripted{block: make(chan struct{})}
	q := NewQueue("t", s, QueueOptions{Size: 3, BatchCount: 1, SendTimeout: time.Hour}, nil)
	go q.Run()
	returns(t, "10 publishes to a queue whose sink hangs", func() {
		for i := 0; i < 10; i++ {
			q.Publish(&Payload{ID: "p"})
		}
	})
	wait(t, "the send in flight", func() bool { return q.Stats().Lag > 0 })
	st := q.Stats()
	if st.Queued != 3 || st.Dropped != 7 || st.Depth != 3 {
		t.Errorf("stats = %+v, want 3 queued, 7 dropped", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var left int
	returns(t, "Close with a 100 ms deadline and a hung sink", func() { left = q.Close(ctx, true) })
	st = q.Stats()
	if left != 3 || st.Failed != 3 || st.Sent != 0 {
		t.Errorf("after Close: left %d, stats %+v; want the 3 counted as failed", left, st)
	}
	q.Publish(&Payload{ID: "late"})
	if q.Stats().Dropped != 8 {
		t.Error("a publish after Close was not dropped")
	}
}

// TestQueueDrainKeepsOrderAcrossCompaction: the worker takes payloads by
// moving an index and compacts the slice once most of it is taken; every
// payload is sent once, oldest first, across compactions and publishes
// made while it drains.
func TestQueueDrainKeepsOrderAcrossCompaction(t *testing.T) {
	s := &scripted{}
	q := NewQueue("t", s, QueueOptions{BatchCount: 7, FlushInterval: time.Millisecond}, nil)
	const pre, during = 2500, 1500
	for i := range pre {
		q.Publish(&Payload{ID: strconv.Itoa(i)})
	}
	run(t, q)
	for i := pre; i < pre+during; i++ {
		q.Publish(&Payload{ID: strconv.Itoa(i)})
	}
	wait(t, "every payload sent", func() bool { return q.Stats().Sent == pre+during })
	batches, _ := s.sent()
	next := 0
	for _, b := range batches {
		for _, id := range b {
			if id != strconv.Itoa(next) {
				t.Fatalf("payload %s sent where %d was due", id, next)
			}
			next++
		}
	}
	if st := q.Stats(); next != pre+during || st.Depth != 0 || st.Dropped != 0 || q.held.Load() != 0 {
		t.Errorf("sent %d in order, stats %+v, %d bytes still counted as held", next, st, q.held.Load())
	}
}

// returns runs f and fails the test if it has not returned within a
// minute: for calls that must not wait on something that never answers.
func returns(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s: still waiting after a minute", what)
	}
}
