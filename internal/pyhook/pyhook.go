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
	Timeout time.Duration // per call; default 2s
	Dir     string        // where module paths resolve (the config file's directory)
	Funcs   []string      // module.function names every worker imports
	Setting string        // for messages: general_settings.custom_auth, ...
	Log     *slog.Logger
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
	fails  int // consecutive short-lived workers, for the restart backoff
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

	var logs sync.WaitGroup
	logs.Add(1)
	go func() { // the worker's stderr (and the user's prints) go to the log
		defer logs.Done()
		sc := bufio.NewScanner(errR)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.opts.Log.Info("python hook output", "setting", p.opts.Setting, "pid", cmd.Process.Pid, "line", sc.Text())
		}
	}()
	ready := make(chan reply, 1)
	go func() {
		dec := bufio.NewReader(outR)
		first := true
		for {
			line, err := dec.ReadBytes('\n')
			if err != nil {
				break
			}
			var r reply
			if json.Unmarshal(line, &r) != nil {
				continue
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
		logs.Wait()
		_ = cmd.Wait()
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
		case ok && r.Ready != nil:
			p.kill(w)
			return nil, fmt.Errorf("%s: importing %s (from %s) failed:\n%s", p.opts.Setting, strings.Join(p.opts.Funcs, ", "), p.opts.Dir, strings.TrimSpace(r.Error))
		}
		<-w.done
		return nil, fmt.Errorf("%s: the python worker (%s) exited before it was ready: %v", p.opts.Setting, p.opts.Python, cmd.ProcessState)
	case <-time.After(30 * time.Second):
		p.kill(w)
		return nil, fmt.Errorf("%s: the python worker did not become ready within 30s", p.opts.Setting)
	}
}

func (p *Pool) kill(w *worker) {
	_ = w.in.Close()
	_ = w.cmd.Process.Kill()
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
				p.idle <- nw
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

// Call runs fn (one of Options.Funcs) in a free worker. kind is "auth"
// (args: request, api_key) or "key_generate" (args: data). A hook that
// raises gives a *Raised; a timeout, a dead worker or a closed pool an
// ErrUnavailable error.
func (p *Pool) Call(ctx context.Context, fn, kind string, args map[string]any) (Result, error) {
	deadline := time.Now().Add(p.opts.Timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for {
		var w *worker
		select {
		case w = <-p.idle:
		case <-p.stop:
			return Result{}, fmt.Errorf("%w: %s: shutting down", ErrUnavailable, p.opts.Setting)
		case <-ctx.Done():
			return Result{}, fmt.Errorf("%w: %s: no free python worker within %s", ErrUnavailable, p.opts.Setting, p.opts.Timeout)
		}
		select {
		case <-w.done:
			continue // died while idle; its replacement is on its way
		default:
		}
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
				if r.ID != id {
					continue // a late answer to a call given up on
				}
				p.idle <- w
				if !r.OK {
					return Result{}, &Raised{Type: r.Type, Message: r.Error, Traceback: r.Traceback, Status: r.Status}
				}
				return Result{Value: r.Result, Type: r.Type}, nil
			case <-w.done:
				return Result{}, fmt.Errorf("%w: %s: %s: the python worker exited during the call (%s)", ErrUnavailable, p.opts.Setting, fn, w.cmd.ProcessState)
			case <-ctx.Done():
				if time.Until(deadline) > 0 {
					// The caller left (a client that hung up): the worker
					// may still answer within the deadline and be reused.
					go p.reclaim(w, id, deadline)
					return Result{}, fmt.Errorf("%w: %s: %v", ErrUnavailable, p.opts.Setting, ctx.Err())
				}
				// The worker may be stuck for good: replace it.
				p.kill(w)
				return Result{}, fmt.Errorf("%w: %s: %s did not answer within %s", ErrUnavailable, p.opts.Setting, fn, p.opts.Timeout)
			}
		}
	}
}

// reclaim waits, up to the call's deadline, for the answer to a call its
// caller gave up on, then frees the worker; past the deadline it kills it.
func (p *Pool) reclaim(w *worker, id uint64, deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		select {
		case r := <-w.out:
			if r.ID == id {
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
			_ = w.cmd.Process.Kill()
		}
	}
	p.wg.Wait()
	if p.tmp != "" {
		_ = os.RemoveAll(p.tmp)
	}
}
