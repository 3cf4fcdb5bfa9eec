// Package bench is Tollgate's load harness: it starts a mock upstream and a
// gateway as separate processes, drives load from its own process, and
// compares each gateway run with a direct-to-upstream run under the same
// load, alternating them over rounds. It reports requests/s, the gateway
// process's CPU per request (from /proc), added latency at p50 and p99, and
// the gateway's peak RSS, as medians over rounds.
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
	Scenarios []string      // bare, plain, governed, traced, logged, observed, cached, cached-miss, governed-pg
	Loads     []string      // closed:N (N connections) or rate:R (R requests/s)
	Stream    bool          // streaming requests
	Duration  time.Duration // per run
	Rounds    int
	PGURL     string // for governed-pg
	RedisURL  string // for governed-pg
	Out       io.Writer
}

// Result is one scenario × load, medians over rounds.
type Result struct {
	Scenario, Load         string
	Stream                 bool
	DirectRPS, GatewayRPS  float64
	DirectP50, DirectP99   time.Duration
	GatewayP50, GatewayP99 time.Duration
	AddedP50, AddedP99     time.Duration
	CPUPerRequest          time.Duration
	PeakRSSMB              float64
	Errors                 int
	// ErrorKinds counts the errors by kind: "HTTP 429", "timeout", "dial", ...
	ErrorKinds map[string]int
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
	cmd *exec.Cmd
}

func (p *proc) stop() {
	if p != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
		}
	}
}

func launch(bin, dir string, ready string, args ...string) (*proc, error) {
	return launchEnv(bin, dir, ready, nil, args...)
}

