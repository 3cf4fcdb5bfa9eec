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
	"net"
	"strings"
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
// after them, on one client.
type Runner struct {
	c  *redis.Client
	ap *redis.AutoPipeliner
}

// MaxQueued bounds the commands waiting for Redis; past it a call fails at
// once (so that a stalled Redis makes callers fall back instead of queueing).
const MaxQueued = 8192

// NewRunner returns a runner on c. Runners on one client share its pipeliner.
func NewRunner(c *redis.Client) (*Runner, error) {
	opts := redis.DefaultAutoPipelineOptions()
	opts.MaxQueuedCommands = MaxQueued
	ap, err := c.AsyncAutoPipelineWithOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("redis autopipeline: %w", err)
	}
	return &Runner{c: c, ap: ap}, nil
}

// Dial connects to the Redis at url (redis:// or rediss://): short timeouts,
// so that an unreachable server makes callers fall back instead of waiting,
// and no retries, so that no script runs twice.
func Dial(url string) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis_url: %w", err)
	}
	opts.DialTimeout = time.Second
	opts.ReadTimeout = 500 * time.Millisecond
	opts.WriteTimeout = 500 * time.Millisecond
	opts.MaxRetries = -1   // 0 would mean go-redis's default of 3
	opts.DialerRetries = 1 // one dial per attempt, bounded by DialTimeout
	return redis.NewClient(opts), nil
}

// Run runs s and returns its reply. A call abandoned at the caller's
// deadline returns an *AbandonedError, whose Wait tells how it ended.
func (r *Runner) Run(ctx context.Context, s *Script, keys []string, args ...any) (any, error) {
	v, err := r.do(ctx, "evalsha", s.hash, keys, args)
	if isNoScript(err) {
		// Redis lost its script cache (a restart): send the source once.
		v, err = r.do(ctx, "eval", s.src, keys, args)
	}
	return v, err
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

// Submit runs one command in the shared, ordered stream and waits for it as
// long as ctx allows.
func (r *Runner) Submit(ctx context.Context, argv ...any) (any, error) {
	cmd := redis.NewCmd(ctx, argv...)
	f := r.ap.Submit(ctx, cmd)
	if err := f.WaitContext(ctx); err != nil {
		if ctx.Err() != nil {
			// The command may still run; its reply is not ours to read.
			return nil, &AbandonedError{err: ctx.Err(), f: f}
		}
		return nil, err
	}
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
	return errors.Is(err, redis.ErrAutoPipelineQueueFull) || errors.Is(err, redis.ErrClosed) ||
		errors.Is(err, redis.ErrPoolTimeout) || isNoScript(err) ||
		(errors.As(err, &ne) && ne.Op == "dial")
}

// IsReply reports whether err is an error reply from Redis (Redis is up;
// the command or script failed), as opposed to Redis not answering.
func IsReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// Ping checks that Redis answers, on a connection of its own.
func (r *Runner) Ping(ctx context.Context) error { return r.c.Ping(ctx).Err() }

// Close stops the pipeliner and closes the client.
func (r *Runner) Close() error { return r.c.Close() }

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
