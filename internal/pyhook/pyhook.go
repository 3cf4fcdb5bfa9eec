// Package pyhook runs LiteLLM's Python hooks (general_settings.custom_auth
// and custom_key_generate given as module.function) in a pool of python3
// worker processes. Tollgate embeds no interpreter: each worker runs a small
// bootstrap (bootstrap.py, embedded) that imports the operator's module and
// answers one call at a time as JSON lines over pipes. A call that outlives
// its deadline kills its worker; a worker that dies is replaced, with
// backoff when it keeps dying. Nothing here ever answers "allow" on its own:
// a failure is an error the caller turns into a refusal.
package pyhook

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

//go:embed bootstrap.py
var bootstrap []byte

// Options configure a pool.
type Options struct {
	Python  string        // interpreter; default python3 (looked up on PATH)
	Workers int           // processes; default 2
	Timeout time.Duration // per call, from the moment a worker has it; default 2s
	// QueueTimeout bounds the wait for a free worker (besides the caller's
	// own context); default max(Timeout, 5s). Past it the call fails with
	// ErrUnavailable ("no free python worker") and no worker is touched.
	QueueTimeout time.Duration
	// MaxWaiting bounds the callers waiting for a free worker; default
	// 64 × Workers. Past it a call fails at once with ErrUnavailable.
	MaxWaiting int
	Dir        string   // where module paths resolve (the config file's directory)
	Funcs      []string // module.function names every worker imports
	Setting    string   // for messages: general_settings.custom_auth, ...
	Log        *slog.Logger
}

// ErrUnavailable: the pool could not answer (timeout, a dead worker, closed).
var ErrUnavailable = errors.New("python hook unavailable")

// Raised is the exception a hook raised.
type Raised struct {
	Type, Message, Traceback string
	Status                   int // a ProxyException's code, else 0
}

func (e *Raised) Error() string {
	if e.Message == "" {
		return e.Type
	}
	return e.Type + ": " + e.Message
}

// Result is a hook's return value: Value as JSON, Type its Python type name.
type Result struct {
	Value json.RawMessage
	Type  string
}

// Pool is the set of workers.
type Pool struct {
	opts   Options
	script string // the bootstrap, written to a temporary file
	idle   chan *worker
	seq    atomic.Uint64
	mu     sync.Mutex
	live   map[*worker]struct{}
	closed bool
	wg     sync.WaitGroup
	fails  int          // consecutive short-lived workers, for the restart backoff
	wait   atomic.Int64 // callers waiting for a free worker
	stop   chan struct{}
	tmp    string
}

type worker struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     chan reply
	done    chan struct{} // closed when the process has exited
	started time.Time
	ready   atomic.Bool // imported the modules; only ready workers are replaced
}

type reply struct {
	bad       string          // not from the wire: the line could not be parsed
	ID        uint64          `json:"id"`
	OK        bool            `json:"ok"`
	Result    json.RawMessage `json:"result"`
	Type      string          `json:"type"`
	Error     string          `json:"error"`
	Status    int             `json:"status"`
	Traceback string          `json:"traceback"`
	Ready     *bool           `json:"ready"`
}

