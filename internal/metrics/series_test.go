package metrics

import (
	"bytes"
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"
	"weak"

	"github.com/prometheus/common/expfmt"
)

// exposition is the text form of m's request series (the runtime's and
// the process's left out).
func exposition(t *testing.T, m *Metrics) string {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "go_") || strings.HasPrefix(f.GetName(), "process_") || strings.Contains(f.GetName(), "overhead") {
			continue
		}
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// observeUncached is ObserveRequest as it was before the series caches:
// every series resolved by WithLabelValues.
func observeUncached(m *Metrics, r *Request) {
	status := strconv.Itoa(r.Status)
	m.requests.WithLabelValues(r.ModelGroup, status).Inc()
	if r.Provider == "" {
		return
	}
	resp := r.ResponseModel
	if resp == "" {
		resp = r.RequestModel
	}
	m.duration.WithLabelValues(r.Operation, r.Provider, r.RequestModel, resp).Observe(r.Duration.Seconds())
	if r.Stream && r.TTFT > 0 {
		m.ttft.WithLabelValues(r.Operation, r.Provider, r.RequestModel, resp).Observe(r.TTFT.Seconds())
	}
	if r.HasUsage || r.PromptTokens > 0 || r.CompletionTokens > 0 {
		m.tokenUsage.WithLabelValues("input", r.Operation, r.Provider, r.RequestModel, resp).Observe(float64(r.PromptTokens))
		m.tokenUsage.WithLabelValues("output", r.Operation, r.Provider, r.RequestModel, resp).Observe(float64(r.CompletionTokens))
	}
	if r.Cost > 0 {
		m.spendModel.WithLabelValues(r.ModelGroup).Add(r.Cost)
	}
}

// The caches change no series: after a mix of requests (refused before a
// deployment, with and without usage or cost, streams, several models and
// statuses, each seen many times) the exposition is the one WithLabelValues
// alone gives, series for series and count for count: none is made early
// (a group's spend only once it cost something, token usage only with
// usage), none is missed.
func TestSeriesCachesChangeNoSeries(t *testing.T) {
	cached, plain := New(Options{}), New(Options{})
	var reqs []Request
	for i := range 200 {
		r := Request{Operation: "chat", Provider: "openai", RequestModel: fmt.Sprintf("m%d", i%3), ModelGroup: fmt.Sprintf("g%d", i%4),
			Status: []int{200, 429, 502, 200, 418}[i%5], Duration: time.Duration(i) * time.Millisecond}
		switch i % 7 {
		case 0:
			r.Provider = "" // refused before routing
		case 1:
			r.HasUsage, r.PromptTokens, r.CompletionTokens = true, int64(i), 3
		case 2:
			r.Cost, r.PromptTokens = 0.001*float64(i), 5
		case 3:
			r.Stream, r.TTFT, r.ResponseModel = true, time.Millisecond, "served-"+r.RequestModel
		case 4:
			r.Operation = "embeddings"
		}
		reqs = append(reqs, r)
	}
	for i := range reqs {
		cached.ObserveRequest(&reqs[i])
		observeUncached(plain, &reqs[i])
	}
	got, want := exposition(t, cached), exposition(t, plain)
	if got != want {
		t.Fatalf("with the caches:\n%s\nwithout:\n%s", got, want)
	}
	if !strings.Contains(got, `status="418"`) || !strings.Contains(got, "gen_ai_server_time_to_first_token") || regexp.MustCompile(`spend_usd_total\{[^}]*\} 0\n`).MatchString(got) {
		t.Fatalf("the mix did not reach every kind of series:\n%s", got)
	}
}

// A request's label values may be slices of a buffer of its own (the
// answer's bytes, a principal's): a series must keep copies, neither the
// cache nor the vector the buffer, and a later request whose buffer
// holds other bytes must count under its own labels.
func TestSeriesKeepCopiesOfLabels(t *testing.T) {
	m := New(Options{})
	buf := make([]byte, 4096)
	copy(buf, "gpt-4ogroup-a")
	w := weak.Make(&buf[0])
	m.ObserveRequest(&Request{Operation: "chat", Provider: "openai", RequestModel: unsafe.String(&buf[0], 6), ModelGroup: unsafe.String(&buf[6], 7),
		Status: 200, HasUsage: true, PromptTokens: 1, Cost: 0.5})
	copy(buf, "xxxxxxxxxxxxx") // the buffer reused by another request
	m.ObserveRequest(&Request{Operation: "chat", Provider: "openai", RequestModel: "gpt-4o", ModelGroup: "group-a", Status: 200, HasUsage: true, PromptTokens: 1, Cost: 0.5})
	got := exposition(t, m)
	if strings.Contains(got, "xxxx") || !strings.Contains(got, `tollgate_requests_total{model_group="group-a",status="200"} 2`) ||
		!strings.Contains(got, `tollgate_spend_usd_total{model_group="group-a"} 1`) {
		t.Fatalf("series after a reused buffer:\n%s", got)
	}
	buf = nil
	runtime.GC()
	runtime.GC()
	if w.Value() != nil {
		t.Fatal("a request series keeps the buffer its labels were read from alive")
	}
	runtime.KeepAlive(m)
}

// A request seen before resolves its series without allocating.
func TestObserveRequestSeenBeforeAllocatesNothing(t *testing.T) {
	m := New(Options{})
	r := &Request{Operation: "chat", Provider: "openai", RequestModel: "gpt-4", ModelGroup: "gpt-4", Status: 200, HasUsage: true, PromptTokens: 3, CompletionTokens: 4, Cost: 0.1}
	m.ObserveRequest(r)
	if n := testing.AllocsPerRun(100, func() { m.ObserveRequest(r) }); n != 0 {
		t.Fatalf("%v allocations a request", n)
	}
}
