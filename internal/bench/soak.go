package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SoakOptions shape a soak: one gateway under a steady mixed load for a
// long time, its resources sampled as it goes.
type SoakOptions struct {
	Bin      string
	Duration time.Duration // default 10 minutes
	Rate     int           // requests started per second (default 200)
	Every    time.Duration // sampling interval (default 10 s)
	Out      io.Writer
}

// Sample is the gateway process's state at one moment.
type Sample struct {
	At         time.Duration // since the load started
	RSSMB      float64       // VmRSS
	Goroutines int
	FDs        int
	Requests   int64 // finished so far
	Errors     int64 // unexpected outcomes so far (see soakKinds)
}

// SoakResult is a soak's samples and their trends.
type SoakResult struct {
	Samples []Sample
	// Slopes per minute by least squares over the samples taken under load
	// (not the idle first one nor the drained last one), and over their
	// second half (after pools and caches have warmed up).
	RSSSlope, GoroutineSlope, FDSlope             float64
	RSSSlopeLate, GoroutineSlopeLate, FDSlopeLate float64
	ByKind                                        map[string]int64 // requests by kind
	Unexpected                                    map[string]int64 // unexpected outcomes by kind and why
}

// soakConfig has one model group per kind of traffic: the mock upstream is
// steered by the deployment's headers (clients' headers are not forwarded).
// Errors are neither retried nor cooled down, so every one reaches the
// upstream.
func soakConfig(upstream string) string {
	dep := func(name, headers string) string {
		return fmt.Sprintf("  - model_name: %s\n    litellm_params: {model: openai/gpt-4o, api_base: %q, input_cost_per_token: 0.000001, output_cost_per_token: 0.00001, headers: {%s}}\n", name, upstream, headers)
	}
	return "model_list:\n" +
		dep("soak", `x-mock-chunks: "5"`) +
		dep("soak-stream", `x-mock-chunks: "10", x-mock-chunk-delay-ms: "20"`) +
		dep("soak-abandon", `x-mock-chunks: "50", x-mock-chunk-delay-ms: "100"`) +
		dep("soak-error", `x-mock-status: "500"`) +
		dep("soak-slow", `x-mock-delay-ms: "1000"`) +
		"router_settings:\n  num_retries: 0\n  allowed_fails: 1000000000\n" +
		"general_settings:\n  master_key: sk-bench-master\n"
}

// soakKinds is the mix, one request of each in turn: a plain answer, a
// stream read to its end, a stream the client abandons after its first
// chunk, an upstream 500 (expected: 500 passed on), and an answer that
// takes a second to start.
var soakKinds = []struct {
	name, model string
	stream      bool
	abandon     bool
	status      int
}{
	{"plain", "soak", false, false, 200},
	{"stream", "soak-stream", true, false, 200},
	{"abandoned stream", "soak-abandon", true, true, 200},
	{"upstream error", "soak-error", false, false, 500},
	{"slow upstream", "soak-slow", false, false, 200},
}

