// Package reqctx is a cancellable context.Context for the request path
// that costs no allocation of its own: the lean server's request context
// and the gateway's upstream attempt (which is also the attempt's
// watchdog) are Ctx values embedded in objects the request allocates
// anyway, and the lean upstream client registers with an attempt's own
// slots (AfterFunc) instead of context.AfterFunc.
//
// A Ctx behaves as the context of context.WithCancel(parent) for every
// caller: Done, Err, Cause, Value, Deadline, and the children and
// AfterFunc registrations of the context package (a Ctx has an AfterFunc
// method, which the context package uses for children it makes of a Ctx:
// they are cancelled before Cancel returns, as a cancelCtx's are). What it
// saves, against context.WithCancel and context.AfterFunc: the cancelCtx
// and its cancel closure, the parent's Done channel and children map (a
// Ctx child registers in its Ctx parent's slots), the Done channel of a
// context nobody waits on (made only when Done is called), and
// context.AfterFunc's afterFuncCtx, its channel and stop closure.
package reqctx

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Ctx is a cancellable context. The zero value is not usable: Init (or
// InitLazy) it with its parent first. A Ctx must not be copied after Init.
type Ctx struct {
	parent     context.Context
	parentDone <-chan struct{} // the parent's Done; nil when it never ends
	up         Stop            // the registration with the parent

	ended atomic.Bool
	done  atomic.Value // chan struct{}, made by the first Done

	mu     sync.Mutex
	err    error
	cause  error
	seq    uint32
	hooks  [2]hook // the registrations; more past two
	more   []hook
	shadow context.Context // for context.Cause, made when asked after the end
}

// hook is one registration: f runs once the Ctx ends, in its own
// goroutine unless sync, or the child is cancelled.
type hook struct {
	id    uint32 // 0: a free slot
	sync  bool
	f     func()
	child *Ctx
}

// closedchan is the Done of a Ctx that ended before Done was asked.
var closedchan = make(chan struct{})

func init() { close(closedchan) }

// Init makes c a child of parent, as context.WithCancel(parent): it ends
// when parent does (with parent's Err and Cause), or when cancelled. A Ctx
// parent registers c in its slots (no allocation); any other parent that
// can end is registered with through context.AfterFunc.
func (c *Ctx) Init(parent context.Context) {
	c.parent = parent
	if p, ok := parent.(*Ctx); ok {
		c.setUp(p.add(hook{child: c}))
		return
	}
	c.parentDone = parent.Done()
	if c.parentDone == nil {
		return
	}
	if parent.Err() != nil {
		c.Propagate()
		return
	}
	c.setUp(Stop{f: context.AfterFunc(parent, c.Propagate)})
}

// setUp keeps the registration with the parent, which end stops (if c
// ended meanwhile, the parent has ended: there is nothing to stop).
func (c *Ctx) setUp(s Stop) {
	c.mu.Lock()
	c.up = s
	c.mu.Unlock()
}

// InitLazy is Init for a parent whose end the caller reports by calling
// Propagate (the lean server watches its base context once per
// connection, not once a request). Until then Err, Done and Cause look at
// the parent themselves: a Ctx whose parent has ended reports it at once,
// as a child of context.WithCancel would; only a goroutine already
// waiting on Done waits for Propagate.
func (c *Ctx) InitLazy(parent context.Context) {
	c.parent = parent
	if p, ok := parent.(*Ctx); ok {
		c.setUp(p.add(hook{child: c}))
		return
	}
	c.parentDone = parent.Done()
	if c.parentDone != nil && parent.Err() != nil {
		c.Propagate()
	}
}

// Propagate ends c as its parent has ended, if it has.
func (c *Ctx) Propagate() {
	if c.ended.Load() || c.parent == nil {
		return
	}
	if err := c.parent.Err(); err != nil {
		c.end(err, context.Cause(c.parent))
	}
}

// sync ends c if its parent has ended and Propagate has not run yet.
func (c *Ctx) sync() {
	if c.parentDone != nil && !c.ended.Load() {
		select {
		case <-c.parentDone:
			c.Propagate()
		default:
		}
	}
}

// Cancel ends c with context.Canceled, as a context.CancelFunc.
func (c *Ctx) Cancel() { c.end(context.Canceled, context.Canceled) }

// CancelCause ends c with context.Canceled and cause (context.Canceled
// when nil), as a context.CancelCauseFunc.
func (c *Ctx) CancelCause(cause error) {
	if cause == nil {
		cause = context.Canceled
	}
	c.end(context.Canceled, cause)
}

// Ended says whether c has ended, without looking at its parent.
func (c *Ctx) Ended() bool { return c.ended.Load() }

func (c *Ctx) end(err, cause error) {
	c.mu.Lock()
	if c.ended.Load() {
		c.mu.Unlock()
		return
	}
	c.err, c.cause = err, cause
	c.ended.Store(true)
	if d, _ := c.done.Load().(chan struct{}); d != nil {
		close(d)
	}
	hs := c.hooks
	c.hooks = [2]hook{}
	more := c.more
	c.more = nil
	up := c.up
	c.mu.Unlock()
	up.Stop() // as a cancelCtx leaves its parent's children
	for i := range hs {
		fire(hs[i], err, cause)
	}
	for i := range more {
		fire(more[i], err, cause)
	}
}

func fire(h hook, err, cause error) {
	switch {
	case h.id == 0:
	case h.child != nil:
		h.child.end(err, cause)
	case h.sync:
		h.f()
	default:
		go h.f()
	}
}

// add registers h; if c has ended it runs now (a child ends, f starts).
func (c *Ctx) add(h hook) Stop {
	c.mu.Lock()
	if c.ended.Load() {
		err, cause := c.err, c.cause
		c.mu.Unlock()
		h.id = 1
		if h.sync {
			// The context package registers holding its child's lock
			// (propagateCancel, when c ended after its look at Done):
			// run synchronously, f would wait for that lock for ever.
			h.sync = false
		}
		fire(h, err, cause)
		return Stop{c: c} // id 0: stops nothing
	}
	c.seq++
	if c.seq == 0 {
		c.seq = 1
	}
	h.id = c.seq
	switch {
	case c.hooks[0].id == 0:
		c.hooks[0] = h
	case c.hooks[1].id == 0:
		c.hooks[1] = h
	default:
		c.more = append(c.more, h)
	}
	c.mu.Unlock()
	return Stop{c: c, id: h.id}
}

// remove unregisters the hook id; false if it was not registered (it ran,
// or was removed already).
func (c *Ctx) remove(id uint32) bool {
	if id == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.hooks {
		if c.hooks[i].id == id {
			c.hooks[i] = hook{}
			return true
		}
	}
	for i := range c.more {
		if c.more[i].id == id {
			c.more = append(c.more[:i], c.more[i+1:]...)
			return true
		}
	}
	return false
}

// Stop is a registration made by AfterFunc or Init; its Stop is the stop
// function of context.AfterFunc.
type Stop struct {
	c  *Ctx
	id uint32
	f  func() bool
}

// Stop stops the registration's function from running. It returns true if
// it stopped it, or if there was nothing to stop (the context cannot end);
// false if the function has already been started or stopped.
func (s Stop) Stop() bool {
	switch {
	case s.c != nil:
		return s.c.remove(s.id)
	case s.f != nil:
		return s.f()
	}
	return true
}

// AfterFunc is context.AfterFunc(ctx, f) (f runs in its own goroutine
// once ctx ends, unless stopped first), without allocating when ctx is a
// *Ctx. A ctx that cannot end (Done nil) registers nothing.
func AfterFunc(ctx context.Context, f func()) Stop {
	if c, ok := ctx.(*Ctx); ok {
		return c.add(hook{f: f})
	}
	if ctx.Done() == nil {
		return Stop{}
	}
	return Stop{f: context.AfterFunc(ctx, f)}
}

// AfterFunc is the method the context package uses for the children it
// makes of c (context.WithCancel(c), context.AfterFunc(c, f)...): f runs
// when c ends, before Cancel returns, as a cancelCtx cancels its children;
// registered once c has ended, f runs at once in its own goroutine (the
// context package calls this holding its child's lock, which f takes).
// Use the package's AfterFunc for a function of one's own.
func (c *Ctx) AfterFunc(f func()) func() bool {
	return c.add(hook{f: f, sync: true}).Stop
}

// Deadline is the parent's.
func (c *Ctx) Deadline() (time.Time, bool) { return c.parent.Deadline() }

// Done is made when first asked for.
func (c *Ctx) Done() <-chan struct{} {
	c.sync()
	if d, _ := c.done.Load().(chan struct{}); d != nil {
		return d
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d, _ := c.done.Load().(chan struct{})
	if d == nil {
		if c.ended.Load() {
			d = closedchan
		} else {
			d = make(chan struct{})
		}
		c.done.Store(d)
	}
	return d
}

// Err is nil until c ends, then context.Canceled or its parent's Err.
func (c *Ctx) Err() error {
	if !c.ended.Load() {
		c.sync()
		if !c.ended.Load() {
			return nil
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Value is the parent's, except the context package's own key for the
// nearest cancelCtx. context.Cause asks for it once the context has ended:
// the answer is then a cancelCtx ended with c's cause (made when first
// asked). Before c ends the answer is nil, so that the context package
// registers its children of c through c's AfterFunc, never with an
// ancestor's cancelCtx, which would not see c end.
func (c *Ctx) Value(key any) any {
	if key == cancelCtxKey && cancelCtxKey != nil {
		c.sync()
		if !c.ended.Load() {
			return nil
		}
		c.mu.Lock()
		if c.shadow == nil {
			var stop context.CancelCauseFunc
			c.shadow, stop = context.WithCancelCause(context.Background())
			stop(c.cause)
		}
		sh := c.shadow
		c.mu.Unlock()
		return sh.Value(key)
	}
	return c.parent.Value(key)
}

func (c *Ctx) String() string { return "reqctx.Ctx" }

// cancelCtxKey is the key context.Cause asks a context's Value for (the
// context package's &cancelCtxKey), found by asking it once.
var cancelCtxKey any

type keyProbe struct{ context.Context }

func (keyProbe) Err() error { return context.Canceled }
func (keyProbe) Value(key any) any {
	if _, ok := key.(*int); ok && cancelCtxKey == nil {
		cancelCtxKey = key
	}
	return nil
}

func init() { _ = context.Cause(keyProbe{context.Background()}) }
