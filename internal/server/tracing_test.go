package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// otlpSink is an OTLP trace receiver: over HTTP (ServeHTTP) and gRPC
// (Export). It keeps every span and the headers of every export.
type otlpSink struct {
	collectortrace.UnimplementedTraceServiceServer
	mu      sync.Mutex
	spans   []*tracepb.Span
	headers []http.Header
	paths   []string
	status  int // HTTP status to answer; 0: 200
}

func (s *otlpSink) add(req *collectortrace.ExportTraceServiceRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			s.spans = append(s.spans, ss.Spans...)
		}
	}
}

func (s *otlpSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	s.mu.Lock()
	s.headers = append(s.headers, r.Header.Clone())
	s.paths = append(s.paths, r.URL.Path)
	status := s.status
	s.mu.Unlock()
	if status != 0 {
		http.Error(w, "down", status)
		return
	}
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(data, &req); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	s.add(&req)
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (s *otlpSink) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	s.add(req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (s *otlpSink) all() []*tracepb.Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*tracepb.Span(nil), s.spans...)
}

// waitSpans waits until ok holds for the spans received (60 s at most).
func (s *otlpSink) waitSpans(t *testing.T, what string, ok func([]*tracepb.Span) bool) []*tracepb.Span {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		spans := s.all()
		if ok(spans) {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; got %d spans: %v", what, len(spans), spanNames(spans))
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func spanNames(spans []*tracepb.Span) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name+"/"+s.Kind.String())
	}
	return out
}