// Soak runs the gateway (governed: a virtual key with a budget, spend
// logged to SQLite) under a steady mix of soakKinds and samples its RSS,
// goroutines (from its pprof listener) and open file descriptors.
func Soak(o SoakOptions) (SoakResult, error) {
	if o.Duration <= 0 {
		o.Duration = 10 * time.Minute
	}
	if o.Rate <= 0 {
		o.Rate = 200
	}
	if o.Every <= 0 {
		o.Every = 10 * time.Second
	}
	var res SoakResult
	dir, err := os.MkdirTemp("", "tollgate-soak-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	upPort := freePort()
	up, err := launch(o.Bin, dir, fmt.Sprintf("http://127.0.0.1:%d/v1/models", upPort), "mock-upstream", "--addr", fmt.Sprintf("127.0.0.1:%d", upPort))
	if err != nil {
		return res, err
	}
	defer up.stop()
	gwDir := filepath.Join(dir, "gateway")
	if err := os.MkdirAll(gwDir, 0o755); err != nil {
		return res, err
	}
	if err := os.WriteFile(filepath.Join(gwDir, "config.yaml"), []byte(soakConfig(fmt.Sprintf("http://127.0.0.1:%d", upPort))), 0o600); err != nil {
		return res, err
	}
	port, pprofPort := freePort(), freePort()
	os.Setenv("TOLLGATE_PPROF_ADDR", fmt.Sprintf("127.0.0.1:%d", pprofPort)) // inherited by the gateway only
	gw, err := launch(o.Bin, gwDir, fmt.Sprintf("http://127.0.0.1:%d/health/liveliness", port), "serve", "--config", "config.yaml", "--port", fmt.Sprint(port))
	os.Unsetenv("TOLLGATE_PPROF_ADDR")
	if err != nil {
		return res, err
	}
	defer gw.stop()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	key, err := generateKey(base, `{"max_budget": 1000000, "rpm_limit": 100000000, "max_parallel_requests": 100000}`)
	if err != nil {
		return res, err
	}
	pid := gw.cmd.Process.Pid
	pprof := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", pprofPort)

	var (
		done, failed atomic.Int64
		mu           sync.Mutex
		byKind       = map[string]int64{}
		unexpected   = map[string]int64{}
	)
	record := func(kind, why string) {
		done.Add(1)
		mu.Lock()
		byKind[kind]++
		if why != "" {
			failed.Add(1)
			unexpected[kind+": "+why]++
		}
		mu.Unlock()
	}
	client := newClient(512)
	client.Timeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), o.Duration)
	defer cancel()
	started := time.Now()
	sample := func() Sample {
		return Sample{At: time.Since(started), RSSMB: rss(pid), Goroutines: goroutines(pprof), FDs: openFDs(pid),
			Requests: done.Load(), Errors: failed.Load()}
	}
	fmt.Fprintln(o.Out, SoakHeader)
	first := sample()
	res.Samples = append(res.Samples, first)
	fmt.Fprintln(o.Out, soakRow(first))
	var wg sync.WaitGroup
	go func() {
		t := time.NewTicker(o.Every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s := sample()
				mu.Lock()
				res.Samples = append(res.Samples, s)
				mu.Unlock()
				fmt.Fprintln(o.Out, soakRow(s))
			}
		}
	}()
	interval := time.Second / time.Duration(o.Rate)
	next := time.Now()
	for i := 0; ctx.Err() == nil; i++ {
		next = next.Add(interval)
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		}
		k := soakKinds[i%len(soakKinds)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			record(k.name, soakOne(client, base, key, k.model, k.stream, k.abandon, k.status))
		}()
	}
	wg.Wait()
	// Let the gateway settle what was in flight, then take a last sample.
	time.Sleep(min(o.Every, 2*time.Second))
	last := sample()
	mu.Lock()
	res.Samples = append(res.Samples, last)
	mu.Unlock()
	fmt.Fprintln(o.Out, soakRow(last))
	res.ByKind, res.Unexpected = byKind, unexpected
	res.slopes()
	fmt.Fprintln(o.Out)
	fmt.Fprint(o.Out, res.Summary())
	return res, nil
}

