package reqctx

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

type key struct{}

// wait waits for ch to be closed, with a generous bound.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Minute):
		t.Fatalf("%s: not done after a minute", what)
	}
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestCtxAsWithCancel: a Ctx answers every question as the context of
// context.WithCancel(parent) does, for each way of ending.
func TestCtxAsWithCancel(t *testing.T) {
	why := errors.New("why")
	type ending struct {
		name string
		end  func(cancel func(), cancelCause func(error), parentCancel func(error))
		lazy bool
	}
	endings := []ending{
		{"cancel", func(c func(), _ func(error), _ func(error)) { c() }, false},
		{"cancel cause", func(_ func(), c func(error), _ func(error)) { c(why) }, false},
		{"cancel nil cause", func(_ func(), c func(error), _ func(error)) { c(nil) }, false},
		{"parent", func(_ func(), _ func(error), p func(error)) { p(why) }, false},
		{"parent, lazy", func(_ func(), _ func(error), p func(error)) { p(why) }, true},
		{"parent no cause", func(_ func(), _ func(error), p func(error)) { p(nil) }, false},
	}
	for _, e := range endings {
		t.Run(e.name, func(t *testing.T) {
			dl := time.Now().Add(time.Hour)
			base, stopBase := context.WithDeadline(context.WithValue(context.Background(), key{}, "v"), dl)
			defer stopBase()
			p1, cancelP1 := context.WithCancelCause(base)
			p2, cancelP2 := context.WithCancelCause(base)
			std, stdCancel := context.WithCancelCause(p1)
			var c Ctx
			if e.lazy {
				c.InitLazy(p2)
			} else {
				c.Init(p2)
			}
			// Children made by the context package and AfterFuncs, before the end.
			stdChild, stopStdChild := context.WithCancel(std)
			defer stopStdChild()
			ourChild, stopOurChild := context.WithCancel(&c)
			defer stopOurChild()
			var sub Ctx
			sub.Init(&c)
			ran := make(chan struct{})
			context.AfterFunc(&c, func() { close(ran) })
			ran2 := make(chan struct{})
			AfterFunc(&c, func() { close(ran2) })
			stopped := atomic.Bool{}
			s := AfterFunc(&c, func() { stopped.Store(true) })
			if !s.Stop() {
				t.Fatal("Stop before the end: false")
			}
			if c.Err() != nil || isDone(c.Done()) || context.Cause(&c) != nil {
				t.Fatal("ended before its end")
			}
			if v := c.Value(key{}); v != "v" {
				t.Fatalf("Value %v", v)
			}
			if d, ok := c.Deadline(); !ok || !d.Equal(dl) {
				t.Fatalf("Deadline %v %v", d, ok)
			}
			e.end(func() { stdCancel(nil) }, stdCancel, func(err error) { cancelP1(err) })
			e.end(c.Cancel, c.CancelCause, func(err error) { cancelP2(err) })
			if !e.lazy {
				wait(t, c.Done(), "Done")
			}
			wait(t, std.Done(), "std Done")
			// Err and Cause: at once for the lazy one too.
			if c.Err() != std.Err() {
				t.Fatalf("Err %v, WithCancel's %v", c.Err(), std.Err())
			}
			if got, want := context.Cause(&c), context.Cause(std); got != want {
				t.Fatalf("Cause %v, WithCancel's %v", got, want)
			}
			wait(t, c.Done(), "Done")
			wait(t, ran, "context.AfterFunc")
			wait(t, ran2, "AfterFunc")
			wait(t, sub.Done(), "Ctx child")
			wait(t, ourChild.Done(), "WithCancel child")
			wait(t, stdChild.Done(), "std child")
			if ourChild.Err() != stdChild.Err() || context.Cause(ourChild) != context.Cause(stdChild) {
				t.Fatalf("child: %v %v, WithCancel's child: %v %v", ourChild.Err(), context.Cause(ourChild), stdChild.Err(), context.Cause(stdChild))
			}
			if sub.Err() != stdChild.Err() || context.Cause(&sub) != context.Cause(stdChild) {
				t.Fatalf("Ctx child: %v %v, WithCancel's child: %v %v", sub.Err(), context.Cause(&sub), stdChild.Err(), context.Cause(stdChild))
			}
			if stopped.Load() {
				t.Fatal("a stopped AfterFunc ran")
			}
			// After the end: registrations run at once, children end at once.
			late := make(chan struct{})
			if AfterFunc(&c, func() { close(late) }).Stop() {
				t.Fatal("Stop after the end: true")
			}
			wait(t, late, "AfterFunc after the end")
			var sub2 Ctx
			sub2.Init(&c)
			lateStd, stop := context.WithCancel(&c)
			defer stop()
			if sub2.Err() == nil || lateStd.Err() == nil {
				t.Fatal("a child made after the end is not ended")
			}
			// Ending again changes nothing.
			c.CancelCause(errors.New("later"))
			if context.Cause(&c) != context.Cause(std) {
				t.Fatal("a second end changed the cause")
			}
		})
	}
}