// Start starts the workers and waits until each has imported the modules.
// A module that fails to import stops the start with its traceback; a
// missing interpreter stops it naming the setting and the alternatives.
func Start(opts Options) (*Pool, error) {
	if opts.Python == "" {
		opts.Python = "python3"
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.QueueTimeout <= 0 {
		opts.QueueTimeout = max(opts.Timeout, 5*time.Second)
	}
	if opts.MaxWaiting <= 0 {
		opts.MaxWaiting = 64 * opts.Workers
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Dir == "" {
		opts.Dir = "."
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	opts.Dir = dir
	if _, err := exec.LookPath(opts.Python); err != nil {
		return nil, fmt.Errorf("%s: %s is a Python function and needs a Python interpreter, but %q was not found (%v); install python3, set general_settings.tollgate_python_hooks.python, or write the hook as a cel expression or a webhook (docs/custom-auth.md)",
			opts.Setting, strings.Join(opts.Funcs, ", "), opts.Python, err)
	}
	tmp, err := os.MkdirTemp("", "tollgate-pyhook-")
	if err != nil {
		return nil, err
	}
	p := &Pool{opts: opts, idle: make(chan *worker, opts.Workers), live: map[*worker]struct{}{},
		stop: make(chan struct{}), tmp: tmp, script: filepath.Join(tmp, "bootstrap.py")}
	if err := os.WriteFile(p.script, bootstrap, 0o600); err != nil {
		p.Close()
		return nil, err
	}
	for range opts.Workers {
		w, err := p.spawn()
		if err != nil {
			p.Close()
			return nil, err
		}
		p.idle <- w
	}
	return p, nil
}

// Workers lists the process ids of the workers ready for calls.
func (p *Pool) Workers() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var pids []int
	for w := range p.live {
		if w.ready.Load() {
			pids = append(pids, w.cmd.Process.Pid)
		}
	}
	return pids
}

// spawn starts one worker and waits for its ready line.
func (p *Pool) spawn() (*worker, error) {
	args := append([]string{"-u", p.script, p.opts.Dir}, p.opts.Funcs...)
	cmd := exec.Command(p.opts.Python, args...)
	cmd.Dir = p.opts.Dir
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	// Its own process group, so a kill takes the hook's children (a
	// subprocess it started) with it.
	cmd.SysProcAttr = procAttr()
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outR, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	errR, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: closed", ErrUnavailable)
	}
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("%s: start %s: %w", p.opts.Setting, p.opts.Python, err)
	}
	w := &worker{cmd: cmd, in: in, out: make(chan reply, 1), done: make(chan struct{}), started: time.Now()}
	p.live[w] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()

	logsDone := make(chan struct{})
	go func() { // the worker's stderr (and the user's prints) go to the log
		defer close(logsDone)
		p.drain(errR, cmd.Process.Pid)
	}()
	ready := make(chan reply, 1)
	go func() {
		dec := bufio.NewReaderSize(outR, 64<<10)
		first := true
		for {
			line, err := dec.ReadBytes('\n')
			if err != nil {
				break
			}
			var r reply
			if err := json.Unmarshal(line, &r); err != nil {
				// Never dropped in silence: the call waiting for this
				// line fails at once (closed), and the log says why.
				r = reply{bad: err.Error()}
				p.opts.Log.Error("python hook worker wrote a line that is not JSON (a protocol error; the call fails)",
					"setting", p.opts.Setting, "pid", cmd.Process.Pid, "err", err, "bytes", len(line))
			}
			if first {
				first = false
				ready <- r
				continue
			}
			select {
			case w.out <- r:
			default: // an answer nobody waits for any more
			}
		}
		close(ready)
		// The process has closed its protocol stream (it exited, or is
		// about to). Its stderr may still be held open by a child it
		// started: give the copier a moment to read the last lines, then
		// reap the process (which closes our end of the pipe, ending the
		// copier) rather than wait for a stranger's EOF.
		select {
		case <-logsDone:
		case <-time.After(2 * time.Second):
		}
		_ = cmd.Wait()
		<-logsDone
		close(w.done)
		p.exited(w)
	}()
	select {
	case r, ok := <-ready:
		switch {
		case ok && r.Ready != nil && *r.Ready:
			p.mu.Lock()
			w.ready.Store(true)
			p.mu.Unlock()
			return w, nil
		case ok && (r.Ready != nil || r.bad != ""):
			p.kill(w)
			if r.bad != "" {
				return nil, fmt.Errorf("%s: the python worker's first line is not JSON: %s", p.opts.Setting, r.bad)
			}
			return nil, fmt.Errorf("%s: importing %s (from %s) failed:\n%s", p.opts.Setting, strings.Join(p.opts.Funcs, ", "), p.opts.Dir, strings.TrimSpace(r.Error))
		}
		<-w.done
		return nil, fmt.Errorf("%s: the python worker (%s) exited before it was ready: %v", p.opts.Setting, p.opts.Python, cmd.ProcessState)
	case <-time.After(30 * time.Second):
		p.kill(w)
		return nil, fmt.Errorf("%s: the python worker did not become ready within 30s", p.opts.Setting)
	}
}

// maxLogLine bounds one logged line of a worker's stderr; the rest of a
// longer line is read and dropped (the pipe is always drained, or a hook
// printing a long line would block in its print).
const maxLogLine = 64 << 10

// drain copies a worker's stderr to the log, one record a line, until EOF
// or a read error (the pipe closed by cmd.Wait).
func (p *Pool) drain(r io.Reader, pid int) {
	br := bufio.NewReaderSize(r, maxLogLine)
	var line []byte
	truncated := false
	for {
		frag, isPrefix, err := br.ReadLine()
		room := maxLogLine - len(line)
		if len(frag) > room {
			frag, truncated = frag[:room], true
		}
		line = append(line, frag...)
		if isPrefix && err == nil {
			continue // more of this line to come
		}
		if len(line) > 0 || (err == nil && !isPrefix) {
			p.opts.Log.Info("python hook output", "setting", p.opts.Setting, "pid", pid, "line", string(line), "truncated", truncated)
		}
		if err != nil {
			return
		}
		line, truncated = line[:0], false
	}
}

