// Package tracing exports the gateway's OpenTelemetry spans: it reads
// where they go (general_settings.otel, LiteLLM's callbacks otel and
// langfuse, the OTEL_* and LANGFUSE_* environment variables), and builds a
// tracer provider whose exporters each sit behind a bounded queue, so that
// an exporter that is slow or down never holds a request up: its spans are
// dropped and counted. The provider runs as one of the server's actors; its
// stop exports what is queued, within a deadline.
package tracing

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate/tollgate/internal/config"
)

// Protocols an exporter speaks.
const (
	ProtoHTTP    = "http" // OTLP/HTTP, protobuf
	ProtoGRPC    = "grpc"
	ProtoConsole = "console" // JSON lines on stderr (LiteLLM's OTEL_EXPORTER=console)
)

// Exporter is one destination for spans.
type Exporter struct {
	Name     string // otel or langfuse: the metrics' exporter label
	Protocol string
	// Endpoint: for http the full traces URL; for grpc scheme://host:port.
	Endpoint string
	Headers  map[string]string
	// Content: the exporter is sent the calls' content (the request
	// span's ContentAttrs); otherwise they are taken off its spans. On
	// for langfuse; for otel only with the GenAI conventions' opt-in,
	// OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true.
	Content bool
}

// ContentAttrs are the span attributes that hold a call's content
// (gateway.AttrContentInput and AttrContentOutput).
var ContentAttrs = []attribute.Key{"langfuse.observation.input", "langfuse.observation.output"}

// Config is the resolved tracing setup; nil when tracing is off.
type Config struct {
	ServiceName    string
	Resource       []attribute.KeyValue // from OTEL_RESOURCE_ATTRIBUTES
	SampleRatio    float64
	QueueSize      int
	BatchSize      int
	ExportInterval time.Duration
	ExportTimeout  time.Duration
	Exporters      []Exporter
}

// Names reports which LiteLLM callback names turn which exporter on.
func named(cfg *config.Config, names ...string) bool {
	s := cfg.LiteLLMSettings
	for _, list := range [][]string{s.Callbacks, s.SuccessCallback, s.FailureCallback} {
		for _, n := range list {
			if slices.Contains(names, strings.ToLower(strings.TrimSpace(n))) {
				return true
			}
		}
	}
	return false
}