// TestChildrenEndBeforeCancelReturns: a Ctx's Ctx children and the
// context package's children of it have ended when Cancel returns, as a
// cancelCtx's children have.
func TestChildrenEndBeforeCancelReturns(t *testing.T) {
	var c, sub Ctx
	c.InitLazy(context.Background())
	sub.Init(&c)
	std, stop := context.WithTimeout(&c, time.Hour)
	defer stop()
	c.Cancel()
	if sub.Err() == nil || std.Err() == nil {
		t.Fatalf("children not ended when Cancel returned: %v %v", sub.Err(), std.Err())
	}
}

// TestChildLeavesParent: a child that ends leaves its parent's slots, as
// a cancelCtx leaves its parent's children; an attempt after another
// reuses them.
func TestChildLeavesParent(t *testing.T) {
	var c Ctx
	c.InitLazy(context.Background())
	for range 100 {
		var sub Ctx
		sub.Init(&c)
		s := AfterFunc(&sub, func() {})
		s.Stop()
		sub.Cancel()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hooks[0].id != 0 || c.hooks[1].id != 0 || len(c.more) != 0 {
		t.Fatalf("slots left: %+v %d", c.hooks, len(c.more))
	}
}

// TestNoAllocations pins what the request path saves: a request context
// under a base that can end (InitLazy), an attempt in it (Init), the lean
// client's registration in the attempt (AfterFunc, Stop), the ends. With
// context.WithCancel, WithCancel and context.AfterFunc this is 11
// allocations.
func TestNoAllocations(t *testing.T) {
	base, stop := context.WithCancel(context.Background())
	defer stop()
	type exchange struct{ req, at Ctx }
	f := func() {}
	var ex *exchange
	n := testing.AllocsPerRun(200, func() {
		ex = new(exchange) // the allocation the request makes anyway
		ex.req.InitLazy(base)
		ex.at.Init(&ex.req)
		s := AfterFunc(&ex.at, f)
		if ex.at.Err() != nil || !s.Stop() {
			panic("ended")
		}
		ex.at.Cancel()
		ex.req.Cancel()
	})
	if n != 1 {
		t.Fatalf("%v allocations, want 1 (the exchange)", n)
	}
	old := testing.AllocsPerRun(200, func() {
		req, c1 := context.WithCancel(base)
		at, c2 := context.WithCancel(req)
		s := context.AfterFunc(at, f)
		s()
		c2()
		c1()
	})
	t.Logf("context.WithCancel, WithCancel, AfterFunc: %v allocations", old)
}

// TestCauseKeyFound fails when the context package no longer asks
// Value for a *int key in context.Cause (a Go release that changes its
// internals): without the key, context.Cause of an ended Ctx reports
// Canceled or an ancestor's cause instead of the Ctx's own. Children are
// still cancelled then; this test makes the lost cause a failing build
// step rather than a silent difference.
func TestCauseKeyFound(t *testing.T) {
	if cancelCtxKey == nil {
		t.Fatal("the context package's cancelCtx key was not found by the probe: context.Cause of a reqctx.Ctx would lose its cause on this Go release")
	}
	var c Ctx
	c.Init(context.Background())
	cause := errors.New("the request's own cause")
	c.CancelCause(cause)
	if got := context.Cause(&c); got != cause {
		t.Fatalf("context.Cause(ended Ctx) = %v, want its own cause", got)
	}
}
