package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tollgate/tollgate/internal/bench"
)

func runBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	scenarios := fs.String("scenarios", "bare,plain,governed", "comma-separated (the floor, a minimal stdlib forwarder, always runs and every ratio is to it): bare (httputil.ReverseProxy with pooled buffers), plain, governed (SQLite), traced (governed, traced over OTLP to the mock), logged (governed, sent to one generic_api callback on the mock: content captured and redacted), observed (both), cached (governed with the response cache on: every request after the first a hit), cached-miss (every request a cache miss, stored), governed-pg (PostgreSQL + Redis, general_settings.budget_allotments: false: a Redis script per request), governed-pg-allot (the same with budget_allotments: true, the default with Redis), pyhook (governed, keys decided by a Python custom_auth in python3 workers; CPU includes theirs), pyhook-cached (the same, decisions cached per key); NAME@PATH runs scenario NAME from the tollgate binary at PATH in the same rounds (before/after)")
	loads := fs.String("loads", "closed:50,rate:500,rate:2000", "comma-separated: closed:N connections or rate:R requests/s")
	stream := fs.Bool("stream", false, "streaming requests")
	both := fs.Bool("both", false, "run non-streaming and streaming")
	duration := fs.Duration("duration", 5*time.Second, "length of each run")
	rounds := fs.Int("rounds", 3, "rounds per load, each running direct, the floor and every scenario in turn (medians are reported)")
	pg := fs.String("pg", os.Getenv("TOLLGATE_TEST_POSTGRES_URL"), "PostgreSQL URL for governed-pg")
	redis := fs.String("redis", os.Getenv("TOLLGATE_TEST_REDIS_URL"), "Redis URL for governed-pg")
	pprof := fs.Bool("pprof", false, "give every scenario's process a pprof listener on a port of its own (printed)")
	maxInFlight := fs.Int("max-in-flight", 0, "the gateways' general_settings.max_requests_in_flight (0: their default, 1024 per GOMAXPROCS)")
	keys := fs.Int("keys", 0, "start the governed scenarios on a store of this many keys (seeded once into the temporary directory) and make each request with one drawn at random; the peak RSS is then the runs' own, taken once the keys are in")
	gatewayCPUs := fs.String("gateway-cpus", "", "a CPU list (\"0\", \"0-1\", \"0,2\"): bind every gateway and floor process to these CPUs, GOMAXPROCS their count, and the bench process (the load generator) and the mock upstream to the others, so that a load above what the gateway sustains does not starve the generator")
	cpuQuota := fs.Float64("gateway-cpu-quota", 0, "a number of CPUs (0.25, 1.5): run every gateway and floor process under a CFS CPU quota of that many CPUs, as under a container's CPU limit, each in a cgroup of its own (made under the bench's own, removed when it ends; needs a writable cpu controller, cgroup v1 or v2) with GOMAXPROCS ceil(quota); combines with --gateway-cpus")
	cpuPeriod := fs.Duration("gateway-cpu-period", 0, "with --gateway-cpu-quota: the CFS period the quota is given over (1ms to 1s; default the kernel's 100ms): a process that spends its quota waits for the next period, so the period bounds that wait")
	upLatency := fs.Duration("upstream-latency", 0, "the mock upstream waits this long before it answers (streams: before the first chunk), for the direct runs too: with --max-in-flight N the gateway then sustains about N/latency requests a second, an LLM provider's regime")
	smoke := fs.Bool("smoke", false, "a few seconds of everything, to prove the harness works (no timing meaning)")
	soak := fs.Bool("soak", false, "one governed gateway under a steady mix (plain, streams, abandoned streams, upstream errors, slow upstreams) for --duration (default 10m) at --rate, sampling RSS, goroutines and open fds every --every")
	rate := fs.Int("rate", 200, "with --soak: requests started per second")
	every := fs.Duration("every", 10*time.Second, "with --soak: sampling interval")
	_ = fs.Parse(args)
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	// Interrupted, the bench stops what it started and removes their
	// cgroups before it exits.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; ok {
			bench.StopAll()
			os.Exit(130)
		}
	}()
	if *soak {
		o := bench.SoakOptions{Bin: bin, Duration: *duration, Rate: *rate, Every: *every, Out: os.Stdout}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			o.Duration = 10 * time.Minute
		}
		if *smoke {
			o.Duration, o.Every = 3*time.Second, time.Second
		}
		res, err := bench.Soak(o)
		if err != nil {
			return err
		}
		if len(res.Samples) < 2 || res.Samples[len(res.Samples)-1].Requests == 0 {
			return fmt.Errorf("soak: the gateway answered nothing")
		}
		return nil
	}
	o := bench.Options{Bin: bin, Scenarios: strings.Split(*scenarios, ","), Loads: strings.Split(*loads, ","), Stream: *stream,
		Duration: *duration, Rounds: *rounds, PGURL: *pg, RedisURL: *redis, Out: os.Stdout, Pprof: *pprof,
		MaxInFlight: *maxInFlight, Keys: *keys, GatewayCPUQuota: *cpuQuota, GatewayCPUPeriod: *cpuPeriod, UpstreamLatency: *upLatency}
	if *gatewayCPUs != "" {
		if o.GatewayCPUs, err = bench.ParseCPUList(*gatewayCPUs); err != nil {
			return err
		}
	}
	if *cpuPeriod != 0 && (o.GatewayCPUQuota == 0 || *cpuPeriod < time.Millisecond || *cpuPeriod > time.Second) {
		return fmt.Errorf("--gateway-cpu-period %s: give it with --gateway-cpu-quota, from 1ms to 1s", *cpuPeriod)
	}
	if o.GatewayCPUQuota != 0 {
		// Refused before anything starts, with the path and errno.
		if _, err := bench.CheckCPUQuota(o.GatewayCPUQuota); err != nil {
			return err
		}
	}
	if *smoke {
		o.Loads, o.Duration, o.Rounds = []string{"closed:4", "rate:100"}, 500*time.Millisecond, 1
	}
	fmt.Println(bench.Preamble(time.Now(), o))
	fmt.Println()
	fmt.Println(bench.Header)
	modes := []bool{o.Stream}
	if *both {
		modes = []bool{false, true}
	}
	for _, s := range modes {
		o.Stream = s
		results, err := bench.Run(o)
		if err != nil {
			return err
		}
		for _, r := range results {
			if r.GatewayRPS == 0 {
				return fmt.Errorf("%s %s: the gateway answered nothing", r.Scenario, r.Load)
			}
		}
	}
	return nil
}

