package reqctx

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestChildrenMadeWhileCtxEnds: context.WithCancel and context.AfterFunc
// on a Ctx that ends meanwhile (the net/http transport's WithCancelCause
// on an attempt the watchdog cancels; a hook's WithTimeout on a request
// whose client goes). The context package registers with the Ctx's
// AfterFunc holding its child's lock: when the Ctx had ended after the
// package's look at Done, a function run synchronously waited for that
// lock for ever.
func TestChildrenMadeWhileCtxEnds(t *testing.T) {
	done := make(chan struct{})
	var ran atomic.Int64
	const n = 100000
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			c := &Ctx{}
			c.Init(context.Background())
			go c.Cancel()
			child, cancel := context.WithCancel(c)
			if i%2 == 0 {
				context.AfterFunc(c, func() { ran.Add(1) })
			}
			<-child.Done() // the child ends with its parent
			cancel()
		}
	}()
	wait(t, done, "context.WithCancel / AfterFunc on a Ctx ending meanwhile")
	deadline := time.Now().Add(time.Minute)
	for ran.Load() != n/2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d AfterFuncs ran", ran.Load(), n/2)
		}
		time.Sleep(time.Millisecond)
	}
}