// Resolve reads cfg and the environment (getenv) into a Config, or nil
// when no exporter is on: otel by general_settings.otel or a callback
// named otel (or opentelemetry); langfuse by a callback named langfuse or
// langfuse_otel. Configuration that cannot work is an error.
func Resolve(cfg *config.Config, getenv func(string) string) (*Config, error) {
	o := cfg.GeneralSettings.OTel
	otelOn := o != nil || named(cfg, config.OTelCallbacks...)
	langfuseOn := named(cfg, config.LangfuseCallbacks...)
	if !otelOn && !langfuseOn {
		return nil, nil
	}
	if o == nil {
		o = &config.OTelSettings{}
	}
	c := &Config{ServiceName: "tollgate", SampleRatio: 1, QueueSize: 2048, BatchSize: 512,
		ExportInterval: time.Second, ExportTimeout: 10 * time.Second}
	if v := getenv("OTEL_SERVICE_NAME"); v != "" {
		c.ServiceName = v
	}
	if o.ServiceName != "" {
		c.ServiceName = o.ServiceName
	}
	if v := getenv("OTEL_RESOURCE_ATTRIBUTES"); v != "" {
		kv, err := parsePairs(v)
		if err != nil {
			return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
		}
		for _, k := range sortedKeys(kv) {
			if k == "service.name" && getenv("OTEL_SERVICE_NAME") == "" && o.ServiceName == "" {
				c.ServiceName = kv[k]
				continue
			}
			c.Resource = append(c.Resource, attribute.String(k, kv[k]))
		}
	}
	if v := getenv("OTEL_TRACES_SAMPLER_ARG"); v != "" && o.SampleRatio == nil {
		r, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(r >= 0 && r <= 1) {
			return nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG %q is not a sampling ratio: a number from 0 to 1 (0.05 samples 5%% of new traces)", v)
		}
		c.SampleRatio = r
	}
	if o.SampleRatio != nil {
		c.SampleRatio = *o.SampleRatio
	}
	if o.QueueSize != nil {
		c.QueueSize = *o.QueueSize
	}
	if o.BatchSize != nil {
		c.BatchSize = *o.BatchSize
	}
	if o.ExportInterval != nil {
		c.ExportInterval = time.Duration(*o.ExportInterval)
	}
	if o.ExportTimeout != nil {
		c.ExportTimeout = time.Duration(*o.ExportTimeout)
	}
	if otelOn {
		e, err := otelExporter(o, getenv)
		if err != nil {
			return nil, err
		}
		e.Content = strings.EqualFold(strings.TrimSpace(getenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")), "true") &&
			!cfg.NoMessageLogging(config.OTelCallbacks...)
		c.Exporters = append(c.Exporters, e)
	}
	if langfuseOn {
		e, err := langfuseExporter(getenv, named(cfg, "langfuse_otel") && !named(cfg, "langfuse"))
		if err != nil {
			return nil, err
		}
		// callback_settings.langfuse.message_logging: false: no content.
		e.Content = !cfg.NoMessageLogging(config.LangfuseCallbacks...)
		c.Exporters = append(c.Exporters, e)
	}
	return c, nil
}

// otelExporter resolves the otel exporter: general_settings.otel first,
// then OpenTelemetry's variables, then LiteLLM's (OTEL_EXPORTER,
// OTEL_ENDPOINT, OTEL_HEADERS).
func otelExporter(o *config.OTelSettings, getenv func(string) string) (Exporter, error) {
	e := Exporter{Name: "otel", Headers: map[string]string{}}
	// The protocol.
	proto := o.Protocol
	from := "general_settings.otel.protocol"
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if proto == "" {
			proto, from = getenv(name), name
		}
	}
	if proto == "" {
		if v := getenv("OTEL_EXPORTER"); v != "" {
			from = "OTEL_EXPORTER"
			// LiteLLM's values: otlp_http, http/protobuf and http/json
			// are OTLP/HTTP; otlp_grpc and grpc are OTLP/gRPC.
			switch strings.ToLower(strings.TrimSpace(v)) {
			case "otlp_http", "otlp", "http/protobuf", "http/json":
				proto = ProtoHTTP
			case "otlp_grpc", "grpc":
				proto = ProtoGRPC
			case "console":
				proto = ProtoConsole
			default:
				return e, fmt.Errorf("OTEL_EXPORTER %q is not an exporter Tollgate has (valid: otlp_http, http/protobuf, http/json, otlp_grpc, grpc, console)", v)
			}
		}
	}
	switch proto {
	case "", "http", "http/protobuf", "http/json":
		// http/json is sent as protobuf: the collector takes both.
		e.Protocol = ProtoHTTP
	case ProtoGRPC, ProtoConsole:
		e.Protocol = proto
	default:
		return e, fmt.Errorf("%s: unknown OTLP protocol %q (valid: http/protobuf, grpc)", from, proto)
	}
	// The endpoint: a traces URL is used as given; a base URL gets
	// /v1/traces (OTLP/HTTP) added.
	var ep string
	base := false
	switch {
	case o.Endpoint != "":
		ep, from = string(o.Endpoint), "general_settings.otel.endpoint"
		base = e.Protocol == ProtoHTTP && strings.Trim(mustPath(ep), "/") == ""
	case getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "":
		ep, from = getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	case getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "":
		ep, from, base = getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "OTEL_EXPORTER_OTLP_ENDPOINT", true
	case getenv("OTEL_ENDPOINT") != "":
		ep, from = getenv("OTEL_ENDPOINT"), "OTEL_ENDPOINT"
		if e.Protocol == ProtoHTTP && config.CheckOTelEndpoint(ep) == nil {
			ep = litellmTracesURL(ep)
		}
	case e.Protocol == ProtoGRPC:
		ep, from = "http://localhost:4317", "the default"
	default:
		ep, from, base = "http://localhost:4318", "the default", true
	}
	if e.Protocol != ProtoConsole {
		if err := config.CheckOTelEndpoint(ep); err != nil {
			return e, fmt.Errorf("%s: %w", from, err)
		}
		if base && e.Protocol == ProtoHTTP {
			ep = strings.TrimRight(ep, "/") + "/v1/traces"
		}
		e.Endpoint = ep
	}
	// Headers: the environment's, then the config's over them.
	for _, name := range []string{"OTEL_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"} {
		if v := getenv(name); v != "" {
			kv, err := parsePairs(v)
			if err != nil {
				return e, fmt.Errorf("%s: %w", name, err)
			}
			for k, v := range kv {
				e.Headers[k] = v
			}
		}
	}
	for k, v := range o.Headers {
		e.Headers[k] = string(v)
	}
	return e, nil
}

// litellmTracesURL is LiteLLM's OTEL_ENDPOINT as it sends traces there
// over OTLP/HTTP: a URL ending in /v1/traces is kept, one ending in
// /v1/logs or /v1/metrics (the endpoint of another signal) gets /v1/traces
// instead, one ending in /v1 gets /traces, any other gets /v1/traces.
func litellmTracesURL(ep string) string {
	u, err := url.Parse(ep)
	if err != nil {
		return ep
	}
	p := strings.TrimRight(u.Path, "/")
	switch {
	case strings.HasSuffix(p, "/v1/traces"):
	case strings.HasSuffix(p, "/v1/logs"), strings.HasSuffix(p, "/v1/metrics"):
		p = p[:strings.LastIndexByte(p, '/')] + "/traces"
	case strings.HasSuffix(p, "/v1"):
		p += "/traces"
	default:
		p += "/v1/traces"
	}
	u.Path, u.RawPath = p, ""
	return u.String()
}

func mustPath(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return u.Path
}

// Langfuse's clouds: the Langfuse SDK's (and LiteLLM's langfuse
// callback's) default is the EU one; LiteLLM's langfuse_otel callback
// defaults to the US one.
const (
	langfuseEU = "https://cloud.langfuse.com"
	langfuseUS = "https://us.cloud.langfuse.com"
)

// langfuseExporter is Langfuse's OTLP ingestion: {LANGFUSE_OTEL_HOST or
// LANGFUSE_HOST}/api/public/otel/v1/traces with Basic auth. Without a
// host it is Langfuse's US cloud when only langfuse_otel is named (usOnly),
// else its EU cloud; a host without a scheme gets https:// (as LiteLLM
// does).
func langfuseExporter(getenv func(string) string, usOnly bool) (Exporter, error) {
	pk, sk := getenv("LANGFUSE_PUBLIC_KEY"), getenv("LANGFUSE_SECRET_KEY")
	if pk == "" || sk == "" {
		return Exporter{}, errors.New("the langfuse callback needs LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY")
	}
	host := getenv("LANGFUSE_OTEL_HOST")
	from := "LANGFUSE_OTEL_HOST"
	if host == "" {
		host, from = getenv("LANGFUSE_HOST"), "LANGFUSE_HOST"
	}
	host = strings.TrimSpace(host)
	switch {
	case host == "" && usOnly:
		host = langfuseUS
	case host == "":
		host = langfuseEU
	case !strings.Contains(host, "://"):
		host = "https://" + host
	}
	if err := config.CheckOTelEndpoint(host); err != nil {
		return Exporter{}, fmt.Errorf("%s: %w", from, err)
	}
	host = strings.TrimRight(host, "/")
	host = strings.TrimSuffix(host, "/api/public/otel")
	return Exporter{Name: "langfuse", Protocol: ProtoHTTP, Endpoint: host + "/api/public/otel/v1/traces", Content: true,
		Headers: map[string]string{
			"Authorization":                "Basic " + base64.StdEncoding.EncodeToString([]byte(pk+":"+sk)),
			"x-langfuse-ingestion-version": "4",
		}}, nil
}

// parsePairs reads the OTEL_*_HEADERS and OTEL_RESOURCE_ATTRIBUTES format:
// key=value pairs separated by commas, values URL-encoded.
func parsePairs(s string) (map[string]string, error) {
	out := map[string]string{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", part)
		}
		if d, err := url.PathUnescape(strings.TrimSpace(v)); err == nil {
			v = d
		}
		out[k] = strings.TrimSpace(v)
	}
	return out, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Provider is the running tracer provider: a Tracer for the gateway, one
// queue per exporter, and the actor that runs them.
type Provider struct {
	tp     *sdktrace.TracerProvider
	queues []*queue
	tracer trace.Tracer
}

// New builds the provider; nothing runs and nothing is dialled until Start.
// Failed exports are logged on log (at most once a minute per exporter).
func New(c *Config, version string, log *slog.Logger) (*Provider, error) {
	attrs := append([]attribute.KeyValue{attribute.String("service.name", c.ServiceName),
		attribute.String("service.version", version)}, c.Resource...)
	res := resource.NewWithAttributes("", attrs...)
	p := &Provider{}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio)))}
	for _, e := range c.Exporters {
		q := newQueue(e.Name, c.QueueSize, c.BatchSize, c.ExportInterval, c.ExportTimeout, exporterFor(e, c.ExportTimeout))
		q.log, q.content = log, e.Content
		p.queues = append(p.queues, q)
		opts = append(opts, sdktrace.WithSpanProcessor(q))
	}
	// Spans hold content only when an exporter takes it: only then do the
	// others look for it to take it off.
	for _, q := range p.queues {
		q.strip = !q.content && p.TakesContent()
	}
	p.tp = sdktrace.NewTracerProvider(opts...)
	p.tracer = p.tp.Tracer("github.com/tollgate/tollgate/internal/gateway", trace.WithInstrumentationVersion(version))
	return p, nil
}

