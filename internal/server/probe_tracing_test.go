package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// Probes of the tracing review (issue #25). Each fails while the defect it
// names is there.

// probeGateway is tracedGateway with a logger of the test's own (so that a
// probe can read what the gateway logged without tripping TestMain's scan).
func probeGateway(t *testing.T, yaml string, log *slog.Logger) (url string, stop func()) {
	t.Helper()
	cfg, err := config.Parse("probe.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: log, Store: st})
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
					t.Logf("Serve: %v", err)
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

func serverSpans(spans []*tracepb.Span) []*tracepb.Span {
	var out []*tracepb.Span
	for _, s := range spans {
		if s.Kind == tracepb.Span_SPAN_KIND_SERVER {
			out = append(out, s)
		}
	}
	return out
}

// TestProbeTracingMessagesOperationName: the GenAI conventions list
// gen_ai.operation.name's well-known values (chat, text_completion,
// embeddings, generate_content, ...) and say that when one applies it MUST
// be used. An Anthropic Messages API call (/v1/messages) is a chat
// completion, but its spans say "messages" (trace.go genAIOperation ->
// provider.opNames), so GenAI-aware backends (Langfuse, Datadog LLM
// Observability, Tempo's GenAI views) do not see it as a chat call and the
// span is named "messages <model>".
func TestProbeTracingMessagesOperationName(t *testing.T) {
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	ups := httptest.NewServer(&traceUpstream{})
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel"]
`, col.URL)
	gw, stop := probeGateway(t, yaml, testLogger)
	resp, body := postAs(t, gw, "/v1/messages", `{"model":"gpt-4o-mini","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234", "anthropic-version", "2023-06-01")
	if resp.StatusCode != 200 {
		t.Fatalf("messages: %d %s", resp.StatusCode, body)
	}
	stop()
	reqs := serverSpans(sink.all())
	if len(reqs) != 1 {
		t.Fatalf("request spans: %v", spanNames(sink.all()))
	}
	if op := attrString(reqs[0], "gen_ai.operation.name"); op != "chat" || reqs[0].Name != "chat gpt-4o-mini" {
		t.Errorf("an Anthropic Messages call is traced as gen_ai.operation.name %q, span %q; the GenAI conventions' well-known value is chat (span \"chat gpt-4o-mini\")", op, reqs[0].Name)
	}
}

// TestProbeTracingProviderNameOfLiteLLMAliases: gen_ai.provider.name must
// be the conventions' value when one applies. LiteLLM's provider aliases
// text-completion-openai and custom_openai are OpenAI, and cohere_chat is
// Cohere, but genAIProviders (trace.go) maps only the canonical names, so
// these spans carry "text-completion-openai" and the like: the same
// provider under several names in every GenAI dashboard.
func TestProbeTracingProviderNameOfLiteLLMAliases(t *testing.T) {
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	ups := httptest.NewServer(&traceUpstream{})
	defer ups.Close()
	yaml := fmt.Sprintf(`model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: text-completion-openai/gpt-4o-mini, api_base: "%s/v1", api_key: sk-up}
    model_info: {id: dep-a}
general_settings:
  master_key: sk-1234
  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel"]
`, ups.URL, col.URL)
	gw, stop := probeGateway(t, yaml, testLogger)
	resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	stop()
	spans := sink.all()
	if len(spans) == 0 {
		t.Fatal("no spans")
	}
	for _, s := range spans {
		if s.Kind != tracepb.Span_SPAN_KIND_SERVER && s.Kind != tracepb.Span_SPAN_KIND_CLIENT {
			continue
		}
		if got := attrString(s, "gen_ai.provider.name"); got != "openai" {
			t.Errorf("%s span: gen_ai.provider.name %q for a text-completion-openai deployment, want openai", s.Kind, got)
		}
	}
}

// brokenStream is an OpenAI upstream whose stream breaks off after its
// first chunk: the connection is cut with no [DONE] and no usage.
type brokenStream struct{}

func (brokenStream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	fmt.Fprint(w, `data: {"id":"chatcmpl-b1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}`+"\n\n")
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler) // the upstream breaks off mid-answer
}

// TestProbeTracingStreamCutOffIsNotAnError: an upstream stream that breaks
// off mid-answer (connection cut, no finish reason, no [DONE]) leaves the
// client with a truncated answer, and the gateway logs "upstream stream
// ended early"; but forward returns nil (forward.go, the
// streamEvents error branch), so the request and attempt spans end with
// status 200, no error.type and an Unset status: the trace says the call
// succeeded. docs/tracing.md: error.type and an Error status "on failures".
func TestProbeTracingStreamCutOffIsNotAnError(t *testing.T) {
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	ups := httptest.NewServer(brokenStream{})
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel"]
`, col.URL)
	gw, stop := probeGateway(t, yaml, testLogger)
	resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234")
	if strings.Contains(string(body), "[DONE]") {
		t.Fatalf("the stream was not cut: %d %s", resp.StatusCode, body)
	}
	stop()
	reqs := serverSpans(sink.all())
	if len(reqs) != 1 {
		t.Fatalf("request spans: %v", spanNames(sink.all()))
	}
	r := reqs[0]
	if r.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || attrString(r, "error.type") == "" {
		t.Errorf("a stream the upstream cut off mid-answer is traced as a success: status %v, error.type %q, http.response.status_code %d",
			r.Status.GetCode(), attrString(r, "error.type"), attrInt(r, "http.response.status_code"))
	}
}

// TestProbeTracingBadSamplerArgIsRefused: docs/tracing.md says "A value
// that cannot work stops the start with a message naming it: ... a bad
// OTEL_* variable", and lists OTEL_TRACES_SAMPLER_ARG as the sampling
// setting. Resolve (tracing.go) silently ignores an OTEL_TRACES_SAMPLER_ARG
// that is not a number in 0..1 and samples everything: an operator who
// meant 0.05 and wrote "5%" or "5" exports 100% of traces.
func TestProbeTracingBadSamplerArgIsRefused(t *testing.T) {
	base := "model_list:\n  - model_name: m\n    litellm_params: {model: demo/demo}\nlitellm_settings:\n  callbacks: [\"otel\"]\n"
	for _, v := range []string{"5", "5%", "abc"} {
		t.Run(v, func(t *testing.T) {
			t.Setenv("OTEL_TRACES_SAMPLER_ARG", v)
			cfg, err := config.Parse("t.yaml", []byte(base))
			if err != nil {
				t.Fatal(err)
			}
			srv, err := New(cfg, Options{Logger: testLogger})
			if err == nil {
				srv.Close()
				t.Errorf("OTEL_TRACES_SAMPLER_ARG=%q is accepted (and every trace sampled); want the start refused naming it", v)
			} else if !strings.Contains(err.Error(), "OTEL_TRACES_SAMPLER_ARG") {
				t.Errorf("New: %v, want an error naming OTEL_TRACES_SAMPLER_ARG", err)
			}
		})
	}
}

// TestProbeTracingSampleRatioNaN: general_settings.otel.sample_ratio must
// be within 0..1 (normalize.go checks *r < 0 || *r > 1), but NaN passes
// both comparisons, and the SDK's TraceIDRatioBased(NaN) samples by an
// undefined float-to-uint conversion. A value that cannot work is to stop
// the start.
func TestProbeTracingSampleRatioNaN(t *testing.T) {
	yaml := "model_list:\n  - model_name: m\n    litellm_params: {model: demo/demo}\ngeneral_settings:\n  otel: {sample_ratio: .nan}\n"
	_, err := config.Parse("nan.yaml", []byte(yaml))
	if err == nil || !regexp.MustCompile(`sample_ratio`).MatchString(err.Error()) {
		t.Errorf("config.Parse with sample_ratio .nan: %v, want an error naming sample_ratio", err)
	}
}

func queueRunners() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("tracing.(*queue).run("))
}

// TestProbeTracingHungCollectorStarvesLangfuseAtShutdown: with both
// exporters on (otel and langfuse, "each through its own queue"), the
// shutdown flush runs the SDK's TracerProvider.Shutdown, which shuts the
// span processors down one after the other under one deadline and returns
// as soon as that deadline has passed, without calling Shutdown on the
// processors left (sdk/trace/provider.go). Provider.Run (tracing.go) gives
// it the 5 s flush deadline; a hung OTLP collector (the first queue) uses
// it all up, so the Langfuse queue is never flushed nor stopped: Langfuse,
// which answers, loses every span queued (docs/tracing.md: "the spans of
// every request answered before the shutdown leave the process if the
// collector answers"), and the Langfuse queue's goroutine is left running
// after Serve returned.
func TestProbeTracingHungCollectorStarvesLangfuseAtShutdown(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.Error(w, "down", 503)
	}))
	defer hang.Close()
	defer close(release)
	lf := &otlpSink{}
	lfs := httptest.NewServer(lf)
	defer lfs.Close()
	t.Setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-1")
	t.Setenv("LANGFUSE_SECRET_KEY", "sk-lf-2")
	t.Setenv("LANGFUSE_HOST", lfs.URL)
	ups := httptest.NewServer(&traceUpstream{})
	defer ups.Close()
	before := queueRunners()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 3600, export_timeout: 60}
litellm_settings:
  callbacks: ["otel", "langfuse"]
`, hang.URL)
	gw, stop := probeGateway(t, yaml, testLogger)
	resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	stop() // the shutdown is to flush both queues; Langfuse answers
	if n := len(serverSpans(lf.all())); n != 1 {
		t.Errorf("Langfuse got %d request spans at shutdown (want 1): a hung OTLP collector used up the shared flush deadline and the Langfuse queue was never flushed", n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for queueRunners() > before {
		if time.Now().After(deadline) {
			t.Errorf("%d span queue goroutines still running after Serve returned (had %d before)", queueRunners(), before)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// anthropicStream is a Claude upstream that streams an answer naming the
// dated model it served (the deployment asks for the -latest alias).
type anthropicStream struct{}

func (anthropicStream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	for _, ev := range [][2]string{
		{"message_start", `{"type":"message_start","message":{"id":"msg_p1","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}`},
		{"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`},
		{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}`},
		{"content_block_stop", `{"type":"content_block_stop","index":0}`},
		{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}`},
		{"message_stop", `{"type":"message_stop"}`},
	} {
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev[0], ev[1])
	}
}

// TestProbeTracingAnthropicStreamResponseModel: docs/tracing.md says
// gen_ai.response.model is "the model the answer names
// (gpt-4o-2024-08-06), else the model sent upstream". An Anthropic stream
// names its model in message_start's message.model; traceAnswer reads
// only a top-level "model" (modelIn -> modelOf, trace.go/usage.go), so a
// Claude stream's span says the alias asked for (claude-3-5-sonnet-latest)
// instead of the model that served it. The same holds for the Responses
// API's stream (response.created's response.model).
func TestProbeTracingAnthropicStreamResponseModel(t *testing.T) {
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	ups := httptest.NewServer(anthropicStream{})
	defer ups.Close()
	yaml := fmt.Sprintf(`model_list:
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-sonnet-latest, api_base: %q, api_key: sk-ant-up, input_cost_per_token: 0.000001, output_cost_per_token: 0.00001}
    model_info: {id: claude-dep}
general_settings:
  master_key: sk-1234
  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel"]
`, ups.URL, col.URL)
	gw, stop := probeGateway(t, yaml, testLogger)
	resp, body := post(t, gw+"/v1/chat/completions", `{"model":"claude","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Hi") {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	stop()
	reqs := serverSpans(sink.all())
	if len(reqs) != 1 {
		t.Fatalf("request spans: %v", spanNames(sink.all()))
	}
	r := reqs[0]
	if got := attrStrings(r, "gen_ai.response.finish_reasons"); strings.Join(got, ",") != "end_turn" {
		t.Errorf("finish reasons %v, want [end_turn]", got)
	}
	if got := attrString(r, "gen_ai.response.model"); got != "claude-3-5-sonnet-20241022" {
		t.Errorf("gen_ai.response.model = %q on a Claude stream whose message_start names claude-3-5-sonnet-20241022", got)
	}
}

// noUsageStream is an OpenAI-compatible upstream that ignores
// stream_options.include_usage (as many self-hosted servers do): its stream
// ends with a finish reason and [DONE] but no usage chunk.
type noUsageStream struct{}

func (noUsageStream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	for _, ev := range []string{
		`{"id":"chatcmpl-n1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello there, friend"},"finish_reason":null}]}`,
		`{"id":"chatcmpl-n1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
	} {
		fmt.Fprintf(w, "data: %s\n\n", ev)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

// TestProbeTracingStreamWithoutUsageHasNoTokens: docs/tracing.md says the
// request span's gen_ai.usage.input_tokens/output_tokens are "the usage
// booked (tollgate.usage_estimated: true when the upstream reported
// none)". A stream without a usage chunk (an upstream that ignores
// include_usage, a stream the upstream cut, a client that left) is booked
// from charge.settle's chunk estimate (meter.go, the res.chunks > 0 case),
// which sets res.usage but neither res.hasUsage nor res.estimated; endTrace
// (trace.go) writes usage only under hasUsage || estimated, so the span
// has a cost but no token counts and no usage_estimated flag: Langfuse and
// GenAI dashboards show a costed generation with zero tokens.
func TestProbeTracingStreamWithoutUsageHasNoTokens(t *testing.T) {
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	ups := httptest.NewServer(noUsageStream{})
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel"]
`, col.URL)
	gw, stop := probeGateway(t, yaml, testLogger)
	resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "[DONE]") {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	stop()
	reqs := serverSpans(sink.all())
	if len(reqs) != 1 {
		t.Fatalf("request spans: %v", spanNames(sink.all()))
	}
	r := reqs[0]
	if c := attr(r, "tollgate.cost_usd"); c == nil || c.GetDoubleValue() <= 0 {
		t.Fatalf("the stream was not booked: cost %v", c)
	}
	if attrInt(r, "gen_ai.usage.output_tokens") <= 0 || attrInt(r, "gen_ai.usage.input_tokens") <= 0 || attr(r, "tollgate.usage_estimated") == nil {
		t.Errorf("a stream booked at %v USD from the gateway's estimate has gen_ai.usage.input_tokens %d, output_tokens %d, tollgate.usage_estimated %v",
			attr(r, "tollgate.cost_usd").GetDoubleValue(), attrInt(r, "gen_ai.usage.input_tokens"), attrInt(r, "gen_ai.usage.output_tokens"), attr(r, "tollgate.usage_estimated"))
	}
}

// TestProbeTracingRefusedAfterBodyHasNoSpan: docs/tracing.md says
// "Requests refused before the body is read (401, 413, malformed JSON)
// have no span", so a request refused after its body was read has one.
// But startTrace runs only after decode (call.go serve), so every refusal
// decode makes of a well-formed body (no model, a bad x-litellm-tags or
// metadata, a rerank or moderation body it cannot take) leaves no trace:
// a client's traceparent gets no child and the 400 is invisible in the
// tracing backend.
func TestProbeTracingRefusedAfterBodyHasNoSpan(t *testing.T) {
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	ups := httptest.NewServer(&traceUpstream{})
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel"]
`, col.URL)
	gw, stop := probeGateway(t, yaml, testLogger)
	resp, body := post(t, gw+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234", "traceparent", "00-"+clientTraceID+"-"+clientSpanID+"-01")
	if resp.StatusCode != 400 {
		t.Fatalf("a chat request without a model: %d %s, want 400", resp.StatusCode, body)
	}
	stop()
	if reqs := serverSpans(sink.all()); len(reqs) != 1 || attrInt(reqs[0], "http.response.status_code") != 400 {
		t.Errorf("a well-formed request refused with 400 (no model) left %d request spans (%v); the docs exempt only 401, 413 and malformed JSON", len(reqs), spanNames(sink.all()))
	}
}
