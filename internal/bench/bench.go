// Package bench is Tollgate's load harness: it starts a mock upstream, a
// floor (the minimal stdlib forwarder, `tollgate floor-proxy`) and every
// scenario's gateway as separate processes, drives load from its own
// process, and runs rounds in which a direct-to-upstream run, the floor and
// each scenario take turns under the same load. It reports requests/s, each
// process's CPU per request (from /proc) and its ratio to the floor's in the
// same round, added latency at p50 and p99, and peak RSS, as medians over
// rounds.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// Options choose what to run.
type Options struct {
	Bin       string        // the tollgate binary
	Scenarios []string      // floor (always run), bare, plain, governed, traced, logged, observed, cached, cached-miss, governed-pg, governed-pg-allot, pyhook, pyhook-cached
	Loads     []string      // closed:N (N connections) or rate:R (R requests/s)
	Stream    bool          // streaming requests
	Duration  time.Duration // per run
	Rounds    int
	PGURL     string // for governed-pg
	RedisURL  string // for governed-pg
	Out       io.Writer
	// Pprof gives every scenario's process a pprof listener on a port of
	// its own (printed), to profile it under the bench's load.
	Pprof bool
	// MaxInFlight, when not 0, is the gateways' general_settings.max_requests_in_flight.
	MaxInFlight int
	// Keys, when not 0, starts the governed scenarios on a store of that
	// many keys; each request is made with one drawn at random. The peak
	// RSS is then the runs' (reset once the keys are in).
	Keys int
	// GatewayCPUs, when not empty, are the CPUs every gateway and floor
	// process is bound to (GOMAXPROCS their count); the bench process and
	// the mock upstream are bound to the others (cpus.go).
	GatewayCPUs []int
	// GatewayCPUQuota, when not 0, is a CFS CPU quota, in CPUs, that every
	// gateway and floor process runs under, each in a cgroup of its own,
	// as under a container's CPU limit (quota.go).
	GatewayCPUQuota float64
	// GatewayCPUPeriod is that quota's CFS period (0: the kernel's
	// default, 100 ms); the quota is GatewayCPUQuota × the period.
	GatewayCPUPeriod time.Duration
	// UpstreamLatency is how long the mock upstream waits before it
	// answers (streaming: before the first chunk), for the direct runs as
	// for the gateways'.
	UpstreamLatency time.Duration
}

// Result is one scenario × load, medians over rounds.
type Result struct {
	Scenario, Load        string
	Stream                bool
	DirectRPS, GatewayRPS float64
	// SentRPS is the requests the load generator started a second in the
	// gateway's run, answered or not: below a rate:R load's R, the
	// generator could not keep the rate.
	SentRPS                float64
	DirectP50, DirectP99   time.Duration
	GatewayP50, GatewayP99 time.Duration
	// ShedP99 is the p99 of the answers 503 (shed), median over the
	// rounds that had any: how fast a refusal comes.
	ShedP99            time.Duration
	AddedP50, AddedP99 time.Duration
	CPUPerRequest      time.Duration
	FloorRatio         float64 // CPU per request over the floor's (the minimal forwarder), median over rounds
	PeakRSSMB          float64
	Errors             int
	// ErrorKinds counts the errors by kind: "HTTP 429", "timeout", "dial", ...
	ErrorKinds map[string]int
	// Throttled is the time the process's cgroup was throttled by its CFS
	// quota (--gateway-cpu-quota) a second of its runs, median over
	// rounds; -1 without a quota.
	Throttled time.Duration
	// ListenOverflows is the kernel's TcpExt ListenOverflows over the
	// scenario's runs (all rounds; handshakes dropped because a listen
	// queue was full, the retried SYNs counted again); -1 unread.
	ListenOverflows int64
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type proc struct {
	cmd    *exec.Cmd
	cgroup string        // its own cgroup (--gateway-cpu-quota), removed once it ends; "" none
	exited chan struct{} // closed once it has ended and its cgroup is removed
	cgErr  error         // why its cgroup could not be removed, once exited
}

// live are the processes launched and not yet ended, for StopAll.
var live = struct {
	sync.Mutex
	procs map[*proc]bool
}{procs: map[*proc]bool{}}

// StopAll stops every process the harness launched that still runs and
// removes their cgroups: what an interrupted bench does before it exits.
func StopAll() {
	live.Lock()
	var ps []*proc
	for p := range live.procs {
		ps = append(ps, p)
	}
	live.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop() }()
	}
	wg.Wait()
}

