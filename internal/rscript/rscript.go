// Package rscript runs Tollgate's Lua scripts on Redis. Concurrent calls
// share round trips (go-redis's deferred AutoPipeliner puts the commands
// waiting at one moment into one pipeline), yet each caller waits no longer
// than its own context allows, and every command runs at most once.
//
// The pipeliner's blocking face would wait for a batch whatever the caller's
// deadline, and go-redis retries a failed pipeline as a whole: neither is
// acceptable for scripts that take budget and rate-limit slots. Hence the
// deferred face, waited on with the caller's context, and a client dialled
// with retries off (see Dial).
package rscript

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Script is a Lua script and its SHA1, as Redis names it.
type Script struct {
	src, hash string
}

// New returns the script src.
func New(src string) *Script {
	h := sha1.Sum([]byte(src))
	return &Script{src: src, hash: hex.EncodeToString(h[:])}
}

// Runner runs scripts, and the few plain commands that must stay ordered
// after them, on one client. It also keeps Redis's health for everything
// that uses it (rate limits and budgets): a call that Redis did not answer
// marks it degraded (Degrade), callers then fall back to their in-process
// state without asking it (Degraded), and Watch pings a degraded Redis
// until it answers again.
type Runner struct {
	c          atomic.Pointer[redis.Client]
	dial       *redis.Options // Start makes the client (Open)
	ap         atomic.Pointer[redis.AutoPipeliner]
	log        *slog.Logger
	probeEvery time.Duration
	onChange   func(degraded bool)
	degraded   atomic.Bool
	wake       chan struct{} // Degrade tells Watch to probe

	// Hysteresis (see Degrade): calls late since the last answer, whether a check
	// ping is out, when Redis last came back, and how long Watch waits
	// before its next probe (doubled when Redis goes away again soon
	// after coming back).
	late      atomic.Int64
	checking  atomic.Bool
	upSince   atomic.Int64 // unix ns of the last Recover
	probeWait atomic.Int64 // ns

	loaded sync.Map // script hash -> *loading (see load)
}

// Options configure a Runner.
type Options struct {
	// Log reports Redis going away and coming back (default slog.Default()).
	Log *slog.Logger
	// ProbeEvery is how often a degraded runner pings Redis (default 1 s).
	ProbeEvery time.Duration
	// OnChange, when set, is told when Redis is marked degraded (true) and
	// when it answers again (false).
	OnChange func(degraded bool)
	// ReadTimeout bounds the wait for a reply on the connection (Open;
	// default 500 ms, see Dial). Tests that hold replies back set it long.
	ReadTimeout time.Duration
}

// MaxQueued bounds the commands waiting for Redis; past it a call fails at
// once (so that a stalled Redis makes callers fall back instead of queueing).
const MaxQueued = 8192

// ErrNotStarted is the error of a call made before Start. NotRun reports
// it: the command was never sent.
var ErrNotStarted = errors.New("redis: runner not started")

// NewRunner returns a runner on c. No call runs until Start.
func NewRunner(c *redis.Client, opts Options) *Runner {
	r := newRunner(opts)
	r.c.Store(c)
	return r
}

// Open returns a runner for the Redis at url (see Dial), after checking
// the url. Nothing is made or dialled until Start (go-redis starts
// goroutines as soon as a client is made).
func Open(url string, opts Options) (*Runner, error) {
	o, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	if opts.ReadTimeout > 0 {
		o.ReadTimeout = opts.ReadTimeout
	}
	r := newRunner(opts)
	r.dial = o
	return r, nil
}

func newRunner(opts Options) *Runner {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.ProbeEvery <= 0 {
		opts.ProbeEvery = time.Second
	}
	return &Runner{log: opts.Log, probeEvery: opts.ProbeEvery, onChange: opts.OnChange, wake: make(chan struct{}, 1)}
}

// startPing bounds Start's wait for Redis's first answer.
const startPing = 2 * time.Second

