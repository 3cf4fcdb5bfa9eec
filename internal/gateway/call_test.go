package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/ratelimit"
	"github.com/tollgate/tollgate/internal/router"
	"github.com/tollgate/tollgate/internal/store"
)

// The gateway's request path, unit-tested: real deployments (httptest
// upstreams that follow a script) behind the real handler, with fakes for
// the Meter, the Limits and the Observer that record every hold, ticket
// and call.

// fakeMeter hands out holds and records how each ended.
type fakeMeter struct {
	mu     sync.Mutex
	holds  []*fakeHold
	refuse error // reserve refuses every call with it
	cap    int64 // holds ask to cap output to this
}

type fakeHold struct {
	m       *fakeMeter
	deploy  string
	outcome string // "booked", "unusable", "released"; "" while held
	settles int
}

func (m *fakeMeter) reserve(c *call, t *provider.Target, op provider.Op, model string, body []byte) (hold, error) {
	if m.refuse != nil {
		return nil, m.refuse
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	h := &fakeHold{m: m, deploy: t.D.ID}
	m.holds = append(m.holds, h)
	return h, nil
}

func (h *fakeHold) settle(res *result) float64 {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	h.settles++
	if h.settles > 1 {
		return 0
	}
	switch {
	case res.unusable:
		h.outcome = "unusable"
	case res.hasUsage || res.estimated || res.chunks > 0:
		h.outcome = "booked"
		return 0.001
	default:
		h.outcome = "released"
	}
	return 0
}

func (h *fakeHold) capTokens() int64                  { return h.m.cap }
func (h *fakeHold) unpriced() string                  { return "" }
func (h *fakeHold) headers(hd http.Header, c float64) { hd.Set("x-test-cost", fmt.Sprint(c)) }
func (h *fakeHold) streamHeaders(http.Header)         {}

// outcomes lists each hold as deployment:outcome, in the order taken.
func (m *fakeMeter) outcomes() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, h := range m.holds {
		out = append(out, h.deploy+":"+h.outcome)
		if h.settles != 1 {
			out = append(out, fmt.Sprintf("%s settled %d times", h.deploy, h.settles))
		}
	}
	return out
}

// fakeLimits admits every call and counts the tickets given back.
type fakeLimits struct {
	mu       sync.Mutex
	admitted int
	returned int
}

func (l *fakeLimits) admit(c *call, t *provider.Target) (*ratelimit.Ticket, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.admitted++
	return &ratelimit.Ticket{}, nil
}

func (l *fakeLimits) done(tk *ratelimit.Ticket, used int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.returned++
}

// fakeObserver records every finished call on a channel.
type fakeObserver struct {
	mu       sync.Mutex
	finishes chan int
	retries  int
	fallback []string
	refusals int
}

func (o *fakeObserver) finished(c *call, status int) { o.finishes <- status }
func (o *fakeObserver) retried(string) {
	o.mu.Lock()
	o.retries++
	o.mu.Unlock()
}
func (o *fakeObserver) fellBack(from, to string) {
	o.mu.Lock()
	o.fallback = append(o.fallback, from+">"+to)
	o.mu.Unlock()
}
func (o *fakeObserver) budgetRefused(store.Kind) { o.refusals++ }

// script is what one upstream answers, request by request; the last step
// repeats.
type script struct {
	mu    sync.Mutex
	steps []string
	calls int
}

func (s *script) next() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	step := s.steps[min(s.calls, len(s.steps))-1]
	return step
}

func (s *script) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

const okAnswer = `{"id":"c1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`

func chunk(text string) string {
	return `data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"` + text + `"}}]}` + "\n\n"
}