// launchEnv is launch with env added to the process's environment.
func launchEnv(bin, dir string, ready string, env []string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	logf, err := os.Create(filepath.Join(dir, args[0]+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			log, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("%s did not come up: %v\n%s", args[0], err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cpuTime is the process's user+system CPU so far, from /proc.
func cpuTime(pid int) time.Duration {
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
	rps      float64
	lat      []time.Duration
	errors   int
	requests int
	kinds    map[string]int // errors by kind
}

func newClient(conns int) *http.Client {
	tr := &http.Transport{MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, IdleConnTimeout: time.Minute, DisableCompression: true}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// one sends a request and returns its latency, or why it failed.
func one(c *http.Client, url, key string, body []byte) (time.Duration, string) {
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
		return 0, why
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
func drive(load, url, key string, body []byte, d time.Duration) run {
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
		}
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
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
			go func() { defer wg.Done(); record(one(c, url, key, body)) }()
		}
	}
	wg.Wait()
	r.rps = float64(len(r.lat)) / time.Since(start).Seconds()
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

// config is the gateway config of a scenario.
func config(scenario, upstream string, o Options) string {
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
	case "governed-pg":
		return c + fmt.Sprintf("general_settings:\n  master_key: sk-bench-master\n  database_url: %q\n  redis_url: %q\n", o.PGURL, o.RedisURL)
	}
	return c
}

// Run runs every scenario × load and returns the results.
func Run(o Options) ([]Result, error) {
	dir, err := os.MkdirTemp("", "tollgate-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	upPort := freePort()
	up, err := launch(o.Bin, dir, fmt.Sprintf("http://127.0.0.1:%d/v1/models", upPort), "mock-upstream", "--addr", fmt.Sprintf("127.0.0.1:%d", upPort))
	if err != nil {
		return nil, err
	}
	defer up.stop()
	upURL := fmt.Sprintf("http://127.0.0.1:%d", upPort)
	body := []byte(`{"model":"gpt-4","max_tokens":8,"messages":[{"role":"user","content":"Say hello to the benchmark."}]}`)
	if o.Stream {
		body = []byte(`{"model":"gpt-4","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"Say hello to the benchmark."}]}`)
	}
	var results []Result
	for _, sc := range o.Scenarios {
		if sc == "governed-pg" && (o.PGURL == "" || o.RedisURL == "") {
			fmt.Fprintf(o.Out, "skipping %s: give --pg and --redis\n", sc)
			continue
		}
		scDir := filepath.Join(dir, sc)
		os.MkdirAll(scDir, 0o755)
		os.WriteFile(filepath.Join(scDir, "config.yaml"), []byte(config(sc, upURL, o)), 0o600)
		port := freePort()
		args := []string{"serve", "--config", "config.yaml", "--port", fmt.Sprint(port)}
		if sc == "bare" {
			args = []string{"bare-proxy", "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--target", upURL}
		}
		var env []string
		if sc == "observed" || sc == "traced" {
			env = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + upURL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"}
		}
		gw, err := launchEnv(o.Bin, scDir, fmt.Sprintf("http://127.0.0.1:%d/health/liveliness", port), env, args...)
		if err != nil {
			return results, err
		}
		gwURL := fmt.Sprintf("http://127.0.0.1:%d", port)
		key := ""
		if sc != "plain" && sc != "bare" {
			// Full governance: a key with a budget, rpm/tpm and a parallel
			// limit that never bind, spend logged to the store.
			req, _ := http.NewRequest("POST", gwURL+"/key/generate", strings.NewReader(
				`{"max_budget": 1000000, "rpm_limit": 100000000, "tpm_limit": 10000000000, "max_parallel_requests": 100000, "user_id": "bench-user"}`))
			req.Header.Set("Authorization", "Bearer sk-bench-master")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				gw.stop()
				return results, err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			_, k, _ := strings.Cut(string(b), `"key":"`)
			key, _, _ = strings.Cut(k, `"`)
		}
		for _, load := range o.Loads {
			drive(load, gwURL+"/v1/chat/completions", key, body, time.Second) // warm up
			var dRPS, gRPS []float64
			var d50, d99, g50, g99, cpu []time.Duration
			errs, kinds := 0, map[string]int{}
			for range o.Rounds {
				d := drive(load, upURL+"/v1/chat/completions", "", body, o.Duration)
				before := cpuTime(gw.cmd.Process.Pid)
				g := drive(load, gwURL+"/v1/chat/completions", key, body, o.Duration)
				used := cpuTime(gw.cmd.Process.Pid) - before
				dRPS, gRPS = append(dRPS, d.rps), append(gRPS, g.rps)
				d50, d99 = append(d50, pct(d.lat, 0.5)), append(d99, pct(d.lat, 0.99))
				g50, g99 = append(g50, pct(g.lat, 0.5)), append(g99, pct(g.lat, 0.99))
				if g.requests > 0 {
					cpu = append(cpu, used/time.Duration(g.requests))
				}
				errs += g.errors + d.errors
				for _, m := range []map[string]int{d.kinds, g.kinds} {
					for k, n := range m {
						kinds[k] += n
					}
				}
			}
			r := Result{Scenario: sc, Load: load, Stream: o.Stream, DirectRPS: median(dRPS), GatewayRPS: median(gRPS),
				DirectP50: median(d50), DirectP99: median(d99), GatewayP50: median(g50), GatewayP99: median(g99),
				CPUPerRequest: median(cpu), PeakRSSMB: peakRSS(gw.cmd.Process.Pid), Errors: errs, ErrorKinds: kinds}
			r.AddedP50, r.AddedP99 = r.GatewayP50-r.DirectP50, r.GatewayP99-r.DirectP99
			results = append(results, r)
			fmt.Fprintln(o.Out, row(r))
		}
		gw.stop()
	}
	return results, nil
}

// Header is the results table's header, in Markdown.
const Header = "| scenario | load | stream | direct req/s | gateway req/s | CPU µs/req | added p50 | added p99 | peak RSS | errors |\n|---|---|---|---|---|---|---|---|---|---|"

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
	return fmt.Sprintf("| %s | %s | %v | %.0f | %.0f | %.0f | %s | %s | %.0f MB | %s |", r.Scenario, r.Load, r.Stream,
		r.DirectRPS, r.GatewayRPS, float64(r.CPUPerRequest)/1e3, us(r.AddedP50), us(r.AddedP99), r.PeakRSSMB, errs)
}