// runBareProxy is a plain httputil.ReverseProxy (no auth, no metering),
// the bench's `bare` scenario: what Go's stock reverse proxy costs. It is
// not the floor (floor-proxy is).
func runBareProxy(args []string) error {
	fs := flag.NewFlagSet("bare-proxy", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8081", "address to listen on")
	target := fs.String("target", "http://127.0.0.1:8080", "upstream base URL")
	_ = fs.Parse(args)
	u, err := url.Parse(*target)
	if err != nil {
		return err
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 512, MaxIdleConns: 1024, IdleConnTimeout: 90 * time.Second}
	rp.FlushInterval = -1
	rp.BufferPool = &bufferPool{} // else each request allocates a 32 KB copy buffer
	mux := http.NewServeMux()
	mux.Handle("/", rp)
	mux.HandleFunc("GET /health/liveliness", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`"ok"`)) })
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: *addr, Handler: mux}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if addr := os.Getenv("TOLLGATE_PPROF_ADDR"); addr != "" { // to profile the floor as the gateway is profiled
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

// runFloorProxy is the bench's floor: the least an HTTP forwarder written
// with Go's standard library does per request. It reads the request body
// into a pooled buffer, makes one client call to the same path upstream
// with only the content type, and writes the answer back: whole (one
// write with its length) unless it is an event stream, which is copied
// through a pooled buffer and flushed as it arrives. No ReverseProxy, no
// header copying, no auth, no metering.
func runFloorProxy(args []string) error {
	fs := flag.NewFlagSet("floor-proxy", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8081", "address to listen on")
	target := fs.String("target", "http://127.0.0.1:8080", "upstream base URL")
	_ = fs.Parse(args)
	f := &floorProxy{target: strings.TrimSuffix(*target, "/"), client: &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 512, MaxIdleConns: 1024, IdleConnTimeout: 90 * time.Second, DisableCompression: true}}}
	mux := http.NewServeMux()
	mux.Handle("/", f)
	mux.HandleFunc("GET /health/liveliness", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`"ok"`)) })
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: *addr, Handler: mux}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if addr := os.Getenv("TOLLGATE_PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

type floorProxy struct {
	target string
	client *http.Client
}

var floorBodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (f *floorProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in := floorBodies.Get().(*bytes.Buffer)
	defer floorBodies.Put(in)
	in.Reset()
	if _, err := in.ReadFrom(r.Body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, f.target+r.URL.RequestURI(), bytes.NewReader(in.Bytes()))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
	resp, err := f.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	w.Header().Set("Content-Type", ct)
	if !strings.HasPrefix(ct, "text/event-stream") {
		out := floorBodies.Get().(*bytes.Buffer)
		defer floorBodies.Put(out)
		out.Reset()
		if _, err := out.ReadFrom(resp.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(out.Len()))
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(out.Bytes())
		return
	}
	w.WriteHeader(resp.StatusCode)
	fl, _ := w.(http.Flusher)
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	for {
		n, err := resp.Body.Read(*bp)
		if n > 0 {
			if _, werr := w.Write((*bp)[:n]); werr != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// bufferPool recycles the reverse proxy's copy buffers.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
