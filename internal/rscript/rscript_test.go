package rscript

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var incr = New(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)

// realRedis is the Redis of TOLLGATE_TEST_REDIS_URL, its host:port, and a
// key of this test's own.
func realRedis(t *testing.T) (string, string) {
	url := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if url == "" {
		t.Skip("TOLLGATE_TEST_REDIS_URL is not set: no Redis to test against (.ci/run sets it)")
	}
	c, err := Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("TOLLGATE_TEST_REDIS_URL is set but Redis does not answer: %v", err)
	}
	return c.Options().Addr, fmt.Sprintf("rscript-test:%s:%d", t.Name(), time.Now().UnixNano())
}

func runnerAt(t *testing.T, addr string) *Runner {
	c, err := Dial("redis://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRunner(c, Options{})
	// The first ping may go through a proxy that never answers: the
	// verdict does not matter to these tests, so do not wait for it long.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// proxy forwards to target, holding back by delay each reply that follows
// a script call on the connection (the handshake passes at once); with
// delay < 0 it never replies (a Redis that accepts and hangs).
func proxy(t *testing.T, target string, delay time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { in.Close() })
			if delay < 0 {
				go func() { _, _ = io.Copy(io.Discard, in) }()
				continue
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			t.Cleanup(func() { out.Close() })
			var scripted atomic.Bool
			go func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := in.Read(buf)
					if n > 0 {
						if bytes.Contains(bytes.ToLower(buf[:n]), []byte("eval")) {
							scripted.Store(true)
						}
						if _, werr := out.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := out.Read(buf)
					if n > 0 {
						if scripted.Load() {
							time.Sleep(delay)
						}
						if _, werr := in.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestRunSharesAndCounts: concurrent calls all run, each once, and a
// script unknown to Redis (its cache flushed) is sent in full.
func TestRunSharesAndCounts(t *testing.T) {
	addr, key := realRedis(t)
	r := runnerAt(t, addr)
	ctx := context.Background()
	if err := r.c.Load().ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	defer r.c.Load().Del(ctx, key)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Run(ctx, incr, []string{key}, 1); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n, err := r.c.Load().Get(ctx, key).Int(); err != nil || n != 50 {
		t.Fatalf("50 calls counted %d (%v)", n, err)
	}
	v, err := Int64s(r.Run(ctx, New(`return {1, 2, 3}`), nil))
	if err != nil || len(v) != 3 || v[2] != 3 {
		t.Fatalf("array reply: %v %v", v, err)
	}
}

// TestDeadlineIsHonoured: against a Redis that accepts and never answers,
// every caller gets its error when its own deadline passes, not when the
// client's timeouts are through. The client's read timeout is set to an
// hour, so a caller that waited for it instead of its own 200 ms deadline
// would not return in the (generous) minute this test waits.
func TestDeadlineIsHonoured(t *testing.T) {
	// A Redis that accepts and never answers; its connections are closed
	// before the runner's (cleanups run last first), so that closing the
	// client does not wait an hour for the reads it is draining.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	r := runnerAt(t, ln.Addr().String())
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	r.c.Load().Options().ReadTimeout = time.Hour
	r.c.Load().Options().WriteTimeout = time.Hour
	const callers = 20
	errs := make(chan error, callers)
	for range callers {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err := r.Run(ctx, incr, []string{"k"}, 1)
			errs <- err
		}()
	}
	bound := time.After(time.Minute)
	for i := range callers {
		select {
		case err := <-errs:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err %v, want the deadline", err)
			}
		case <-bound:
			t.Fatalf("%d of %d callers with a 200 ms deadline were still waiting after a minute", callers-i, callers)
		}
	}
}

// TestNoRetry: a reply slower than the read timeout fails the call, and
// the script has run exactly once (a retry would run it again).
func TestNoRetry(t *testing.T) {
	addr, key := realRedis(t)
	slow := runnerAt(t, proxy(t, addr, 700*time.Millisecond))
	direct := runnerAt(t, addr)
	ctx := context.Background()
	defer direct.c.Load().Del(ctx, key)
	_, err := slow.Run(ctx, incr, []string{key}, 1)
	if err == nil {
		t.Fatal("a reply past the read timeout succeeded")
	}
	time.Sleep(3 * time.Second) // let any retry land
	n, err := direct.c.Load().Get(ctx, key).Int()
	if err != nil || n != 1 {
		t.Fatalf("the script ran %d times (%v), want once", n, err)
	}
}

// TestFirstCallsLoadOnce: a burst of first calls to a script Redis does not
// have makes one SCRIPT LOAD, then EVALSHAs: no NOSCRIPT answered, and no
// EVAL of the whole source per caller (as MONITOR shows).
func TestFirstCallsLoadOnce(t *testing.T) {
	addr, key := realRedis(t)
	mark := fmt.Sprintf("load-once-%d", time.Now().UnixNano()) // a script no Redis has
	s := New("-- " + mark + "\nreturn redis.call('INCR', KEYS[1])")
	r := runnerAt(t, addr)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "MONITOR\r\n")
	lines := make(chan string, 1<<12)
	go func() {
		b := make([]byte, 64<<10)
		var rest []byte
		for {
			n, err := conn.Read(b)
			if err != nil {
				close(lines)
				return
			}
			rest = append(rest, b[:n]...)
			for {
				i := bytes.Index(rest, []byte("\r\n"))
				if i < 0 {
					break
				}
				select {
				case lines <- string(rest[:i]):
				default:
				}
				rest = rest[i+2:]
			}
		}
	}()
	<-lines // +OK
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Run(context.Background(), s, []string{key}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	var loads, evals, shas int
	deadline := time.After(30 * time.Second)
	for shas < 50 {
		select {
		case l := <-lines:
			switch {
			case bytes.Contains([]byte(l), []byte(`"script" "load"`)) && bytes.Contains([]byte(l), []byte(mark)):
				loads++
			case bytes.Contains([]byte(l), []byte(`"eval"`)) && bytes.Contains([]byte(l), []byte(mark)):
				evals++
			case bytes.Contains([]byte(l), []byte(`"evalsha" "`+s.hash+`"`)):
				shas++
			}
		case <-deadline:
			t.Fatalf("MONITOR showed %d EVALSHA of 50", shas)
		}
	}
	if loads != 1 || evals != 0 {
		t.Fatalf("50 first calls made %d SCRIPT LOAD and %d EVAL, want 1 and 0", loads, evals)
	}
}

// TestQueueRunsInOrderAndWaitsLater: a call queued (Queue) runs before
// every call made after it, though nobody waits for it yet, and Wait then
// reads its own reply; a Wait past its deadline is an *AbandonedError
// whose Final tells how the call ended.
func TestQueueRunsInOrderAndWaitsLater(t *testing.T) {
	addr, key := realRedis(t)
	r := runnerAt(t, addr)
	ctx := context.Background()
	q := r.Queue(incr, []string{key}, 5)
	v, err := r.Run(ctx, incr, []string{key}, 1)
	if err != nil || v != int64(6) {
		t.Fatalf("the call after the queued one got %v, %v: want 6 (it runs after)", v, err)
	}
	if v, err := q.Wait(ctx); err != nil || v != int64(5) {
		t.Fatalf("the queued call's reply %v, %v: want 5", v, err)
	}

	// A Redis slower than the wait's deadline: the call is abandoned, and
	// still runs.
	slow := runnerAt(t, proxy(t, addr, 300*time.Millisecond))
	q = slow.Queue(incr, []string{key}, 10) // loads the script first (its reply delayed too)
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = q.Wait(wctx)
	var ab *AbandonedError
	if !errors.As(err, &ab) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a wait past its deadline returned %v, want an *AbandonedError", err)
	}
	if err := Final(err); err != nil {
		t.Fatalf("the abandoned call ended with %v, want it run", err)
	}
	if v, err := r.Run(ctx, incr, []string{key}, 0); err != nil || v != int64(16) {
		t.Fatalf("after the abandoned call the key is %v, %v: want 16", v, err)
	}
}