// kill ends a worker and everything in its process group.
func (p *Pool) kill(w *worker) {
	_ = w.in.Close()
	killGroup(w.cmd.Process)
}

// exited forgets a dead worker and, unless the pool is closing, starts its
// replacement: at once after a long life, with a growing pause (up to 10s)
// while workers keep dying young.
func (p *Pool) exited(w *worker) {
	p.mu.Lock()
	delete(p.live, w)
	closed := p.closed
	if time.Since(w.started) < 5*time.Second {
		p.fails++
	} else {
		p.fails = 0
	}
	fails := p.fails
	p.mu.Unlock()
	defer p.wg.Done()
	if closed || !w.ready.Load() {
		return // closing, or a start that failed (spawn's caller reports it)
	}
	p.purgeIdle()
	p.opts.Log.Warn("python hook worker exited; restarting it", "setting", p.opts.Setting, "pid", w.cmd.Process.Pid, "state", w.cmd.ProcessState.String())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		delay := time.Duration(0)
		if fails > 1 {
			delay = min(100*time.Millisecond<<min(fails-2, 7), 10*time.Second)
		}
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(delay):
			}
			nw, err := p.spawn()
			if err == nil {
				select {
				case p.idle <- nw:
				case <-p.stop: // closing: Close stops the workers it saw; this one too
					p.kill(nw)
				}
				return
			}
			if errors.Is(err, ErrUnavailable) {
				return // closed
			}
			p.opts.Log.Error("python hook worker could not be restarted", "setting", p.opts.Setting, "err", err)
			delay = min(max(2*delay, 100*time.Millisecond), 10*time.Second)
		}
	}()
}

// purgeIdle takes the dead workers out of the idle channel, so a worker
// that died while idle does not hold a slot its replacement needs. Live
// workers go back; there is room for them, as each is in the channel at
// most once and there are never more than Workers of them.
func (p *Pool) purgeIdle() {
	for n := len(p.idle); n > 0; n-- {
		var w *worker
		select {
		case w = <-p.idle:
		default:
			return
		}
		select {
		case <-w.done:
			continue
		default:
		}
		select {
		case p.idle <- w:
		case <-p.stop:
			return
		}
	}
}

// Call runs fn (one of Options.Funcs) in a free worker. kind is "auth"
// (args: request, api_key) or "key_generate" (args: data). A hook that
// raises gives a *Raised; a timeout, a dead worker or a closed pool an
// ErrUnavailable error.
func (p *Pool) Call(ctx context.Context, fn, kind string, args map[string]any) (Result, error) {
	// A free worker is taken at once: only callers that must wait for one
	// count against MaxWaiting (two callers arriving together at two idle
	// workers are not one too many).
	if w := p.takeIdle(); w != nil {
		return p.run(ctx, w, fn, kind, args)
	}
	if n := p.wait.Add(1); n > int64(p.opts.MaxWaiting) {
		p.wait.Add(-1)
		return Result{}, fmt.Errorf("%w: %s: %d callers already wait for a python worker", ErrUnavailable, p.opts.Setting, n-1)
	}
	queued := time.NewTimer(p.opts.QueueTimeout)
	defer queued.Stop()
	waiting := true
	defer func() {
		if waiting {
			p.wait.Add(-1)
		}
	}()
	for {
		var w *worker
		select {
		case w = <-p.idle:
		case <-p.stop:
			return Result{}, fmt.Errorf("%w: %s: shutting down", ErrUnavailable, p.opts.Setting)
		case <-queued.C:
			return Result{}, fmt.Errorf("%w: %s: no free python worker within %s", ErrUnavailable, p.opts.Setting, p.opts.QueueTimeout)
		case <-ctx.Done():
			return Result{}, fmt.Errorf("%w: %s: no free python worker before the request ended: %v", ErrUnavailable, p.opts.Setting, ctx.Err())
		}
		if w.dead() {
			continue // died while idle; its replacement is on its way
		}
		waiting = false
		p.wait.Add(-1)
		return p.run(ctx, w, fn, kind, args)
	}
}