// Start opens the pipeline the calls share, and asks Redis whether it
// answers: one that does not leaves the runner degraded (callers fall back
// until Watch hears from it), which is not an error. Calling it again does
// nothing.
func (r *Runner) Start(ctx context.Context) error {
	if r.c.Load() == nil {
		r.c.Store(redis.NewClient(r.dial))
	}
	if r.ap.Load() == nil {
		opts := redis.DefaultAutoPipelineOptions()
		opts.MaxQueuedCommands = MaxQueued
		ap, err := r.c.Load().AsyncAutoPipelineWithOptions(opts)
		if err != nil {
			return fmt.Errorf("redis autopipeline: %w", err)
		}
		r.ap.Store(ap)
	}
	pctx, cancel := context.WithTimeout(ctx, startPing)
	defer cancel()
	if err := r.Ping(pctx); err != nil && ctx.Err() == nil { // not a stop while starting
		r.Degrade(err)
	}
	return nil
}

// Degraded reports whether Redis is known not to answer now.
func (r *Runner) Degraded() bool { return r.degraded.Load() }

// checkPing bounds the ping that tells a slow Redis from a dead one.
const checkPing = time.Second

// flapWindow: Redis going away again this soon after coming back doubles
// Watch's wait before it probes again (up to maxProbeWait).
const (
	flapWindow   = 10 * time.Second
	maxProbeWait = 30 * time.Second
)

// Degrade reports a call that got no answer (an error reply is an answer:
// do not call it for one). A connection that failed (refused, reset,
// closed) means Redis is away: the runner is marked degraded at once, and
// callers fall back until Watch hears from Redis again. A call that only
// missed its deadline may mean Redis is slow, which is not the same: the
// runner pings Redis (one ping at a time, for up to checkPing), and marks
// it degraded only if that goes unanswered too. So a Redis that is loaded
// but answering keeps being asked (each call still bounded by its caller's
// deadline, and falling back alone) rather than flipping every replica to
// local counters and back; a hung one is found out within checkPing.
func (r *Runner) Degrade(err error) {
	if r.degraded.Load() {
		return
	}
	if !slow(err) {
		r.markDown(err)
		return
	}
	r.late.Add(1)
	if !r.checking.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer r.checking.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), checkPing)
		perr := r.Ping(ctx)
		cancel()
		if perr != nil {
			r.markDown(fmt.Errorf("%w (and a ping went unanswered: %v)", err, perr))
			return
		}
		r.late.Store(0)
		r.log.Debug("redis is slow but answering: staying on shared counters", "err", err)
	}()
}

// slow reports whether err is a call that ran out of time (its caller's
// deadline, a socket read timeout) rather than one whose connection failed.
func slow(err error) bool {
	var ab *AbandonedError
	var ne net.Error
	return errors.As(err, &ab) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// answered notes a call answered in time: late calls no longer run in a row.
func (r *Runner) answered() {
	if r.late.Load() != 0 {
		r.late.Store(0)
	}
}

func (r *Runner) markDown(err error) {
	if !r.degraded.CompareAndSwap(false, true) {
		return
	}
	wait := time.Duration(r.probeWait.Load())
	if up := r.upSince.Load(); up != 0 && time.Since(time.Unix(0, up)) < flapWindow {
		wait = min(2*wait, max(maxProbeWait, r.probeEvery))
	} else {
		wait = r.probeEvery
	}
	r.probeWait.Store(int64(wait))
	r.log.Warn("redis unreachable: rate limits and budgets fall back to this replica's own counters", "err", err, "next_probe", wait)
	if r.onChange != nil {
		r.onChange(true)
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Watch runs until ctx ends: whenever Redis is degraded it pings it every
// ProbeEvery, and marks it up again when it answers. Redis going away again
// within flapWindow of coming back doubles the wait between probes (up to
// maxProbeWait), so an unstable Redis is not flipped to and fro.
func (r *Runner) Watch(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		r.probe(ctx)
	}
}

func (r *Runner) probe(ctx context.Context) {
	wait := max(time.Duration(r.probeWait.Load()), r.probeEvery)
	t := time.NewTimer(wait)
	defer t.Stop()
	for r.degraded.Load() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(wait)
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := r.Ping(pctx)
		cancel()
		if err == nil {
			r.Recover()
		}
	}
}

// Recover marks Redis as answering again, undoing Degrade: Watch calls it
// when a ping is answered.
func (r *Runner) Recover() {
	if !r.degraded.CompareAndSwap(true, false) {
		return
	}
	r.late.Store(0)
	r.upSince.Store(time.Now().UnixNano())
	r.log.Info("redis is back: rate limits and budgets are shared across replicas again")
	if r.onChange != nil {
		r.onChange(false)
	}
}

// Dial connects to the Redis at url (redis:// or rediss://): short timeouts,
// so that an unreachable server makes callers fall back instead of waiting,
// and no retries, so that no script runs twice.
func Dial(url string) (*redis.Client, error) {
	opts, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(opts), nil
}

func parseURL(url string) (*redis.Options, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis_url: %w", err)
	}
	opts.DialTimeout = time.Second
	opts.ReadTimeout = 500 * time.Millisecond
	opts.WriteTimeout = 500 * time.Millisecond
	opts.MaxRetries = -1   // 0 would mean go-redis's default of 3
	opts.DialerRetries = 1 // one dial per attempt, bounded by DialTimeout
	return opts, nil
}