// serve answers one step: ok, garbage, a status (500, 429, 400), ctx (a
// context-window 400), close (no answer), stream, stream-cut-N (N content
// events, then the connection drops), slow-stream (events until the
// client leaves).
func (s *script) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	step := s.next()
	flush := func() { w.(http.Flusher).Flush() }
	switch {
	case step == "ok":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, okAnswer)
	case step == "garbage":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "this is not json")
	case step == "ctx":
		w.WriteHeader(400)
		_, _ = io.WriteString(w, `{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}`)
	case step == "close":
		panic(http.ErrAbortHandler)
	case step == "stream":
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, chunk("a")+chunk("b"))
		_, _ = io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`+"\n\ndata: [DONE]\n\n")
	case strings.HasPrefix(step, "stream-cut-"):
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		var n int
		_, _ = fmt.Sscanf(step, "stream-cut-%d", &n)
		for range n {
			_, _ = io.WriteString(w, chunk("x"))
		}
		flush()
		panic(http.ErrAbortHandler)
	case step == "slow-stream":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for r.Context().Err() == nil {
			_, _ = io.WriteString(w, chunk("x"))
			flush()
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	default: // a status
		var code int
		_, _ = fmt.Sscanf(step, "%d", &code)
		w.WriteHeader(code)
		_, _ = fmt.Fprintf(w, `{"error":{"message":"upstream says %d","type":"upstream_error"}}`, code)
	}
}

// rig is a gateway over scripted deployments.
type rig struct {
	srv     *httptest.Server
	meter   *fakeMeter
	limits  *fakeLimits
	obs     *fakeObserver
	scripts map[string]*script
}

// deployment names a scripted deployment: its id, group and priority.
type deployment struct {
	id, group string
	order     int
	steps     []string
}

func newRig(t *testing.T, deps []deployment, pol config.Routing) *rig {
	t.Helper()
	rg := &rig{meter: &fakeMeter{}, limits: &fakeLimits{}, obs: &fakeObserver{finishes: make(chan int, 16)}, scripts: map[string]*script{}}
	var cfgDeps []config.Deployment
	for _, d := range deps {
		s := &script{steps: d.steps}
		up := httptest.NewServer(http.HandlerFunc(s.serve))
		t.Cleanup(up.Close)
		rg.scripts[d.id] = s
		cfgDeps = append(cfgDeps, config.Deployment{ModelName: d.group, Provider: "openai", Model: "m", APIBase: up.URL, ID: d.id, Order: d.order})
	}
	health := router.NewHealth(nil)
	if pol.Cooldown == 0 { // no cooldowns unless a test asks
		pol.AllowedFails, pol.Cooldown = 100, time.Minute
	}
	rt, err := router.New(cfgDeps, router.Settings{AllowedFails: pol.AllowedFails, Cooldown: pol.Cooldown, Health: health})
	if err != nil {
		t.Fatal(err)
	}
	g := New(Options{Meter: rg.meter, Limits: rg.limits, Observer: rg.obs, Routing: pol, Health: health},
		auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), rt)
	mux := http.NewServeMux()
	g.Register(mux)
	rg.srv = httptest.NewServer(mux)
	t.Cleanup(rg.srv.Close)
	return rg
}

// post sends a chat request and reads the whole answer.
func (rg *rig) post(t *testing.T, model string, stream bool) (int, string) {
	t.Helper()
	body := fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, model, stream)
	resp, err := http.Post(rg.srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// finished waits for the call to end and returns the status it was
// observed with.
func (rg *rig) finished(t *testing.T) int {
	t.Helper()
	select {
	case s := <-rg.obs.finishes:
		return s
	case <-time.After(time.Minute):
		t.Fatal("the call never finished")
		return 0
	}
}

// TestCallPaths: retries, fallbacks and failures, with every hold settled
// exactly once - booked when an answer came, released otherwise - and the
// rate-limit ticket given back.
func TestCallPaths(t *testing.T) {
	tests := []struct {
		name     string
		deps     []deployment
		pol      config.Routing
		model    string
		stream   bool
		status   int    // what the client gets
		observed int    // what the call is observed as
		contains string // in the client's body
		holds    []string
		retries  int
		fellBack []string
	}{
		{name: "answered", deps: []deployment{{"a", "g", 1, []string{"ok"}}},
			status: 200, observed: 200, contains: `"content":"hi"`, holds: []string{"a:booked"}},
		{name: "retried on another deployment", deps: []deployment{{"a", "g", 1, []string{"500"}}, {"b", "g", 2, []string{"ok"}}},
			pol: config.Routing{NumRetries: 1}, status: 200, observed: 200, holds: []string{"a:released", "b:booked"}, retries: 1},
		{name: "no answer, retried", deps: []deployment{{"a", "g", 1, []string{"close"}}, {"b", "g", 2, []string{"ok"}}},
			pol: config.Routing{NumRetries: 1}, status: 200, observed: 200, holds: []string{"a:released", "b:booked"}, retries: 1},
		{name: "retries spent, then the fallback group", deps: []deployment{{"a", "g", 1, []string{"429"}}, {"b", "g", 2, []string{"500"}}, {"f", "fb", 1, []string{"ok"}}},
			pol: config.Routing{NumRetries: 1, Fallbacks: map[string][]string{"g": {"fb"}}}, status: 200, observed: 200,
			holds: []string{"a:released", "b:released", "f:booked"}, retries: 1, fellBack: []string{"g>fb"}},
		{name: "every attempt fails: the last failure", deps: []deployment{{"a", "g", 1, []string{"503"}}, {"b", "g", 2, []string{"500"}}},
			pol: config.Routing{NumRetries: 1}, status: 500, observed: 500, contains: "upstream says 500", holds: []string{"a:released", "b:released"}, retries: 1},
		{name: "a 400 is not retried", deps: []deployment{{"a", "g", 1, []string{"400"}}, {"b", "g", 2, []string{"ok"}}},
			pol: config.Routing{NumRetries: 3}, status: 400, observed: 400, contains: "upstream says 400", holds: []string{"a:released"}},
		{name: "context window: its own fallbacks", deps: []deployment{{"a", "g", 1, []string{"ctx"}}, {"big", "g-big", 1, []string{"ok"}}},
			pol: config.Routing{ContextWindowFallbacks: map[string][]string{"g": {"g-big"}}}, status: 200, observed: 200,
			holds: []string{"a:released", "big:booked"}, fellBack: []string{"g>g-big"}},
		{name: "unusable answer: booked without cost, not retried", deps: []deployment{{"a", "g", 1, []string{"garbage"}}, {"b", "g", 2, []string{"ok"}}},
			pol: config.Routing{NumRetries: 1}, status: 502, observed: 502, holds: []string{"a:unusable"}},
		{name: "unknown model", deps: []deployment{{"a", "g", 1, []string{"ok"}}}, model: "nope",
			status: 404, observed: 404, contains: "model_not_found"},
		{name: "stream answered", deps: []deployment{{"a", "g", 1, []string{"stream"}}}, stream: true,
			status: 200, observed: 200, contains: "[DONE]", holds: []string{"a:booked"}},
		{name: "stream cut before its headers: retried", deps: []deployment{{"a", "g", 1, []string{"close"}}, {"b", "g", 2, []string{"stream"}}},
			pol: config.Routing{NumRetries: 1}, stream: true, status: 200, observed: 200, holds: []string{"a:released", "b:booked"}, retries: 1},
		// A stream the upstream breaks off after its headers: the client
		// keeps its 200 and what it got, that is booked, and the call is
		// observed as the failure it is (502).
		{name: "stream cut before its first event", deps: []deployment{{"a", "g", 1, []string{"stream-cut-0"}}, {"b", "g", 2, []string{"stream"}}},
			pol: config.Routing{NumRetries: 1}, stream: true, status: 200, observed: 502, holds: []string{"a:released"}},
		{name: "stream cut after two events: what it produced is booked", deps: []deployment{{"a", "g", 1, []string{"stream-cut-2"}}, {"b", "g", 2, []string{"stream"}}},
			pol: config.Routing{NumRetries: 1}, stream: true, status: 200, observed: 502, contains: `"content":"x"`, holds: []string{"a:booked"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, tt.deps, tt.pol)
			model := tt.model
			if model == "" {
				model = "g"
			}
			status, body := rg.post(t, model, tt.stream)
			observed := rg.finished(t)
			if status != tt.status || observed != tt.observed || !strings.Contains(body, tt.contains) {
				t.Fatalf("client got %d %q, call observed as %d; want %d (%d) containing %q", status, body, observed, tt.status, tt.observed, tt.contains)
			}
			if got := rg.meter.outcomes(); !slices.Equal(got, tt.holds) {
				t.Fatalf("holds %v, want %v", got, tt.holds)
			}
			rg.obs.mu.Lock()
			retries, fellBack := rg.obs.retries, rg.obs.fallback
			rg.obs.mu.Unlock()
			if retries != tt.retries || !slices.Equal(fellBack, tt.fellBack) {
				t.Fatalf("%d retries, fallbacks %v; want %d, %v", retries, fellBack, tt.retries, tt.fellBack)
			}
			rg.limits.mu.Lock()
			admitted, returned := rg.limits.admitted, rg.limits.returned
			rg.limits.mu.Unlock()
			if admitted != returned || (tt.status != 404 && admitted != 1) {
				t.Fatalf("%d tickets taken, %d given back", admitted, returned)
			}
		})
	}
}

// TestCallRefusedByBudget: a refusal reaches no upstream, leaves no hold,
// and gives the rate-limit ticket back.
func TestCallRefusedByBudget(t *testing.T) {
	rg := newRig(t, []deployment{{"a", "g", 1, []string{"ok"}}}, config.Routing{})
	rg.meter.refuse = apierror.BudgetExceeded("Budget has been exceeded for key k")
	status, body := rg.post(t, "g", false)
	if observed := rg.finished(t); status != 400 || observed != 400 || !strings.Contains(body, "budget_exceeded") {
		t.Fatalf("%d (%d) %s", status, observed, body)
	}
	if n := rg.scripts["a"].count(); n != 0 || len(rg.meter.outcomes()) != 0 || rg.limits.returned != 1 {
		t.Fatalf("upstream called %d times, holds %v, tickets back %d", n, rg.meter.outcomes(), rg.limits.returned)
	}
}

// TestCallCooldown: a deployment that failed cools down, and the next call
// goes straight to the other one; when every deployment cools down the
// client gets a 429 that says when to retry.
func TestCallCooldown(t *testing.T) {
	rg := newRig(t, []deployment{{"a", "g", 1, []string{"500"}}, {"b", "g", 2, []string{"ok", "500"}}},
		config.Routing{NumRetries: 1, AllowedFails: 0, Cooldown: time.Hour}) // cool down at the first failure
	if status, body := rg.post(t, "g", false); status != 200 {
		t.Fatalf("first call: %d %s", status, body)
	}
	rg.finished(t)
	if status, body := rg.post(t, "g", false); status != 500 {
		t.Fatalf("second call (b fails now): %d %s", status, body)
	}
	rg.finished(t)
	if a := rg.scripts["a"].count(); a != 1 {
		t.Fatalf("deployment a was called %d times after cooling down, want 1", a)
	}
	status, body := rg.post(t, "g", false)
	if observed := rg.finished(t); status != 429 || observed != 429 || !strings.Contains(body, "deployments_cooling_down") {
		t.Fatalf("every deployment cooling down: %d (%d) %s", status, observed, body)
	}
	if got := rg.meter.outcomes(); !slices.Equal(got, []string{"a:released", "b:booked", "b:released"}) {
		t.Fatalf("holds %v", got)
	}
}

// TestCallClientLeavesStream: a client that leaves mid-stream is observed
// as 499, and what the stream produced is still booked.
func TestCallClientLeavesStream(t *testing.T) {
	rg := newRig(t, []deployment{{"a", "g", 1, []string{"slow-stream"}}}, config.Routing{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", rg.srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"g","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data:") {
		t.Fatalf("first line %q: %v", line, err)
	}
	cancel()
	resp.Body.Close()
	if observed := rg.finished(t); observed != 499 {
		t.Fatalf("observed as %d, want 499", observed)
	}
	if got := rg.meter.outcomes(); !slices.Equal(got, []string{"a:booked"}) {
		t.Fatalf("holds %v", got)
	}
}

// TestCallCapsOutput: a hold that asks for a cap lowers the request's
// output limit upstream and says so to the client.
func TestCallCapsOutput(t *testing.T) {
	var seen string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen = string(b)
		_, _ = io.WriteString(w, okAnswer)
	}))
	defer up.Close()
	rt, err := router.New([]config.Deployment{{ModelName: "g", Provider: "openai", Model: "m", APIBase: up.URL, ID: "a"}}, router.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeMeter{cap: 40}
	g := New(Options{Meter: m}, auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), rt)
	mux := http.NewServeMux()
	g.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"g","max_tokens":500,"messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("x-tollgate-output-capped") != "40" || !strings.Contains(seen, `"max_tokens":40`) {
		t.Fatalf("%d, capped %q, upstream saw %s", resp.StatusCode, resp.Header.Get("x-tollgate-output-capped"), seen)
	}
}
