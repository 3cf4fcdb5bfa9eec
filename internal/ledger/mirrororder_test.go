package ledger

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/rscript"
	"github.com/tollgate/tollgate/internal/store"
)

// TestMirrorNoScriptResendInRedisOrder: Redis lost its script cache (a restart)
// with two settles of one key in the pipeline. Both are answered NOSCRIPT
// and sent again in full; the later-numbered one happens to run first. The
// earlier-numbered one then runs last, and its reply has both settles'
// spend: the local view must end at Redis's spend, not stay short of it
// because a higher number was mirrored before.
func TestMirrorNoScriptResendInRedisOrder(t *testing.T) {
	c, r, prefix := redisRig(t, "mirror")
	s := NewShared(r, SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	key := NewAccount(store.KindKey, "k", 0, USD(100))
	ctx := context.Background()
	hold := func() *sharedHold {
		t.Helper()
		h, err := s.Reserve(ctx, []*Account{key}, USD(1))
		if err != nil {
			t.Fatal(err)
		}
		return h.(*sharedHold)
	}
	hold().Settle(USD(1)) // the settle script is loaded
	h1, h2 := hold(), hold()
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	p1 := h1.send(USD(1), true)
	p2 := h2.send(USD(2), true)
	p2.wait() // sent again first: runs first, mirrored
	p1.wait() // sent again after: runs last, its reply has both
	got, err := c.HGet(ctx, "{"+prefix+"}:bud:key:k", "spent").Result()
	if err != nil {
		t.Fatal(err)
	}
	onRedis, _ := strconv.ParseInt(got, 10, 64)
	if onRedis != int64(USD(4)) {
		t.Fatalf("Redis has spend %d, want %d", onRedis, int64(USD(4)))
	}
	if key.Spent() != Amount(onRedis) {
		t.Fatalf("local view %d after both settles were answered, Redis has %d: the last reply Redis ran was dropped", key.Spent(), onRedis)
	}
}

// byteCounter counts what a hung fake Redis is sent.
type byteCounter struct{ n *atomic.Int64 }

func (c byteCounter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

// TestQueueLockNotHeldThroughScriptLoad: the lock that numbers calls in
// the ordered stream (Shared.queue) is taken by every settle and flush. A
// settle whose script must be loaded first (Redis restarted, its cache
// lost) against a Redis that does not answer waits up to 2 s for the
// SCRIPT LOAD: it must not wait holding the lock, or every other settle
// of the replica waits behind it, one after another.
func TestQueueLockNotHeldThroughScriptLoad(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var got atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(byteCounter{&got}, c); c.Close() }()
		}
	}()
	r := rscript.NewRunner(redis.NewClient(&redis.Options{Addr: ln.Addr().String(), MaxRetries: -1}), rscript.Options{Log: slog.New(slog.DiscardHandler)})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Recover()
	s := NewShared(r, SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler)})
	before := got.Load()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = s.queue(settleScript, []string{"{t}:bud:key:k"}, int64(0), "lease", 0)
	}()
	for deadline := time.Now().Add(60 * time.Second); got.Load() == before; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the script load was never sent")
		}
	}
	select {
	case <-done:
		t.Skip("the load ended before the lock could be looked at (a stalled machine)")
	default:
	}
	if !s.order.TryLock() {
		t.Fatal("a settle waiting for its script's load holds the ordered stream's lock: every settle waits behind it")
	}
	s.order.Unlock()
	<-done
}