// Run runs s and returns its reply. A call abandoned at the caller's
// deadline returns an *AbandonedError, whose Wait tells how it ended.
//
// A script this runner has not loaded yet is loaded first (SCRIPT LOAD,
// once however many calls want it at that moment), so that a burst of
// first calls is not a burst of NOSCRIPT errors each followed by an EVAL
// of the whole source.
func (r *Runner) Run(ctx context.Context, s *Script, keys []string, args ...any) (any, error) {
	if err := r.load(ctx, s); err != nil {
		return nil, err
	}
	v, err := r.do(ctx, "evalsha", s.hash, keys, args)
	if isNoScript(err) {
		// Redis lost its script cache (a restart): send the source once.
		r.loaded.Delete(s.hash)
		v, err = r.do(ctx, "eval", s.src, keys, args)
	}
	return v, err
}

// loading is one SCRIPT LOAD that every caller wanting the script waits for.
type loading struct {
	done chan struct{}
	err  error
}

// load makes sure Redis has s (see Run).
func (r *Runner) load(ctx context.Context, s *Script) error {
	l := &loading{done: make(chan struct{})}
	if v, had := r.loaded.LoadOrStore(s.hash, l); had {
		l = v.(*loading)
		select {
		case <-l.done:
		case <-ctx.Done():
			return notLoaded(ctx.Err())
		}
		return l.err
	}
	if _, err := r.Submit(ctx, "script", "load", s.src); err != nil {
		// Not loaded (or not known to be): the next call tries again, and
		// this one fails unsent.
		r.loaded.Delete(s.hash)
		l.err = notLoaded(err)
	}
	close(l.done)
	return l.err
}

// errNotLoaded: a script call was not sent, its script not being loaded
// (NotRun).
var errNotLoaded = errors.New("redis: script not loaded, call not sent")

func notLoaded(err error) error {
	var ab *AbandonedError
	if errors.As(err, &ab) { // the load's, not the call's: the call never went
		err = ab.err
	}
	return fmt.Errorf("%w: %w", errNotLoaded, err)
}

func isNoScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }

func (r *Runner) do(ctx context.Context, verb, script string, keys []string, args []any) (any, error) {
	argv := make([]any, 0, 3+len(keys)+len(args))
	argv = append(argv, verb, script, len(keys))
	for _, k := range keys {
		argv = append(argv, k)
	}
	argv = append(argv, args...)
	return r.Submit(ctx, argv...)
}

// Send queues s in the shared, ordered stream and returns without waiting
// for it: Redis runs it after every call this runner queued before and
// before every call queued after. wait blocks (as long as ctx allows) until
// it has run and returns its error; a script Redis no longer knows is sent
// in full then, out of order.
func (r *Runner) Send(ctx context.Context, s *Script, keys []string, args ...any) (wait func() error) {
	q := r.queue(ctx, s, keys, args)
	return func() error {
		_, err := q.Wait(ctx)
		return err
	}
}

// Queued is a script call queued in the shared, ordered stream (Queue)
// whose reply is read by Wait.
type Queued struct {
	r    *Runner
	s    *Script
	keys []string
	args []any
	cmd  *redis.Cmd
	f    redis.AutoFuture
	err  error // not queued: the call was not sent (NotRun)
}

