// Package lifecycle starts and stops a process's actors together, as
// oklog's run.Group does for Prometheus, but in order: each actor starts
// after the ones added before it, which it may depend on, and they stop in
// the reverse order, each one waited for before the next is told to stop.
// So an actor that uses another (the HTTP server books spend on the spend
// writer) is gone before the one it uses stops.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Actor is one long-running part of a process.
type Actor struct {
	// Name names the actor in the errors it returns.
	Name string
	// Start, when set, readies the actor (a ping, a listener) before the
	// next actor starts. An error stops the actors already running, and
	// the group returns it. ctx is the group's: it ends when the group is
	// told to stop, which Start should heed if it waits.
	Start func(ctx context.Context) error
	// Run does the actor's work until ctx is cancelled, then finishes what
	// it holds (drains, flushes, closes) and returns. A Run that returns
	// before its turn to stop stops the group. Run is required.
	Run func(ctx context.Context) error
}

// Group is a set of actors started and stopped together. The zero value
// is an empty group.
type Group struct {
	actors []Actor
}

// Add appends a to the group: it starts after, and stops before, every
// actor added earlier.
func (g *Group) Add(a Actor) {
	if a.Run == nil {
		panic("lifecycle: actor " + a.Name + " has no Run")
	}
	g.actors = append(g.actors, a)
}

// Names lists the actors in start order.
func (g *Group) Names() []string {
	out := make([]string, len(g.actors))
	for i, a := range g.actors {
		out[i] = a.Name
	}
	return out
}

type running struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Run starts the actors in order, each Start returning before the next
// actor starts, and keeps them running until ctx ends or one of them
// returns on its own. Then it stops them in reverse order: it cancels one
// actor's context and waits for its Run to return before stopping the
// next. A start that fails, or a ctx that ends while the group is still
// starting, stops the actors already running the same way and starts no
// more. Run returns every error the actors reported (joined), nil when
// none did.
func (g *Group) Run(ctx context.Context) error {
	var errs []error
	var started []*running
	ended := make(chan struct{}, len(g.actors)) // a Run returned
	for _, a := range g.actors {
		if ctx.Err() != nil || len(ended) > 0 {
			break // told to stop while starting, or an actor already ended
		}
		if a.Start != nil {
			if err := a.Start(ctx); err != nil {
				errs = append(errs, fmt.Errorf("%s: start: %w", a.Name, err))
				break
			}
		}
		// An actor stops when its turn comes, not when ctx ends.
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r := &running{name: a.Name, cancel: cancel, done: make(chan struct{})}
		started = append(started, r)
		go func() {
			defer close(r.done)
			r.err = a.Run(rctx)
			ended <- struct{}{}
		}()
	}
	if len(errs) == 0 && len(started) == len(g.actors) {
		select {
		case <-ctx.Done():
		case <-ended:
		}
	}
	for i := len(started) - 1; i >= 0; i-- {
		r := started[i]
		r.cancel()
		<-r.done
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.name, r.err))
		}
	}
	return errors.Join(errs...)
}

// Retry calls try until it reports done or ctx ends, waiting every between
// calls. At ctx's end it returns try's last error, else ctx's (a drain at
// shutdown: flush until nothing is owed, or say why it was not).
func Retry(ctx context.Context, every time.Duration, try func() (done bool, err error)) error {
	for {
		done, err := try()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-time.After(every):
		}
	}
}

// Every calls f every interval until ctx ends: the Run of an actor that
// works on a clock (a lease renewal, a sweep). The first call comes an
// interval after the start; a call that overruns the interval delays the
// next, and the ticks it overran are dropped, not queued (time.Ticker).
// No call starts once ctx has ended, even with a tick ready.
func Every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ctx.Err() != nil {
			return
		}
		f()
	}
}
