package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/router"
)

// Edges of the request path found by review.

// probeRig is newRig over hand-written upstreams and a given meter.
func probeRig(t *testing.T, m Meter, ups map[string]http.HandlerFunc, order []string, pol config.Routing) (*httptest.Server, *fakeLimits, *fakeObserver) {
	t.Helper()
	var deps []config.Deployment
	for i, id := range order {
		up := httptest.NewServer(ups[id])
		t.Cleanup(up.Close)
		deps = append(deps, config.Deployment{ModelName: "g", Provider: "openai", Model: "m", APIBase: up.URL, ID: id, Order: i + 1})
	}
	health := router.NewHealth(nil)
	pol.AllowedFails, pol.Cooldown = 100, time.Minute
	rt, err := router.New(deps, router.Settings{AllowedFails: pol.AllowedFails, Cooldown: pol.Cooldown, Health: health})
	if err != nil {
		t.Fatal(err)
	}
	lim, obs := &fakeLimits{}, &fakeObserver{finishes: make(chan int, 16)}
	g := New(Options{Meter: m, Limits: lim, Observer: obs, Routing: pol, Health: health},
		auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), rt)
	mux := http.NewServeMux()
	g.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, lim, obs
}

func probePost(t *testing.T, url string) *http.Response {
	t.Helper()
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"g","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp
}

// TestFailedAttemptHeadersDoNotLeak: a failed attempt's upstream headers
// must not reach the client on the answer of another deployment (retry
// after a 200 whose body broke off).
func TestFailedAttemptHeadersDoNotLeak(t *testing.T) {
	ups := map[string]http.HandlerFunc{
		"a": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Openai-Organization", "org-of-deployment-a")
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(200)
			_, _ = io.WriteString(w, `{"id":`)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		},
		"b": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, okAnswer)
		},
	}
	srv, _, obs := probeRig(t, &fakeMeter{}, ups, []string{"a", "b"}, config.Routing{NumRetries: 1})
	resp := probePost(t, srv.URL)
	<-obs.finishes
	t.Logf("headers %v retries %d", resp.Header, obs.retries)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if v := resp.Header.Get("Openai-Organization"); v != "" || resp.Header.Get("x-tollgate-model-id") != "b" {
		t.Errorf("answer of deployment %q carries deployment a's header Openai-Organization: %q", resp.Header.Get("x-tollgate-model-id"), v)
	}
}

// panicMeter hands out holds whose capTokens panics, standing for any
// panic between reserve and finish (forward, a stream translator).
type panicMeter struct{ fakeMeter }

type panicHold struct{ *fakeHold }

func (panicHold) capTokens() int64 { panic("boom") }

func (m *panicMeter) reserve(c *call, t *provider.Target, op provider.Op, model string, body []byte) (hold, error) {
	h, err := m.fakeMeter.reserve(c, t, op, model, body)
	if err != nil {
		return nil, err
	}
	return panicHold{h.(*fakeHold)}, nil
}

// TestPanicStillEndsTheCall: a panic while a hold is out must still
// settle the hold, give the rate-limit ticket back and observe the call.
func TestPanicStillEndsTheCall(t *testing.T) {
	ups := map[string]http.HandlerFunc{"a": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, okAnswer)
	}}
	m := &panicMeter{}
	srv, lim, obs := probeRig(t, m, ups, []string{"a"}, config.Routing{})
	resp := probePost(t, srv.URL)
	t.Logf("client got %d", resp.StatusCode)
	// The 500 is written after the panic unwound serve: a deferred finish
	// would have run by now.
	if len(obs.finishes) == 0 {
		t.Errorf("the call was never finished (no log line, no metrics)")
	}
	lim.mu.Lock()
	admitted, returned := lim.admitted, lim.returned
	lim.mu.Unlock()
	if got := m.outcomes(); len(got) != 1 || got[0] != "a:released" {
		t.Errorf("holds %v, want [a:released]", got)
	}
	if admitted != returned {
		t.Errorf("%d tickets taken, %d returned", admitted, returned)
	}
}