// Queue queues s in the shared, ordered stream and returns without waiting
// for its reply: Redis runs it after every call this runner queued before
// and before every call queued after. Only a script this runner has not
// loaded yet waits, for its SCRIPT LOAD (at most loadWait); once queued
// the call runs whoever waits for it. Wait reads the reply.
func (r *Runner) Queue(s *Script, keys []string, args ...any) *Queued {
	if l, ok := r.loaded.Load(s.hash); ok {
		select {
		case <-l.(*loading).done:
			return r.queue(context.Background(), s, keys, args)
		default:
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), loadWait)
	defer cancel()
	return r.queue(ctx, s, keys, args)
}

// loadWait bounds Queue's wait for a script's first load.
const loadWait = 2 * time.Second

// queue is Queue with ctx bounding the script's load.
func (r *Runner) queue(ctx context.Context, s *Script, keys []string, args []any) *Queued {
	q := &Queued{r: r, s: s, keys: keys, args: args}
	ap := r.ap.Load()
	if ap == nil {
		q.err = ErrNotStarted
		return q
	}
	// Loaded first (once per script), so that the call is not a NOSCRIPT
	// sent again in full out of order.
	if err := r.load(ctx, s); err != nil {
		q.err = err
		return q
	}
	r.submitQueued(ctx, q, ap)
	return q
}

// submitQueued sends q's EVALSHA into the pipeline ap.
func (r *Runner) submitQueued(ctx context.Context, q *Queued, ap *redis.AutoPipeliner) {
	s, keys, args := q.s, q.keys, q.args
	argv := make([]any, 0, 3+len(keys)+len(args))
	argv = append(argv, "evalsha", s.hash, len(keys))
	for _, k := range keys {
		argv = append(argv, k)
	}
	argv = append(argv, args...)
	q.cmd = redis.NewCmd(ctx, argv...)
	q.f = ap.Submit(ctx, q.cmd)
}

// Wait waits for the reply of a queued call as long as ctx allows and
// returns it as Run would: a call abandoned at ctx's deadline returns an
// *AbandonedError (Final tells how it ended); a script Redis no longer
// knows is sent again in full then, out of order.
func (q *Queued) Wait(ctx context.Context) (any, error) {
	if q.err != nil {
		return nil, q.err
	}
	if err := q.f.WaitContext(ctx); err != nil {
		if ctx.Err() != nil {
			// The call may still run; its reply is not ours to read.
			return nil, &AbandonedError{err: ctx.Err(), f: q.f}
		}
		if isNoScript(err) {
			// Redis lost its script cache (a restart): send the source once.
			q.r.loaded.Delete(q.s.hash)
			return q.r.do(ctx, "eval", q.s.src, q.keys, q.args)
		}
		return nil, err
	}
	q.r.answered()
	return q.cmd.Val(), nil
}

// WaitRan is Wait without the re-send: a script Redis no longer knows
// returns Redis's NOSCRIPT error (NoScript reports it), the call not having
// run, for the caller to queue it again (Requeue) where the ordered stream
// then is. A caller that numbers its calls by their place in the stream
// (the ledger's settles) needs that: Wait's re-send runs out of order.
func (q *Queued) WaitRan(ctx context.Context) (any, error) {
	if q.err != nil {
		return nil, q.err
	}
	if err := q.f.WaitContext(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, &AbandonedError{err: ctx.Err(), f: q.f}
		}
		if isNoScript(err) {
			q.r.loaded.Delete(q.s.hash) // loaded again by Requeue
		}
		return nil, err
	}
	q.r.answered()
	return q.cmd.Val(), nil
}

// Requeue queues q's script call again, as QueueLoaded would (see
// WaitRan); Ready loads its script first.
func (q *Queued) Requeue() *Queued { return q.r.QueueLoaded(q.s, q.keys, q.args...) }

// QueueLoaded is Queue that never waits: a script this runner has not
// loaded (Ready) is not sent, the call failing at once (NotRun). A caller
// queueing under a lock of its own must not hold it through a SCRIPT LOAD
// (up to loadWait against a Redis that does not answer).
func (r *Runner) QueueLoaded(s *Script, keys []string, args ...any) *Queued {
	if l, ok := r.loaded.Load(s.hash); ok {
		select {
		case <-l.(*loading).done:
			// Not load again (it could wait, were the script dropped
			// meanwhile): a script Redis lost is answered NOSCRIPT.
			q := &Queued{r: r, s: s, keys: keys, args: args}
			if ap := r.ap.Load(); ap != nil {
				r.submitQueued(context.Background(), q, ap)
			} else {
				q.err = ErrNotStarted
			}
			return q
		default:
		}
	}
	return &Queued{r: r, s: s, keys: keys, args: args, err: errNotLoaded}
}