// exporterFor makes e's exporter when the provider starts. The OTLP
// exporters' own retries are off: the queue's export deadline bounds a
// batch, and a batch that fails is counted and dropped.
func exporterFor(e Exporter, timeout time.Duration) func(context.Context) (sdktrace.SpanExporter, error) {
	return func(ctx context.Context) (sdktrace.SpanExporter, error) {
		switch e.Protocol {
		case ProtoGRPC:
			u, err := url.Parse(e.Endpoint)
			if err != nil {
				return nil, err
			}
			opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(u.Host), otlptracegrpc.WithHeaders(e.Headers),
				otlptracegrpc.WithTimeout(timeout), otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false})}
			if u.Scheme == "http" {
				opts = append(opts, otlptracegrpc.WithInsecure())
			}
			return otlptracegrpc.New(ctx, opts...)
		case ProtoConsole:
			return stdouttrace.New(stdouttrace.WithWriter(os.Stderr))
		default:
			return otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(e.Endpoint), otlptracehttp.WithHeaders(e.Headers),
				otlptracehttp.WithTimeout(timeout), otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
		}
	}
}

// TakesContent reports whether an exporter is sent the calls' content.
func (p *Provider) TakesContent() bool {
	for _, q := range p.queues {
		if q.content {
			return true
		}
	}
	return false
}