// reap waits for the process to end, then removes its cgroup.
func (p *proc) reap() {
	_ = p.cmd.Wait()
	if p.cgroup != "" {
		p.cgErr = removeCgroup(p.cgroup)
	}
	live.Lock()
	delete(live.procs, p)
	live.Unlock()
	close(p.exited)
}

// stop interrupts the process and waits for it to end (killing it after
// 10 s) and for its cgroup to be removed. It may be called more than once.
func (p *proc) stop() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// placement is where a launched process runs: on CPUs (--gateway-cpus),
// under a CPU quota (--gateway-cpu-quota), both or neither.
type placement struct {
	cpus   []int
	quota  float64       // CPUs' worth of CFS quota; 0: none
	period time.Duration // the quota's CFS period; 0: quotaPeriod
	cg     cpuCgroup     // where its cgroup is made, with quota
}

func launch(bin, dir string, ready string, args ...string) (*proc, error) {
	return launchEnv(bin, dir, ready, nil, placement{}, args...)
}

// launchEnv is launch with env added to the process's environment and
// the process placed: bound to at.cpus when not empty, with GOMAXPROCS
// their count; moved, with every thread, into a cgroup of its own with a
// CFS quota of at.quota CPUs when not 0, with GOMAXPROCS ceil(quota) (the
// Go runtime reads its cgroup's limit at start, before it is moved; and
// never more than the CPUs it is bound to). The cgroup is removed when the
// process ends.
func launchEnv(bin, dir string, ready string, env []string, at placement, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	switch {
	case at.quota > 0:
		env = append(env, fmt.Sprintf("GOMAXPROCS=%d", quotaProcs(at.quota, len(at.cpus))))
	case len(at.cpus) > 0:
		env = append(env, fmt.Sprintf("GOMAXPROCS=%d", len(at.cpus)))
	}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	logf, err := os.Create(filepath.Join(dir, args[0]+".log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	var cg string
	if at.quota > 0 {
		if cg, err = at.cg.newChild(at.quota, at.period, args[0]); err != nil {
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		if cg != "" {
			_ = removeCgroup(cg)
		}
		return nil, err
	}
	p := &proc{cmd: cmd, cgroup: cg, exited: make(chan struct{})}
	live.Lock()
	live.procs[p] = true
	live.Unlock()
	go p.reap()
	if cg != "" {
		if err := enterCgroup(cg, cmd.Process.Pid); err != nil {
			p.stop()
			return nil, err
		}
	}
	if len(at.cpus) > 0 {
		if err := pinProcess(cmd.Process.Pid, at.cpus); err != nil {
			p.stop()
			return nil, err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			if len(at.cpus) > 0 {
				// Threads started while it came up were started by pinned
				// ones; pinning again checks that none escaped.
				if err := pinProcess(cmd.Process.Pid, at.cpus); err != nil {
					p.stop()
					return nil, err
				}
			}
			if cg != "" {
				// Likewise, threads started since are in its cgroup.
				if err := threadsIn(cg, cmd.Process.Pid); err != nil {
					p.stop()
					return nil, err
				}
			}
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			log, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("%s did not come up: %v\n%s", args[0], err, log)
		}
		select {
		case <-p.exited:
			log, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("%s ended before it came up: %v\n%s", args[0], p.cmd.ProcessState, log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cpuTime is the user+system CPU so far, from /proc, of the process and of
// its child processes (the python3 workers of the pyhook scenarios).
func cpuTime(pid int) time.Duration {
	t := procCPU(pid)
	// A child is listed under the thread that started it: read every one.
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, c := range strings.Fields(string(b)) {
			if cpid, err := strconv.Atoi(c); err == nil {
				t += procCPU(cpid)
			}
		}
	}
	return t
}

// procCPU is one process's user+system CPU so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// peakRSS is the process's high-water resident set, in MB.
func peakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// run is one load against one URL.
type run struct {
	rps      float64 // answered 200 a second
	sent     float64 // started a second, answered or not
	lat      []time.Duration
	shed     []time.Duration // latencies of the answers 503 (shed)
	errors   int
	requests int
	kinds    map[string]int // errors by kind
}

func newClient(conns int) *http.Client {
	tr := &http.Transport{MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, IdleConnTimeout: time.Minute, DisableCompression: true}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// one sends a request and returns its latency and, when it failed, why.
// The latency of an HTTP error answer is its whole answer's; a 429 or
// 503 without Retry-After says so in why.
func one(c *http.Client, url string, keys keySet, body []byte) (time.Duration, string) {
	key := keys.pick()
	req, _ := http.NewRequest("POST", url, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, errorKind(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		why := "HTTP " + strconv.Itoa(resp.StatusCode)
		// The OpenAI error shape names the kind ("budget_exceeded", ...).
		if _, t, ok := strings.Cut(string(b), `"type":"`); ok {
			t, _, _ = strings.Cut(t, `"`)
			why += " " + t
		}
		if (resp.StatusCode == 429 || resp.StatusCode == 503) && resp.Header.Get("Retry-After") == "" {
			why += " without Retry-After"
		}
		return time.Since(start), why
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return 0, "body: " + errorKind(err)
	}
	return time.Since(start), ""
}

// errorKind names a transport error without its addresses, so that like
// errors count together.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local port (EADDRNOTAVAIL)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	}
	return "other"
}

// drive applies load for d: "closed:N" keeps N requests in flight;
// "rate:R" starts R requests a second whatever the answers.
func drive(load, url string, key keySet, body []byte, d time.Duration) run {
	kind, nStr, _ := strings.Cut(load, ":")
	n, _ := strconv.Atoi(nStr)
	var mu sync.Mutex
	var r run
	r.kinds = map[string]int{}
	record := func(lat time.Duration, failed string) {
		mu.Lock()
		r.requests++
		if failed == "" {
			r.lat = append(r.lat, lat)
		} else {
			r.errors++
			r.kinds[failed]++
			if strings.HasPrefix(failed, "HTTP 503") {
				r.shed = append(r.shed, lat)
			}
		}
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var started int           // rate: requests started
	var sending time.Duration // rate: how long they were started for
	switch kind {
	case "closed":
		c := newClient(n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					record(one(c, url, key, body))
				}
			}()
		}
	case "rate":
		c := newClient(256)
		interval := time.Second / time.Duration(max(n, 1))
		next := time.Now()
		for ctx.Err() == nil {
			next = next.Add(interval)
			if wait := time.Until(next); wait > 0 {
				time.Sleep(wait)
			}
			wg.Add(1)
			started++
			go func() { defer wg.Done(); record(one(c, url, key, body)) }()
		}
		sending = time.Since(start)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	r.rps, r.sent = float64(len(r.lat))/elapsed, float64(r.requests)/elapsed
	if kind == "rate" {
		// Started over the time they were started in: the wait for the
		// last answers is not the generator's.
		r.sent = float64(started) / sending.Seconds()
	}
	return r
}

func pct(l []time.Duration, p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(int(float64(len(s))*p), len(s)-1)]
}

func median[T int64 | float64 | time.Duration](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// config is the gateway config of a scenario, with o.MaxInFlight.
func config(scenario, upstream string, o Options) string {
	c := scenarioConfig(scenario, upstream, o)
	if o.MaxInFlight == 0 {
		return c
	}
	set := fmt.Sprintf("general_settings:\n  max_requests_in_flight: %d\n", o.MaxInFlight)
	if strings.Contains(c, "general_settings:\n") {
		return strings.Replace(c, "general_settings:\n", set, 1)
	}
	return c + set
}

// scenarioConfig is the gateway config of a scenario.
func scenarioConfig(scenario, upstream string, o Options) string {
	c := fmt.Sprintf(`model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: %q, input_cost_per_token: 0.000001, output_cost_per_token: 0.00001}
`, upstream)
	switch scenario {
	case "plain":
		return c
	case "governed":
		return c + "general_settings:\n  master_key: sk-bench-master\n"
	case "traced":
		// governed, with every request traced (OTLP/HTTP, the endpoint in
		// the environment) to the mock's telemetry sink: no content.
		return c + "general_settings:\n  master_key: sk-bench-master\nlitellm_settings:\n  callbacks: [\"otel\"]\n"
	case "logged":
		// governed, with every request sent to one callback (generic_api,
		// so content is captured and redacted) and no tracing.
		return c + fmt.Sprintf(`general_settings:
  master_key: sk-bench-master
litellm_settings:
  callbacks: ["bench_sink"]
callback_settings:
  bench_sink:
    callback_type: generic_api
    endpoint: %q
`, upstream+mockupstream.CallbackPath)
	case "observed":
		// governed, with every request traced (OTLP/HTTP) and sent to one
		// callback (generic_api), both to the mock's telemetry sinks.
		return c + fmt.Sprintf(`general_settings:
  master_key: sk-bench-master
litellm_settings:
  callbacks: ["otel", "bench_sink"]
callback_settings:
  bench_sink:
    callback_type: generic_api
    endpoint: %q
`, upstream+mockupstream.CallbackPath)
	case "cached", "cached-miss":
		// governed, with the local response cache on: the benchmark's one
		// prompt is a hit after the first request (cached); with a TTL of
		// a microsecond every request misses, goes upstream and is stored
		// (cached-miss).
		ttl := ""
		if scenario == "cached-miss" {
			ttl = "  cache_params: {ttl: 0.000001}\n"
		}
		return c + "general_settings:\n  master_key: sk-bench-master\nlitellm_settings:\n  cache: true\n" + ttl
	case "governed-pg", "governed-pg-allot":
		// governed-pg measures the per-request Redis scripts (allotments
		// off, explicitly: they are on by default with Redis);
		// governed-pg-allot the same with budget holds and rate limits
		// decided against allotments (general_settings.budget_allotments).
		allot := "  budget_allotments: false\n"
		if scenario == "governed-pg-allot" {
			allot = "  budget_allotments: true\n"
		}
		return c + fmt.Sprintf("general_settings:\n  master_key: sk-bench-master\n  database_url: %q\n  redis_url: %q\n", o.PGURL, o.RedisURL) + allot
	case "pyhook", "pyhook-cached":
		// governed, every key decided by a LiteLLM Python custom_auth
		// (benchPyHook, written beside the config) in python3 workers; the
		// cached variant keeps each key's decision for a minute.
		ttl := 0
		if scenario == "pyhook-cached" {
			ttl = 60
		}
		return c + fmt.Sprintf("general_settings:\n  master_key: sk-bench-master\n  custom_auth: bench_auth.user_api_key_auth\n  tollgate_python_hooks: {workers: 2, cache_ttl: %d}\n", ttl)
	}
	return c
}

// benchPyHook is the pyhook scenarios' custom_auth: seed 000's example,
// granting its key the governed scenario's limits.
const benchPyHook = `from fastapi import Request
from litellm.proxy._types import UserAPIKeyAuth

async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    if api_key == "sk-bench-python":
        return UserAPIKeyAuth(api_key=api_key, user_id="bench-user", max_budget=1000000, rpm_limit=100000000,
                              tpm_limit=10000000000, max_parallel_requests=100000)
    raise Exception("invalid key")
`

// gateway is one scenario's running process.
type gateway struct {
	scenario, url string
	key           keySet
	p             *proc
}

// start launches a scenario's process and, for the governed ones, makes
// its key.
//
// A scenario written name@path runs from the binary at path instead of
// o.Bin, in the same rounds as the others: a before/after comparison of
// two builds that drift cannot tell apart.
func start(label, dir, upURL string, o Options, at placement) (*gateway, error) {
	sc, bin, other := strings.Cut(label, "@")
	if !other {
		bin = o.Bin
	}
	scDir := filepath.Join(dir, strings.NewReplacer("/", "_", "@", "_").Replace(label))
	os.MkdirAll(scDir, 0o755)
	os.WriteFile(filepath.Join(scDir, "config.yaml"), []byte(config(sc, upURL, o)), 0o600)
	if strings.HasPrefix(sc, "pyhook") {
		os.WriteFile(filepath.Join(scDir, "bench_auth.py"), []byte(benchPyHook), 0o600)
	}
	port := freePort()
	args := []string{"serve", "--config", "config.yaml", "--port", fmt.Sprint(port)}
	switch sc {
	case "bare":
		args = []string{"bare-proxy", "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--target", upURL}
	case "floor":
		args = []string{"floor-proxy", "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--target", upURL}
	}
	var env []string
	if sc == "observed" || sc == "traced" {
		env = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + upURL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"}
	}
	if o.Pprof {
		a := fmt.Sprintf("127.0.0.1:%d", freePort())
		env = append(env, "TOLLGATE_PPROF_ADDR="+a)
		fmt.Fprintf(o.Out, "%s: pprof at http://%s/debug/pprof/\n", label, a)
	}
	many := o.Keys > 0 && seedsMany(sc)
	if many {
		if err := seedKeys(filepath.Join(scDir, "tollgate.db"), o.Keys, o.Out); err != nil {
			return nil, err
		}
	}
	p, err := launchEnv(bin, scDir, fmt.Sprintf("http://127.0.0.1:%d/health/liveliness", port), env, at, args...)
	if err != nil {
		return nil, err
	}
	g := &gateway{scenario: label, url: fmt.Sprintf("http://127.0.0.1:%d", port), p: p}
	if many {
		if err := waitKeysLoaded(filepath.Join(scDir, "serve.log")); err != nil {
			p.stop()
			return nil, err
		}
		fmt.Fprintf(o.Out, "%s: %d keys loaded: %s\n", label, o.Keys, readMemory(p.cmd.Process.Pid))
		g.key = keySet{n: o.Keys}
		return g, nil
	}
	if sc == "plain" || sc == "bare" || sc == "floor" {
		return g, nil
	}
	if strings.HasPrefix(sc, "pyhook") {
		g.key = keySet{one: "sk-bench-python"} // the hook's key: no /key/generate
		return g, nil
	}
	// Full governance: a key with a budget, rpm/tpm and a parallel
	// limit that never bind, spend logged to the store.
	req, _ := http.NewRequest("POST", g.url+"/key/generate", strings.NewReader(
		`{"max_budget": 1000000, "rpm_limit": 100000000, "tpm_limit": 10000000000, "max_parallel_requests": 100000, "user_id": "bench-user"}`))
	req.Header.Set("Authorization", "Bearer sk-bench-master")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.stop()
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, k, _ := strings.Cut(string(b), `"key":"`)
	g.key.one, _, _ = strings.Cut(k, `"`)
	return g, nil
}

// samples are one scenario's measurements under one load, one per round.
type samples struct {
	rps, sent     []float64
	p50, p99, cpu []time.Duration
	shedP99       []time.Duration // of the runs that shed
	ratio         []float64       // CPU per request over the floor's, same round
	throttled     []time.Duration // cgroup throttled time a second of the run
	overflows     int64           // listen queue overflows over the runs; -1 unread
	errs          int
	kinds         map[string]int
}

func (s *samples) add(r run, cpu time.Duration) {
	s.rps, s.sent = append(s.rps, r.rps), append(s.sent, r.sent)
	s.p50, s.p99 = append(s.p50, pct(r.lat, 0.5)), append(s.p99, pct(r.lat, 0.99))
	if len(r.shed) > 0 {
		s.shedP99 = append(s.shedP99, pct(r.shed, 0.99))
	}
	if r.requests > 0 {
		s.cpu = append(s.cpu, cpu/time.Duration(r.requests))
	}
	s.errs += r.errors
	for k, n := range r.kinds {
		s.kinds[k] += n
	}
}

// CheckCPUQuota checks that processes can be run under a CPU quota of f
// CPUs here (--gateway-cpu-quota), by making and removing a cgroup, and
// says where their cgroups will be made.
func CheckCPUQuota(f float64) (cpuCgroup, error) {
	if err := checkQuota(f); err != nil {
		return cpuCgroup{}, err
	}
	cg, err := findCPUCgroup("/sys/fs/cgroup")
	if err != nil {
		return cpuCgroup{}, err
	}
	return cg, cg.probe(f)
}

// startUpstream launches the mock upstream (on cpus when not empty),
// answering after o.UpstreamLatency, and returns it with its base URL.
func startUpstream(o Options, dir string, cpus []int) (*proc, string, error) {
	port := freePort()
	args := []string{"mock-upstream", "--addr", fmt.Sprintf("127.0.0.1:%d", port)}
	if o.UpstreamLatency > 0 {
		args = append(args, "--delay", o.UpstreamLatency.String())
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	p, err := launchEnv(o.Bin, dir, url+"/v1/models", nil, placement{cpus: cpus}, args...)
	return p, url, err
}

// Run starts the mock upstream, the floor (the minimal forwarder, see
// floor-proxy) and every scenario's gateway, then for each load runs
// rounds in which direct, the floor and each scenario take their turn one
// after another, so that whatever else the machine is doing hits them all
// alike. Each scenario's CPU per request is divided by the floor's of the
// same round; the table reports medians over rounds.
func Run(o Options) ([]Result, error) {
	dir, err := os.MkdirTemp("", "tollgate-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var rest []int // the bench's and the mock's CPUs when the gateways are pinned
	if len(o.GatewayCPUs) > 0 {
		own, err := ownCPUs()
		if err != nil {
			return nil, err
		}
		if rest, err = splitCPUs(own, o.GatewayCPUs); err != nil {
			return nil, err
		}
		if err := pinProcess(os.Getpid(), rest); err != nil {
			return nil, err
		}
		// Unpinned when done, so that a second Run (--both) splits the same CPUs.
		defer func() { _ = pinProcess(os.Getpid(), own) }()
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(len(rest)))
	}
	at := placement{cpus: o.GatewayCPUs, quota: o.GatewayCPUQuota, period: o.GatewayCPUPeriod}
	if at.quota > 0 {
		if at.cg, err = CheckCPUQuota(o.GatewayCPUQuota); err != nil {
			return nil, err
		}
	}
	up, upURL, err := startUpstream(o, dir, rest)
	if err != nil {
		return nil, err
	}
	defer up.stop()
	body := []byte(`{"model":"gpt-4","max_tokens":8,"messages":[{"role":"user","content":"Say hello to the benchmark."}]}`)
	if o.Stream {
		body = []byte(`{"model":"gpt-4","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"Say hello to the benchmark."}]}`)
	}
	scenarios := []string{"floor"}
	for _, sc := range o.Scenarios {
		switch {
		case sc == "floor" || slices.Contains(scenarios, sc):
		case strings.HasPrefix(sc, "governed-pg") && (o.PGURL == "" || o.RedisURL == ""):
			fmt.Fprintf(o.Out, "skipping %s: give --pg and --redis\n", sc)
		default:
			scenarios = append(scenarios, sc)
		}
	}
	var gws []*gateway
	defer func() {
		for _, g := range gws {
			g.p.stop()
		}
	}()
	for _, sc := range scenarios {
		g, err := start(sc, dir, upURL, o, at)
		if err != nil {
			return nil, err
		}
		gws = append(gws, g)
	}
	var results []Result
	for _, load := range o.Loads {
		for _, g := range gws {
			drive(load, g.url+"/v1/chat/completions", g.key, body, time.Second) // warm up
			if g.key.n > 0 {
				resetPeak(g.p.cmd.Process.Pid)
			}
		}
		direct := samples{kinds: map[string]int{}}
		per := make([]samples, len(gws))
		for i := range per {
			per[i].kinds = map[string]int{}
		}
		for range o.Rounds {
			direct.add(drive(load, upURL+"/v1/chat/completions", keySet{}, body, o.Duration), 0)
			for i, g := range gws {
				pid := g.p.cmd.Process.Pid
				before := cpuTime(pid)
				thr0, thrOK := cgroupThrottled(g.p.cgroup)
				ovf0 := listenOverflows()
				began := time.Now()
				r := drive(load, g.url+"/v1/chat/completions", g.key, body, o.Duration)
				per[i].add(r, cpuTime(pid)-before)
				took := time.Since(began)
				if thr1, ok := cgroupThrottled(g.p.cgroup); ok && thrOK && took > 0 {
					per[i].throttled = append(per[i].throttled, time.Duration(float64(thr1-thr0)/took.Seconds()))
				}
				if ovf1 := listenOverflows(); ovf0 < 0 || ovf1 < 0 {
					per[i].overflows = -1
				} else if per[i].overflows >= 0 {
					per[i].overflows += ovf1 - ovf0
				}
			}
			// gws[0] is the floor.
			if n := len(per[0].cpu); n > 0 && per[0].cpu[n-1] > 0 {
				for i := range per {
					if m := len(per[i].cpu); m == n {
						per[i].ratio = append(per[i].ratio, float64(per[i].cpu[m-1])/float64(per[0].cpu[n-1]))
					}
				}
			}
		}
		for i, g := range gws {
			s := per[i]
			r := Result{Scenario: g.scenario, Load: load, Stream: o.Stream,
				DirectRPS: median(direct.rps), DirectP50: median(direct.p50), DirectP99: median(direct.p99),
				GatewayRPS: median(s.rps), SentRPS: median(s.sent), GatewayP50: median(s.p50), GatewayP99: median(s.p99),
				PeakRSSMB: peakRSS(g.p.cmd.Process.Pid), Errors: s.errs + direct.errs, ErrorKinds: s.kinds,
				Throttled: -1, ListenOverflows: s.overflows}
			if len(s.throttled) > 0 {
				r.Throttled = median(s.throttled)
			}
			if len(s.cpu) > 0 {
				r.CPUPerRequest = median(s.cpu)
			}
			if len(s.ratio) > 0 {
				r.FloorRatio = median(s.ratio)
			}
			if len(s.shedP99) > 0 {
				r.ShedP99 = median(s.shedP99)
			}
			for k, n := range direct.kinds {
				r.ErrorKinds["direct "+k] += n
			}
			r.AddedP50, r.AddedP99 = r.GatewayP50-r.DirectP50, r.GatewayP99-r.DirectP99
			if g.key.n > 0 {
				fmt.Fprintf(o.Out, "%s %s with %d keys: %s\n", g.scenario, load, g.key.n, readMemory(g.p.cmd.Process.Pid))
			}
			results = append(results, r)
			fmt.Fprintln(o.Out, row(r))
		}
	}
	return results, nil
}

// Preamble is the line printed above the table: the date of the run and
// how it was made (with the machine's load average as it starts, since
// other work on the machine moves the figures), so that a pasted table
// says what it is.
func Preamble(now time.Time, o Options) string {
	pin := ""
	if len(o.GatewayCPUs) > 0 {
		pin = fmt.Sprintf("; gateways and floor on CPU %s (GOMAXPROCS %d), the load generator and the mock on the others",
			formatCPUList(o.GatewayCPUs), len(o.GatewayCPUs))
	}
	if o.GatewayCPUQuota > 0 {
		pin += fmt.Sprintf("; gateways and floor each under a CFS CPU quota of %g CPU (%d µs every %d µs, a cgroup each; GOMAXPROCS %d)",
			o.GatewayCPUQuota, quotaMicros(o.GatewayCPUQuota, o.GatewayCPUPeriod), periodOr(o.GatewayCPUPeriod)/time.Microsecond, quotaProcs(o.GatewayCPUQuota, len(o.GatewayCPUs)))
	}
	if o.UpstreamLatency > 0 {
		pin += fmt.Sprintf("; the mock upstream answers after %s (streams: before the first chunk)", o.UpstreamLatency)
	}
	if o.MaxInFlight > 0 {
		pin += fmt.Sprintf("; max_requests_in_flight %d", o.MaxInFlight)
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = "; load average " + strings.Join(f[:3], " ")
		}
	}
	return fmt.Sprintf("Run of %s (%d CPUs%s; %s per run, %d rounds alternating direct, floor and every scenario; medians over rounds; ratio = CPU per request over the floor's in the same round%s):",
		now.UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), pin, o.Duration, o.Rounds, load)
}

// Header is the results table's header, in Markdown.
const Header = "| scenario | load | stream | direct req/s | sent req/s | gateway req/s | CPU µs/req | × floor | added p50 | added p99 | p99 | shed p99 | peak RSS | errors | throttled | listen overflows |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"

func row(r Result) string {
	us := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e3, 'f', 0, 64) + " µs" }
	errs := strconv.Itoa(r.Errors)
	if len(r.ErrorKinds) > 0 {
		var kinds []string
		for k, n := range r.ErrorKinds {
			kinds = append(kinds, fmt.Sprintf("%s: %d", k, n))
		}
		slices.Sort(kinds)
		errs += " (" + strings.Join(kinds, ", ") + ")"
	}
	shed := "–"
	if r.ShedP99 > 0 {
		shed = us(r.ShedP99)
	}
	throttled, overflows := "–", "–"
	if r.Throttled >= 0 {
		throttled = strconv.FormatFloat(float64(r.Throttled)/float64(time.Millisecond), 'f', 0, 64) + " ms/s"
	}
	if r.ListenOverflows >= 0 {
		overflows = strconv.FormatInt(r.ListenOverflows, 10)
	}
	return fmt.Sprintf("| %s | %s | %v | %.0f | %.0f | %.0f | %.0f | %.2f | %s | %s | %s | %s | %.0f MB | %s | %s | %s |", r.Scenario, r.Load, r.Stream,
		r.DirectRPS, r.SentRPS, r.GatewayRPS, float64(r.CPUPerRequest)/1e3, r.FloorRatio, us(r.AddedP50), us(r.AddedP99), us(r.GatewayP99), shed, r.PeakRSSMB, errs, throttled, overflows)
}