func attr(s *tracepb.Span, key string) *commonpb.AnyValue {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

func attrString(s *tracepb.Span, key string) string {
	if v := attr(s, key); v != nil {
		return v.GetStringValue()
	}
	return ""
}

func attrInt(s *tracepb.Span, key string) int64 {
	if v := attr(s, key); v != nil {
		return v.GetIntValue()
	}
	return -1
}

func attrStrings(s *tracepb.Span, key string) []string {
	v := attr(s, key)
	if v == nil || v.GetArrayValue() == nil {
		return nil
	}
	var out []string
	for _, e := range v.GetArrayValue().Values {
		out = append(out, e.GetStringValue())
	}
	return out
}

// traceUpstream is an OpenAI-compatible upstream that answers 500 to its
// first fail requests, and records each request's trace headers.
type traceUpstream struct {
	fail        atomic.Int64
	mu          sync.Mutex
	traceparent []string
	tracestate  []string
}

func (u *traceUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.traceparent = append(u.traceparent, r.Header.Get("Traceparent"))
	u.tracestate = append(u.tracestate, r.Header.Get("Tracestate"))
	u.mu.Unlock()
	if u.fail.Add(-1) >= 0 {
		http.Error(w, `{"error":{"message":"overloaded","type":"server_error"}}`, http.StatusInternalServerError)
		return
	}
	if bytes.Contains(body, []byte(`"stream":true`)) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range []string{
			`{"id":"chatcmpl-s1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}`,
			`{"id":"chatcmpl-s1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}`,
			`{"id":"chatcmpl-s1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}`,
		} {
			fmt.Fprintf(w, "data: %s\n\n", ev)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"id":"chatcmpl-w1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}`)
}

func (u *traceUpstream) headers() (tp, ts []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.traceparent...), append([]string(nil), u.tracestate...)
}

const traceModels = `model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}/v1", api_key: sk-up}
    model_info: {id: dep-a}
router_settings:
  num_retries: 2
  allowed_fails: 100
general_settings:
  master_key: sk-1234
`

// tracedGateway runs a server (with a SQLite store, so that calls are
// costed) from yaml until the returned stop is called; stop waits for
// Serve to return.
func tracedGateway(t *testing.T, yaml string) (url string, stop func()) {
	t.Helper()
	return tracedGatewayWith(t, yaml, Options{})
}

// tracedGatewayWith is tracedGateway with options (the store is set here,
// and the logger unless opts has one).
func tracedGatewayWith(t *testing.T, yaml string, opts Options) (url string, stop func()) {
	t.Helper()
	cfg, err := config.Parse("trace.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Store = st
	if opts.Logger == nil {
		opts.Logger = testLogger
	}
	srv, err := New(cfg, opts)
	if err != nil {
		st.Close()
		t.Fatalf("server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Error("Serve did not return")
			}
			st.Close()
		})
	}
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

const (
	clientTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID  = "00f067aa0ba902b7"
)

var traceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$`)

// TestTracingSpansOverHTTP: a call continuing the client's trace is a
// request span (its parent the client's span) with GenAI and Tollgate
// attributes, an attempt span per upstream attempt (a retry makes two, the
// first failed), and no admission or budget-hold spans (in process they
// take microseconds: see TestTracingStepSpansOnRedis); the upstream gets the
// attempt's traceparent. Spans are exported at shutdown (the export
// interval is an hour), so the stop flushes them.
func TestTracingSpansOverHTTP(t *testing.T) {
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	up := &traceUpstream{}
	up.fail.Store(1)
	ups := httptest.NewServer(up)
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel:
    endpoint: %q
    protocol: http
    export_interval: 3600
    headers: {x-collector-key: secret-1}
litellm_settings:
  callbacks: ["otel"]
`, col.URL)
	gw, stop := tracedGateway(t, yaml)

	resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","max_tokens":50,"temperature":0.5,"user":"eu-1","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234", "traceparent", "00-"+clientTraceID+"-"+clientSpanID+"-01", "tracestate", "vendor=abc",
		"x-litellm-tags", "team-a,exp")
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	resp, body = post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	if n := len(sink.all()); n != 0 {
		t.Fatalf("%d spans exported before the batch interval or shutdown", n)
	}
	stop() // the shutdown flushes the queue
	spans := sink.all()

	var req, stream *tracepb.Span
	var attempts []*tracepb.Span
	byParent := map[string][]*tracepb.Span{}
	for _, s := range spans {
		byParent[hex.EncodeToString(s.ParentSpanId)] = append(byParent[hex.EncodeToString(s.ParentSpanId)], s)
		if s.Kind != tracepb.Span_SPAN_KIND_SERVER {
			continue
		}
		if hex.EncodeToString(s.TraceId) == clientTraceID {
			req = s
		} else {
			stream = s
		}
	}
	if req == nil || stream == nil {
		t.Fatalf("request spans missing: %v", spanNames(spans))
	}
	if got := hex.EncodeToString(req.ParentSpanId); got != clientSpanID {
		t.Errorf("request span's parent = %s, want the client's span %s", got, clientSpanID)
	}
	if req.Name != "chat gpt-4o-mini" {
		t.Errorf("request span name %q", req.Name)
	}
	reqID := hex.EncodeToString(req.SpanId)
	var steps []string
	for _, s := range byParent[reqID] {
		if hex.EncodeToString(s.TraceId) != clientTraceID {
			t.Errorf("child span %s in trace %x", s.Name, s.TraceId)
		}
		if s.Kind == tracepb.Span_SPAN_KIND_CLIENT {
			attempts = append(attempts, s)
		} else {
			steps = append(steps, s.Name)
		}
	}
	if len(attempts) != 2 {
		t.Fatalf("attempt spans under the request: %d (%v), want 2 (a retry)", len(attempts), spanNames(byParent[reqID]))
	}
	if len(steps) != 0 {
		// Admission and holds in process take microseconds: no spans
		// (TestTracingStepSpansOnRedis has them).
		t.Errorf("step spans under the request: %v, want none (admission in process)", steps)
	}
	first, second := attempts[0], attempts[1]
	if attrInt(first, "tollgate.attempt") == 2 {
		first, second = second, first
	}
	if first.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || attrInt(first, "http.response.status_code") != 500 {
		t.Errorf("first attempt: status %v, http status %d; want an error with 500", first.Status, attrInt(first, "http.response.status_code"))
	}
	if second.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR || attrInt(second, "http.response.status_code") != 200 {
		t.Errorf("second attempt: status %v, http status %d", second.Status, attrInt(second, "http.response.status_code"))
	}
	for _, a := range attempts {
		if attrString(a, "tollgate.deployment") != "dep-a" || attrString(a, "gen_ai.provider.name") != "openai" || attrString(a, "server.address") != "127.0.0.1" {
			t.Errorf("attempt attributes: %v", a.Attributes)
		}
	}
	holds := 0
	for _, s := range byParent[hex.EncodeToString(second.SpanId)] {
		if s.Name == "tollgate.budget_hold" {
			holds++
		}
	}
	if holds != 0 {
		t.Errorf("budget hold spans under the second attempt: %d, want none (a hold in process)", holds)
	}
	// The upstream saw the attempt's context, in the client's trace.
	tps, tss := up.headers()
	if len(tps) < 2 {
		t.Fatalf("upstream requests: %d", len(tps))
	}
	m := traceparentRE.FindStringSubmatch(tps[1])
	if m == nil || m[1] != clientTraceID || m[2] != hex.EncodeToString(second.SpanId) {
		t.Errorf("upstream traceparent %q, want trace %s with parent %x (the second attempt)", tps[1], clientTraceID, second.SpanId)
	}
	if tss[1] != "vendor=abc" {
		t.Errorf("upstream tracestate %q, want the client's", tss[1])
	}
	// GenAI and Tollgate attributes.
	for key, want := range map[string]string{
		"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
		"gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.response.id": "chatcmpl-w1",
		"tollgate.deployment": "dep-a", "tollgate.model_group": "gpt-4o-mini", "tollgate.end_user": "eu-1",
	} {
		if got := attrString(req, key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	for key, want := range map[string]int64{
		"gen_ai.usage.input_tokens": 11, "gen_ai.usage.output_tokens": 7, "gen_ai.request.max_tokens": 50,
		"tollgate.retries": 1, "tollgate.fallbacks": 0, "http.response.status_code": 200,
	} {
		if got := attrInt(req, key); got != want {
			t.Errorf("%s = %d, want %d", key, got, want)
		}
	}
	if got := attrStrings(req, "gen_ai.response.finish_reasons"); len(got) != 1 || got[0] != "stop" {
		t.Errorf("finish reasons %v, want [stop]", got)
	}
	if v := attr(req, "gen_ai.request.temperature"); v == nil || v.GetDoubleValue() != 0.5 {
		t.Errorf("temperature %v", v)
	}
	if v := attr(req, "tollgate.cost_usd"); v == nil || v.GetDoubleValue() <= 0 || attr(req, "gen_ai.usage.cost").GetDoubleValue() != v.GetDoubleValue() {
		t.Errorf("cost %v (gen_ai.usage.cost %v), want > 0 in both", v, attr(req, "gen_ai.usage.cost"))
	}
	if got := attrStrings(req, "tollgate.tags"); strings.Join(got, ",") != "team-a,exp" {
		t.Errorf("tags %v", got)
	}
	if attrString(req, "tollgate.call_id") == "" {
		t.Error("no call id")
	}
	if got := attrStrings(stream, "gen_ai.response.finish_reasons"); len(got) != 1 || got[0] != "length" {
		t.Errorf("stream finish reasons %v, want [length]", got)
	}
	if attrInt(stream, "gen_ai.usage.output_tokens") != 4 || attrString(stream, "gen_ai.response.id") != "chatcmpl-s1" {
		t.Errorf("stream attributes: %v", stream.Attributes)
	}
	// The configured header went with the export.
	sink.mu.Lock()
	h := sink.headers[0]
	path := sink.paths[0]
	sink.mu.Unlock()
	if h.Get("X-Collector-Key") != "secret-1" || path != "/v1/traces" {
		t.Errorf("export to %s with headers %v", path, h)
	}
}

// TestTracingStepSpansOnRedis: with Redis, admission and each budget hold
// are a round trip, so they have spans whatever they took: admission under
// the request, the hold under its attempt.
func TestTracingStepSpansOnRedis(t *testing.T) {
	redisURL := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if redisURL == "" {
		t.Skip("TOLLGATE_TEST_REDIS_URL is not set")
	}
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	ups := httptest.NewServer(&traceUpstream{})
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  redis_url: %q
  otel:
    endpoint: %q
    protocol: http
    export_interval: 3600
litellm_settings:
  callbacks: ["otel"]
`, redisURL, col.URL)
	gw, stop := tracedGatewayWith(t, yaml, Options{RedisPrefix: "trace-steps-" + strconv.FormatInt(time.Now().UnixNano(), 36)})
	resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	stop()
	spans := sink.all()
	byID := map[string]*tracepb.Span{}
	for _, s := range spans {
		byID[hex.EncodeToString(s.SpanId)] = s
	}
	var admit, hold *tracepb.Span
	for _, s := range spans {
		switch s.Name {
		case "tollgate.admit":
			admit = s
		case "tollgate.budget_hold":
			hold = s
		}
	}
	if admit == nil || hold == nil {
		t.Fatalf("step spans on Redis: admit %v, hold %v; spans %v", admit != nil, hold != nil, spanNames(spans))
	}
	if p := byID[hex.EncodeToString(admit.ParentSpanId)]; p == nil || p.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("admission span's parent is not the request span")
	}
	if p := byID[hex.EncodeToString(hold.ParentSpanId)]; p == nil || p.Kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("hold span's parent is not the attempt span")
	}
	for _, s := range []*tracepb.Span{admit, hold} {
		if s.EndTimeUnixNano < s.StartTimeUnixNano || s.StartTimeUnixNano == 0 {
			t.Errorf("%s: start %d, end %d", s.Name, s.StartTimeUnixNano, s.EndTimeUnixNano)
		}
	}
}

// TestTracingOverGRPC exports the same spans over OTLP/gRPC, found by the
// environment (OTEL_EXPORTER_OTLP_ENDPOINT and _PROTOCOL) with callbacks:
// [otel].
func TestTracingOverGRPC(t *testing.T) {
	sink := &otlpSink{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, sink)
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_SERVICE_NAME", "tollgate-test")
	up := &traceUpstream{}
	ups := httptest.NewServer(up)
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + "litellm_settings:\n  success_callback: [\"otel\"]\n"
	gw, _ := tracedGateway(t, yaml)
	resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	spans := sink.waitSpans(t, "a request span and its attempt over gRPC", func(s []*tracepb.Span) bool {
		var server, client bool
		for _, x := range s {
			server = server || x.Kind == tracepb.Span_SPAN_KIND_SERVER
			client = client || x.Kind == tracepb.Span_SPAN_KIND_CLIENT
		}
		return server && client
	})
	var req, att *tracepb.Span
	for _, s := range spans {
		switch s.Kind {
		case tracepb.Span_SPAN_KIND_SERVER:
			req = s
		case tracepb.Span_SPAN_KIND_CLIENT:
			att = s
		}
	}
	if len(req.ParentSpanId) != 0 {
		t.Errorf("a request without traceparent has a parent: %x", req.ParentSpanId)
	}
	if !bytes.Equal(att.ParentSpanId, req.SpanId) || !bytes.Equal(att.TraceId, req.TraceId) {
		t.Error("the attempt is not the request span's child")
	}
	if attrInt(req, "gen_ai.usage.input_tokens") != 11 || attrString(req, "gen_ai.provider.name") != "openai" {
		t.Errorf("attributes: %v", req.Attributes)
	}
	tps, _ := up.headers()
	if m := traceparentRE.FindStringSubmatch(tps[0]); m == nil || m[1] != hex.EncodeToString(req.TraceId) || m[2] != hex.EncodeToString(att.SpanId) {
		t.Errorf("upstream traceparent %q", tps[0])
	}
}

// TestTracingToLangfuse: the langfuse callback exports the spans to
// Langfuse's OTLP endpoint with Basic auth, beside the otel exporter.
func TestTracingToLangfuse(t *testing.T) {
	lf := &otlpSink{}
	lfs := httptest.NewServer(lf)
	defer lfs.Close()
	col := &otlpSink{}
	cols := httptest.NewServer(col)
	defer cols.Close()
	t.Setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-1")
	t.Setenv("LANGFUSE_SECRET_KEY", "sk-lf-2")
	t.Setenv("LANGFUSE_HOST", lfs.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", cols.URL+"/custom/traces")
	up := &traceUpstream{}
	ups := httptest.NewServer(up)
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + "litellm_settings:\n  callbacks: [\"langfuse\", \"otel\"]\n"
	gw, _ := tracedGateway(t, yaml)
	resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	hasRequest := func(s []*tracepb.Span) bool {
		for _, x := range s {
			if x.Kind == tracepb.Span_SPAN_KIND_SERVER && attrString(x, "gen_ai.request.model") == "gpt-4o-mini" {
				return true
			}
		}
		return false
	}
	lf.waitSpans(t, "the request span at Langfuse", hasRequest)
	col.waitSpans(t, "the request span at the collector", hasRequest)
	lf.mu.Lock()
	h, path := lf.headers[0], lf.paths[0]
	lf.mu.Unlock()
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("pk-lf-1:sk-lf-2"))
	if path != "/api/public/otel/v1/traces" || h.Get("Authorization") != want || h.Get("Content-Type") != "application/x-protobuf" {
		t.Errorf("langfuse export to %s, Authorization %q, Content-Type %q", path, h.Get("Authorization"), h.Get("Content-Type"))
	}
	col.mu.Lock()
	cpath, cauth := col.paths[0], col.headers[0].Get("Authorization")
	col.mu.Unlock()
	if cpath != "/custom/traces" || cauth != "" {
		t.Errorf("otel export to %s with Authorization %q: want the traces endpoint as given, without Langfuse's credentials", cpath, cauth)
	}
}

// TestTracingExporterDownCostsNothing: an exporter that hangs or refuses
// never fails or holds up a request; once the tiny queue is full, spans
// are dropped and counted in /metrics.
func TestTracingExporterDownCostsNothing(t *testing.T) {
	release := make(chan struct{})
	var exports atomic.Int64
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		exports.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer hang.Close()
	defer close(release)
	up := &traceUpstream{}
	ups := httptest.NewServer(up)
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel:
    endpoint: %q
    queue_size: 2
    batch_size: 1
    export_interval: 0.01
    export_timeout: 600
litellm_settings:
  callbacks: ["otel"]
`, hang.URL)
	gw, stop := tracedGateway(t, yaml)
	// The exporter answers only when the test ends (or after its 600 s
	// timeout): a request that waited for it would not be back within the
	// two minutes given here to all ten.
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 10; i++ {
			resp, body, err := tryPost(gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
				"Authorization", "Bearer sk-1234")
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
			}
			if err != nil {
				done <- fmt.Errorf("chat %d with the exporter down: %w", i, err)
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("ten requests were not answered in two minutes with the exporter hung: requests wait for it")
	}
	dropped := regexp.MustCompile(`(?m)^tollgate_trace_spans_dropped_total\{exporter="otel"\} (\d+)$`)
	depth := regexp.MustCompile(`(?m)^tollgate_trace_queue_capacity\{exporter="otel"\} 2$`)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(gw + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if m := dropped.FindSubmatch(b); m != nil {
			if n, _ := strconv.Atoi(string(m[1])); n > 0 && exports.Load() > 0 {
				if !depth.Match(b) {
					t.Error("no queue capacity gauge of 2")
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no drops counted with a hung exporter and a queue of 2:\n%s", grepLines(b, "trace_"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = stop
}

func grepLines(b []byte, s string) string {
	var out []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestTracingRefusedExportsAreCounted: a collector answering 500 fails
// its batches (counted), and requests are served as ever.
func TestTracingRefusedExportsAreCounted(t *testing.T) {
	sink := &otlpSink{status: 500}
	col := httptest.NewServer(sink)
	defer col.Close()
	up := &traceUpstream{}
	ups := httptest.NewServer(up)
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 0.01}
litellm_settings:
  callbacks: ["otel"]
`, col.URL)
	gw, _ := tracedGateway(t, yaml)
	resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	failed := regexp.MustCompile(`(?m)^tollgate_trace_spans_failed_total\{exporter="otel"\} ([1-9]\d*)$`)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(gw + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if failed.Match(b) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed spans counted:\n%s", grepLines(b, "trace_"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTraceHeadersPassWithTracingOff: without tracing, the client's
// traceparent and tracestate reach the upstream unchanged.
func TestTraceHeadersPassWithTracingOff(t *testing.T) {
	up := &traceUpstream{}
	ups := httptest.NewServer(up)
	defer ups.Close()
	gw, _ := tracedGateway(t, strings.ReplaceAll(traceModels, "{{UP}}", ups.URL))
	tp := "00-" + clientTraceID + "-" + clientSpanID + "-01"
	resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234", "traceparent", tp, "tracestate", "a=1")
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	resp, body = post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	tps, tss := up.headers()
	if tps[0] != tp || tss[0] != "a=1" {
		t.Errorf("upstream got traceparent %q tracestate %q, want the client's", tps[0], tss[0])
	}
	if tps[1] != "" || tss[1] != "" {
		t.Errorf("upstream got trace headers %q %q the client did not send", tps[1], tss[1])
	}
}

// TestTracingConfigErrors: settings that cannot work stop the start with
// a message naming them.
func TestTracingConfigErrors(t *testing.T) {
	base := "model_list:\n  - model_name: m\n    litellm_params: {model: demo/demo}\n"
	for _, tt := range []struct{ name, yaml, want string }{
		{"protocol", base + "general_settings:\n  otel: {protocol: udp}\n", `unknown otel protocol "udp"`},
		{"endpoint", base + "general_settings:\n  otel: {endpoint: \"localhost:4318\"}\n", "must be an http:// or https:// URL"},
		{"ratio", base + "general_settings:\n  otel: {sample_ratio: 2}\n", "sample_ratio must be between 0 and 1"},
		{"typo", base + "general_settings:\n  otel: {endpont: \"http://x:4318\"}\n", `unknown field "endpont"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("bad.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("config.Parse: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name      string
		env       map[string]string
		callbacks string
		want      string
	}{
		{"env protocol", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, "otel", `OTEL_EXPORTER_OTLP_PROTOCOL: unknown OTLP protocol "thrift"`},
		{"env endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "otel", "OTEL_EXPORTER_OTLP_ENDPOINT: otel endpoint"},
		{"litellm exporter", map[string]string{"OTEL_EXPORTER": "zipkin"}, "otel", `OTEL_EXPORTER "zipkin"`},
		{"langfuse keys", map[string]string{"LANGFUSE_PUBLIC_KEY": ""}, "langfuse", "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, err := config.Parse("t.yaml", []byte(base+"litellm_settings:\n  callbacks: [\""+tt.callbacks+"\"]\n"))
			if err != nil {
				t.Fatal(err)
			}
			srv, err := New(cfg, Options{Logger: testLogger})
			if err == nil {
				srv.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