// Tracer is the gateway's tracer.
func (p *Provider) Tracer() trace.Tracer { return p.tracer }

// Start makes the exporters.
func (p *Provider) Start(ctx context.Context) error {
	for _, q := range p.queues {
		if err := q.start(ctx); err != nil {
			return fmt.Errorf("tracing exporter %s: %w", q.name, err)
		}
	}
	return nil
}

// Run exports until ctx ends, then exports what is queued within
// flushTimeout and stops.
func (p *Provider) Run(ctx context.Context, flushTimeout time.Duration) error {
	for _, q := range p.queues {
		q.running.Store(true)
		go q.run()
	}
	<-ctx.Done()
	return p.shutdown(flushTimeout)
}

// shutdown stops every queue at once, each exporting what it holds within
// its own flushTimeout: an exporter that hangs costs the others nothing
// (the SDK's TracerProvider.Shutdown shares one deadline among its
// processors in turn, and skips those left when it passes). Every queue's
// goroutine has returned when shutdown does.
func (p *Provider) shutdown(flushTimeout time.Duration) error {
	errs := make([]error, len(p.queues))
	var wg sync.WaitGroup
	for i, q := range p.queues {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
			defer cancel()
			errs[i] = q.Shutdown(ctx)
		})
	}
	wg.Wait()
	// The processors are stopped: this only marks the provider shut, so
	// that later spans are not recorded.
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	errs = append(errs, p.tp.Shutdown(ctx))
	return errors.Join(errs...)
}

// Flush exports what is queued now (tests, and an operator's signal).
func (p *Provider) Flush(ctx context.Context) error { return p.tp.ForceFlush(ctx) }

// Stats reports each exporter's queue.
func (p *Provider) Stats(yield func(Stats)) {
	for _, q := range p.queues {
		yield(q.stats())
	}
}