// generateKey makes a virtual key with the bench master key.
func generateKey(base, body string) (string, error) {
	req, _ := http.NewRequest("POST", base+"/key/generate", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-bench-master")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_, k, ok := strings.Cut(string(b), `"key":"`)
	if !ok || resp.StatusCode != 200 {
		return "", fmt.Errorf("key/generate: %d %s", resp.StatusCode, b)
	}
	k, _, _ = strings.Cut(k, `"`)
	return k, nil
}

// soakOne sends one request of a kind and says what was unexpected about
// its outcome ("" when nothing was).
func soakOne(c *http.Client, base, key, model string, stream, abandon bool, status int) string {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := fmt.Sprintf(`{"model":%q,"max_tokens":16,"stream":%v,"messages":[{"role":"user","content":"Say hello to the soak test."}]}`, model, stream)
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		return errorKind(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != status {
		return "HTTP " + strconv.Itoa(resp.StatusCode)
	}
	if abandon {
		// Read the first chunk, then hang up mid-stream.
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
			return "first chunk: " + errorKind(err)
		}
		cancel()
		return ""
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "body: " + errorKind(err)
	}
	if stream && !strings.Contains(string(b), "[DONE]") {
		return "stream without [DONE]"
	}
	return ""
}

// rss is the process's current resident set, in MB.
func rss(pid int) float64 { return procStatusMB(pid, "VmRSS:") }

func procStatusMB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// openFDs counts the process's open file descriptors.
func openFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// goroutines reads the count from the first line of the pprof goroutine
// profile ("goroutine profile: total N").
func goroutines(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	_, n, ok := strings.Cut(strings.TrimSpace(line), "total ")
	if !ok {
		return -1
	}
	v, err := strconv.Atoi(n)
	if err != nil {
		return -1
	}
	return v
}

// slope is the least-squares slope of y over x.
func slope(x, y []float64) float64 {
	n := float64(len(x))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx, sy, sxx, sxy = sx+x[i], sy+y[i], sxx+x[i]*x[i], sxy+x[i]*y[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

func (r *SoakResult) slopes() {
	fit := func(s []Sample, f func(Sample) float64) float64 {
		var x, y []float64
		for _, v := range s {
			x, y = append(x, v.At.Minutes()), append(y, f(v))
		}
		return slope(x, y)
	}
	rssOf := func(s Sample) float64 { return s.RSSMB }
	grOf := func(s Sample) float64 { return float64(s.Goroutines) }
	fdOf := func(s Sample) float64 { return float64(s.FDs) }
	// Under load: without the idle first sample and the drained last one.
	load := r.Samples
	if len(load) > 3 {
		load = load[1 : len(load)-1]
	}
	r.RSSSlope, r.GoroutineSlope, r.FDSlope = fit(load, rssOf), fit(load, grOf), fit(load, fdOf)
	late := load[len(load)/2:]
	r.RSSSlopeLate, r.GoroutineSlopeLate, r.FDSlopeLate = fit(late, rssOf), fit(late, grOf), fit(late, fdOf)
}

// SoakHeader is the samples table's header, in Markdown.
const SoakHeader = "| t | RSS | goroutines | open fds | requests done | unexpected |\n|---|---|---|---|---|---|"

func soakRow(s Sample) string {
	return fmt.Sprintf("| %s | %.1f MB | %d | %d | %d | %d |", s.At.Round(time.Second), s.RSSMB, s.Goroutines, s.FDs, s.Requests, s.Errors)
}

// Summary is the slopes and the outcomes, in Markdown.
func (r *SoakResult) Summary() string {
	var b strings.Builder
	b.WriteString("| slope per minute | RSS | goroutines | open fds |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| under load | %+.2f MB | %+.2f | %+.2f |\n", r.RSSSlope, r.GoroutineSlope, r.FDSlope)
	fmt.Fprintf(&b, "| second half | %+.2f MB | %+.2f | %+.2f |\n", r.RSSSlopeLate, r.GoroutineSlopeLate, r.FDSlopeLate)
	var kinds []string
	for k, n := range r.ByKind {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	slices.Sort(kinds)
	fmt.Fprintf(&b, "\nrequests: %s\n", strings.Join(kinds, ", "))
	if len(r.Unexpected) == 0 {
		b.WriteString("unexpected outcomes: none\n")
	} else {
		var why []string
		for k, n := range r.Unexpected {
			why = append(why, fmt.Sprintf("%s: %d", k, n))
		}
		slices.Sort(why)
		fmt.Fprintf(&b, "unexpected outcomes: %s\n", strings.Join(why, ", "))
	}
	return b.String()
}