// takeIdle returns an idle, live worker without waiting, or nil (none is
// idle, or the pool is stopping).
func (p *Pool) takeIdle() *worker {
	for {
		select {
		case <-p.stop:
			return nil
		default:
		}
		select {
		case w := <-p.idle:
			if w.dead() {
				continue // died while idle; its replacement is on its way
			}
			return w
		default:
			return nil
		}
	}
}

// dead reports whether w's process has exited.
func (w *worker) dead() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// run makes one call on w, which the caller holds. The hook timeout runs
// from here: only a worker that did not answer within it is killed.
func (p *Pool) run(ctx context.Context, w *worker, fn, kind string, args map[string]any) (Result, error) {
	deadline := time.Now().Add(p.opts.Timeout)
	timer := time.NewTimer(p.opts.Timeout)
	defer timer.Stop()
	id := p.seq.Add(1)
	msg := make(map[string]any, len(args)+3)
	for k, v := range args {
		msg[k] = v
	}
	msg["id"], msg["fn"], msg["kind"] = id, fn, kind
	line, err := json.Marshal(msg)
	if err != nil {
		p.idle <- w
		return Result{}, fmt.Errorf("%w: %s: %v", ErrUnavailable, p.opts.Setting, err)
	}
	if _, err := w.in.Write(append(line, '\n')); err != nil {
		p.kill(w)
		return Result{}, fmt.Errorf("%w: %s: python worker: %v", ErrUnavailable, p.opts.Setting, err)
	}
	for {
		select {
		case r := <-w.out:
			if r.bad != "" {
				p.idle <- w // the worker answered (badly) and waits for the next call
				return Result{}, fmt.Errorf("%w: %s: %s answered with a line that is not JSON (a protocol error): %s", ErrUnavailable, p.opts.Setting, fn, r.bad)
			}
			if r.ID != id {
				continue // a late answer to a call given up on
			}
			p.idle <- w
			if !r.OK {
				e := &Raised{Type: r.Type, Message: r.Error, Traceback: r.Traceback, Status: r.Status}
				p.logRaised(fn, e, args)
				return Result{}, e
			}
			return Result{Value: r.Result, Type: r.Type}, nil
		case <-w.done:
			return Result{}, fmt.Errorf("%w: %s: %s: the python worker exited during the call (%s)", ErrUnavailable, p.opts.Setting, fn, w.cmd.ProcessState)
		case <-ctx.Done():
			// The caller left (a client that hung up): the worker may
			// still answer within the deadline and be reused.
			go p.reclaim(w, id, deadline)
			return Result{}, fmt.Errorf("%w: %s: %v", ErrUnavailable, p.opts.Setting, ctx.Err())
		case <-timer.C:
			// The worker may be stuck for good: replace it.
			p.kill(w)
			return Result{}, fmt.Errorf("%w: %s: %s did not answer within %s", ErrUnavailable, p.opts.Setting, fn, p.opts.Timeout)
		}
	}
}

// logRaised logs a hook's exception with its traceback at debug level,
// the key the hook was given (if it put it in a message) masked.
func (p *Pool) logRaised(fn string, e *Raised, args map[string]any) {
	tb := e.Traceback
	msg := e.Message
	if key, _ := args["api_key"].(string); key != "" {
		tb = strings.ReplaceAll(tb, key, "[api_key]")
		msg = strings.ReplaceAll(msg, key, "[api_key]")
	}
	p.opts.Log.Debug("python hook raised", "setting", p.opts.Setting, "fn", fn, "type", e.Type, "message", msg, "traceback", tb)
}

// reclaim waits, up to the call's deadline, for the answer to a call its
// caller gave up on, then frees the worker; past the deadline it kills it.
func (p *Pool) reclaim(w *worker, id uint64, deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		select {
		case r := <-w.out:
			if r.ID == id || r.bad != "" {
				p.idle <- w
				return
			}
		case <-w.done:
			return
		case <-t.C:
			p.kill(w)
			return
		}
	}
}

// Close stops every worker and waits for them to exit. Idempotent; a nil
// pool is a no-op.
func (p *Pool) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	ws := make([]*worker, 0, len(p.live))
	for w := range p.live {
		ws = append(ws, w)
	}
	p.mu.Unlock()
	for _, w := range ws {
		_ = w.in.Close() // the bootstrap leaves its loop at EOF
	}
	for _, w := range ws {
		select {
		case <-w.done:
		case <-time.After(2 * time.Second):
			killGroup(w.cmd.Process)
		}
	}
	p.wg.Wait()
	if p.tmp != "" {
		_ = os.RemoveAll(p.tmp)
	}
}
