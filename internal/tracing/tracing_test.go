package tracing

import (
	"context"
	"encoding/base64"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/tollgate/tollgate/internal/config"
)

func parse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte("model_list:\n  - model_name: m\n    litellm_params: {model: demo/demo}\n"+yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestResolve: which settings turn which exporter on, and the order in
// which the config and the environment name its endpoint, protocol and
// headers.
func TestResolve(t *testing.T) {
	tests := []struct {
		name      string
		yaml      string
		env       map[string]string
		exporters int
		proto     string
		endpoint  string
		headers   map[string]string
	}{
		{name: "off", yaml: "litellm_settings:\n  callbacks: [\"datadog\"]\n"},
		{name: "callback defaults", yaml: "litellm_settings:\n  callbacks: [\"otel\"]\n",
			exporters: 1, proto: ProtoHTTP, endpoint: "http://localhost:4318/v1/traces"},
		{name: "failure callback, grpc default", yaml: "litellm_settings:\n  failure_callback: [\"OTEL\"]\n",
			env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, exporters: 1, proto: ProtoGRPC, endpoint: "http://localhost:4317"},
		{name: "base endpoint gets the path", yaml: "litellm_settings:\n  callbacks: [\"otel\"]\n",
			env:       map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
			exporters: 1, proto: ProtoHTTP, endpoint: "http://c:4318/v1/traces"},
		{name: "traces endpoint as given", yaml: "litellm_settings:\n  callbacks: [\"otel\"]\n",
			env:       map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:9/x"},
			exporters: 1, proto: ProtoHTTP, endpoint: "http://b:9/x"},
		{name: "litellm's variables", yaml: "litellm_settings:\n  callbacks: [\"otel\"]\n",
			env:       map[string]string{"OTEL_EXPORTER": "otlp_grpc", "OTEL_ENDPOINT": "https://api.example.com", "OTEL_HEADERS": "Authorization=Bearer%20abc, x-a=1"},
			exporters: 1, proto: ProtoGRPC, endpoint: "https://api.example.com", headers: map[string]string{"Authorization": "Bearer abc", "x-a": "1"}},
		{name: "config wins", yaml: "general_settings:\n  otel:\n    endpoint: http://cfg:4318\n    protocol: http/protobuf\n    headers: {x-a: cfg}\n",
			env:       map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_HEADERS": "x-a=env,x-b=env"},
			exporters: 1, proto: ProtoHTTP, endpoint: "http://cfg:4318/v1/traces", headers: map[string]string{"x-a": "cfg", "x-b": "env"}},
		{name: "console", yaml: "litellm_settings:\n  callbacks: [\"otel\"]\n", env: map[string]string{"OTEL_EXPORTER": "console"},
			exporters: 1, proto: ProtoConsole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Resolve(parse(t, tt.yaml), envOf(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if tt.exporters == 0 {
				if c != nil {
					t.Fatalf("tracing on: %+v", c)
				}
				return
			}
			if c == nil || len(c.Exporters) != tt.exporters {
				t.Fatalf("config %+v", c)
			}
			e := c.Exporters[0]
			if e.Protocol != tt.proto || e.Endpoint != tt.endpoint {
				t.Errorf("exporter %s %q, want %s %q", e.Protocol, e.Endpoint, tt.proto, tt.endpoint)
			}
			for k, v := range tt.headers {
				if e.Headers[k] != v {
					t.Errorf("header %s = %q, want %q (all: %v)", k, e.Headers[k], v, e.Headers)
				}
			}
		})
	}
}

func TestResolveLangfuseAndResource(t *testing.T) {
	env := map[string]string{"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "LANGFUSE_HOST": "http://lf:3000/",
		"OTEL_RESOURCE_ATTRIBUTES": "service.name=gw,deployment.environment=prod"}
	c, err := Resolve(parse(t, "litellm_settings:\n  success_callback: [\"langfuse_otel\"]\n"), envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Exporters) != 1 {
		t.Fatalf("exporters %+v", c.Exporters)
	}
	e := c.Exporters[0]
	if e.Name != "langfuse" || e.Endpoint != "http://lf:3000/api/public/otel/v1/traces" ||
		e.Headers["Authorization"] != "Basic "+base64.StdEncoding.EncodeToString([]byte("pk:sk")) {
		t.Errorf("langfuse exporter %+v", e)
	}
	if c.ServiceName != "gw" || len(c.Resource) != 1 || string(c.Resource[0].Key) != "deployment.environment" {
		t.Errorf("service %q resource %v", c.ServiceName, c.Resource)
	}
	env["LANGFUSE_OTEL_HOST"] = "https://otel.example.com/api/public/otel"
	if c, err = Resolve(parse(t, "litellm_settings:\n  callbacks: [\"langfuse\"]\n"), envOf(env)); err != nil || c.Exporters[0].Endpoint != "https://otel.example.com/api/public/otel/v1/traces" {
		t.Errorf("LANGFUSE_OTEL_HOST: %v %+v", err, c)
	}
}

// slowExporter blocks each export until released.
type slowExporter struct {
	mu      sync.Mutex
	got     int
	release chan struct{}
}

func (e *slowExporter) ExportSpans(ctx context.Context, spans []trace.ReadOnlySpan) error {
	select {
	case <-e.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	e.mu.Lock()
	e.got += len(spans)
	e.mu.Unlock()
	return nil
}
func (e *slowExporter) Shutdown(context.Context) error { return nil }

// TestQueueDropsWhenFullAndFlushesOnShutdown: OnEnd never waits; past
// the queue's size spans are dropped and counted; Shutdown exports what
// is queued.
func TestQueueDropsWhenFullAndFlushesOnShutdown(t *testing.T) {
	exp := &slowExporter{release: make(chan struct{})}
	q := newQueue("otel", 4, 2, time.Hour, time.Minute, func(context.Context) (trace.SpanExporter, error) { return exp, nil })
	if err := q.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	q.running.Store(true)
	go q.run()
	spans := tracetest.SpanStubs{}
	for range 20 {
		spans = append(spans, tracetest.SpanStub{SpanContext: sampledContext()})
	}
	// The exporter is released only below: an OnEnd that waited for it
	// would never return (the minute only reports that).
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for _, s := range spans.Snapshots() {
			q.OnEnd(s)
		}
	}()
	select {
	case <-ended:
	case <-time.After(time.Minute):
		t.Fatal("OnEnd is waiting for a stuck exporter")
	}
	st := q.stats()
	// At most the queue (4) and the batch the exporter holds (2) are kept.
	if st.Dropped < 14 || st.Capacity != 4 {
		t.Errorf("stats %+v: want at least 14 dropped of 20 with a queue of 4 and a stuck exporter", st)
	}
	close(exp.release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	st = q.stats()
	if int(st.Exported+st.Dropped) != 20 || st.Queued != 0 {
		t.Errorf("after shutdown %+v: every span exported or dropped", st)
	}
}

func sampledContext() oteltrace.SpanContext {
	return oteltrace.NewSpanContext(oteltrace.SpanContextConfig{TraceID: oteltrace.TraceID{1}, SpanID: oteltrace.SpanID{1}, TraceFlags: oteltrace.FlagsSampled})
}

// TestShutdownDeadlineStopsAStuckExport: an exporter that never answers
// holds the shutdown only until its deadline, and its spans count as failed.
func TestShutdownDeadlineStopsAStuckExport(t *testing.T) {
	exp := &slowExporter{release: make(chan struct{})} // never released
	q := newQueue("otel", 8, 2, time.Hour, time.Hour, func(context.Context) (trace.SpanExporter, error) { return exp, nil })
	if err := q.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	q.running.Store(true)
	go q.run()
	spans := tracetest.SpanStubs{}
	for range 5 {
		spans = append(spans, tracetest.SpanStub{SpanContext: sampledContext()})
	}
	for _, s := range spans.Snapshots() {
		q.OnEnd(s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := q.Shutdown(ctx); err == nil {
		t.Error("Shutdown reported no error with spans left unexported")
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("Shutdown took %s past a 200 ms deadline", d)
	}
	select {
	case <-q.done:
	default:
		t.Fatal("run still going after Shutdown returned")
	}
	if st := q.stats(); st.Failed+st.Dropped != 5 || st.Exported != 0 {
		t.Errorf("stats %+v: want the 5 spans failed", st)
	}
}