// Ready makes sure Redis has q's script (Runner.Ready).
func (q *Queued) Ready() { q.r.Ready(q.s) }

// NoScript reports whether err is Redis's NOSCRIPT answer: the call did
// not run.
func NoScript(err error) bool { return isNoScript(err) }

// Ready makes sure Redis has s, waiting as Queue does (at most loadWait)
// when this runner has not loaded it yet: a caller that queues under a
// lock of its own loads first, outside it.
func (r *Runner) Ready(s *Script) {
	if l, ok := r.loaded.Load(s.hash); ok {
		select {
		case <-l.(*loading).done:
			return
		default:
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), loadWait)
	defer cancel()
	_ = r.load(ctx, s) // a failure is Queue's to report
}

// Submit runs one command in the shared, ordered stream and waits for it as
// long as ctx allows.
func (r *Runner) Submit(ctx context.Context, argv ...any) (any, error) {
	ap := r.ap.Load()
	if ap == nil {
		return nil, ErrNotStarted
	}
	cmd := redis.NewCmd(ctx, argv...)
	f := ap.Submit(ctx, cmd)
	if err := f.WaitContext(ctx); err != nil {
		if ctx.Err() != nil {
			// The command may still run; its reply is not ours to read.
			return nil, &AbandonedError{err: ctx.Err(), f: f}
		}
		return nil, err
	}
	r.answered()
	return cmd.Val(), nil
}

// AbandonedError is a call its caller stopped waiting for at its deadline.
// The command is in the ordered stream and may still run.
type AbandonedError struct {
	err error
	f   redis.AutoFuture
}

func (e *AbandonedError) Error() string { return "redis: " + e.err.Error() }
func (e *AbandonedError) Unwrap() error { return e.err }

// Wait blocks until the command has been sent and answered (or failed),
// and returns its final error.
func (e *AbandonedError) Wait() error { return e.f.Wait() }

// Final is how a call ended: err itself, or, for an abandoned call, the
// error it finally got (waiting for it).
func Final(err error) error {
	var ab *AbandonedError
	if errors.As(err, &ab) {
		return ab.Wait()
	}
	return err
}

// NotRun reports whether a call's final error proves that Redis did not
// run it: it was never queued, never sent, or Redis did not know the
// script. Other errors (a read timeout, a reply lost with its connection, a
// script that failed half way) may come after the script ran.
func NotRun(err error) bool {
	if err == nil {
		return false
	}
	var ne *net.OpError
	return errors.Is(err, redis.ErrAutoPipelineQueueFull) || errors.Is(err, redis.ErrClosed) || errors.Is(err, ErrNotStarted) ||
		errors.Is(err, redis.ErrPoolTimeout) || isNoScript(err) || errors.Is(err, errNotLoaded) ||
		(errors.As(err, &ne) && ne.Op == "dial")
}

// IsReply reports whether err is an error reply from Redis (Redis is up;
// the command or script failed), as opposed to Redis not answering.
func IsReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// Ping checks that Redis answers, on a connection of its own.
func (r *Runner) Ping(ctx context.Context) error {
	c := r.c.Load()
	if c == nil {
		return ErrNotStarted
	}
	return c.Ping(ctx).Err()
}

// Close closes the client, and with it the pipeline; a runner Open made
// and never started has nothing to close.
func (r *Runner) Close() error {
	if c := r.c.Load(); c != nil {
		return c.Close()
	}
	return nil
}

// Int64s reads a script's array-of-integers reply.
func Int64s(v any, err error) ([]int64, error) {
	if err != nil {
		return nil, err
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("redis: reply %T is not an array", v)
	}
	out := make([]int64, len(arr))
	for i, x := range arr {
		n, ok := x.(int64)
		if !ok {
			return nil, fmt.Errorf("redis: reply element %d is %T, not an integer", i, x)
		}
		out[i] = n
	}
	return out, nil
}
