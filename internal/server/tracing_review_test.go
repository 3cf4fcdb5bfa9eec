package server

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/tollgate/tollgate/internal/config"
)

// Regression tests of the tracing review (issue #25).

// reviewGateway is tracedGateway with a logger of the test's own (so that a
// test can read what the gateway logged without tripping TestMain's scan).
func reviewGateway(t *testing.T, yaml string, log *slog.Logger) (url string, stop func()) {
	t.Helper()
	return tracedGatewayWith(t, yaml, Options{Logger: log})
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

// TestTracingMessagesIsChat: gen_ai.operation.name is the GenAI
// conventions' well-known value where one applies (a value they list MUST
// be used): an Anthropic Messages API call (/v1/messages) is a chat call,
// its span "chat <model group>", not "messages".
func TestTracingMessagesIsChat(t *testing.T) {
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	ups := httptest.NewServer(&traceUpstream{})
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel"]
`, col.URL)
	gw, stop := reviewGateway(t, yaml, testLogger)
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

// TestTracingProviderNameOfLiteLLMAliases: a LiteLLM alias of a provider
// (text-completion-openai here) carries that provider's
// gen_ai.provider.name (openai) on the request and attempt spans, so
// that one provider is one name in GenAI dashboards.
func TestTracingProviderNameOfLiteLLMAliases(t *testing.T) {
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
	gw, stop := reviewGateway(t, yaml, testLogger)
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

// TestTracingBadSamplerArgIsRefused: an OTEL_TRACES_SAMPLER_ARG that is
// not a ratio from 0 to 1 ("5", "5%") stops the start with a message
// naming it, rather than sampling every trace.
func TestTracingBadSamplerArgIsRefused(t *testing.T) {
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

// TestTracingOTelSettingsOutOfBounds: general_settings.otel values that
// cannot work stop the start naming the field: a NaN sample_ratio (it
// passes < 0 and > 1), a queue_size over a million (allocated up front),
// an export_interval under 10 ms.
func TestTracingOTelSettingsOutOfBounds(t *testing.T) {
	base := "model_list:\n  - model_name: m\n    litellm_params: {model: demo/demo}\ngeneral_settings:\n  otel: "
	for otel, want := range map[string]string{
		"{sample_ratio: .nan}":       "sample_ratio",
		"{queue_size: 2000000}":      "queue_size must be between 1 and 1000000",
		"{batch_size: 2000000}":      "batch_size must be between 1 and 1000000",
		"{export_interval: 0.001}":   "export_interval must be at least 10ms",
		"{export_interval: \"1us\"}": "export_interval must be at least 10ms",
	} {
		_, err := config.Parse("bounds.yaml", []byte(base+otel+"\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("general_settings.otel %s: %v, want an error containing %q", otel, err, want)
		}
	}
	// At the bounds: accepted.
	if _, err := config.Parse("bounds.yaml", []byte(base+"{queue_size: 1000000, export_interval: 0.01, sample_ratio: 0}\n")); err != nil {
		t.Errorf("settings at the bounds refused: %v", err)
	}
}

func queueRunners() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("tracing.(*queue).run("))
}

// TestTracingHungCollectorDoesNotStarveLangfuse: with both exporters on,
// the shutdown stops each queue at once, each within its own flush
// deadline: an OTLP collector that hangs (past the 5 s deadline) costs
// Langfuse, which answers, none of its spans, and no queue goroutine
// outlives Serve.
func TestTracingHungCollectorDoesNotStarveLangfuse(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
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
	gw, stop := reviewGateway(t, yaml, testLogger)
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

// TestTracingAnthropicStreamResponseModel: gen_ai.response.model is the
// model the answer names; a Claude stream names it in message_start's
// message.model (the dated model, where the deployment asked for the
// -latest alias). The Responses API's response.created is read alike
// (gateway's TestModelInNestedEvents).
func TestTracingAnthropicStreamResponseModel(t *testing.T) {
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
	gw, stop := reviewGateway(t, yaml, testLogger)
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

// TestTracingStreamWithoutUsageHasEstimatedTokens: a stream without a
// usage chunk is booked from the gateway's estimate (the prompt, and the
// text received); its request span carries those tokens and
// tollgate.usage_estimated, not a cost with no tokens.
func TestTracingStreamWithoutUsageHasEstimatedTokens(t *testing.T) {
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	ups := httptest.NewServer(noUsageStream{})
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel"]
`, col.URL)
	gw, stop := reviewGateway(t, yaml, testLogger)
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

// TestTracingRefusedAtDecodeHasSpan: every request past authentication
// has a span, one refused while its body is decoded (400: no model)
// included, a child of the client's traceparent and named by no model
// ("chat unknown").
func TestTracingRefusedAtDecodeHasSpan(t *testing.T) {
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	ups := httptest.NewServer(&traceUpstream{})
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel"]
`, col.URL)
	gw, stop := reviewGateway(t, yaml, testLogger)
	resp, body := post(t, gw+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234", "traceparent", "00-"+clientTraceID+"-"+clientSpanID+"-01")
	if resp.StatusCode != 400 {
		t.Fatalf("a chat request without a model: %d %s, want 400", resp.StatusCode, body)
	}
	stop()
	reqs := serverSpans(sink.all())
	if len(reqs) != 1 || attrInt(reqs[0], "http.response.status_code") != 400 {
		t.Fatalf("a well-formed request refused with 400 (no model) left %d request spans (%v)", len(reqs), spanNames(sink.all()))
	}
	r := reqs[0]
	if hex.EncodeToString(r.TraceId) != clientTraceID || hex.EncodeToString(r.ParentSpanId) != clientSpanID {
		t.Errorf("the refused request's span is not the client's span's child: trace %x parent %x", r.TraceId, r.ParentSpanId)
	}
	if r.Name != "chat unknown" || r.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || attrString(r, "error.type") == "" {
		t.Errorf("span %q, status %v, error.type %q; want \"chat unknown\", an Error status and an error.type", r.Name, r.Status.GetCode(), attrString(r, "error.type"))
	}
}

// TestTracingSpanNameIsModelGroup: a span's name carries no text a client
// chose: a model that resolves to no group names the span "unknown" (the
// model asked for stays in gen_ai.request.model, clipped), as the metric
// labels do.
func TestTracingSpanNameIsModelGroup(t *testing.T) {
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	ups := httptest.NewServer(&traceUpstream{})
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel"]
`, col.URL)
	gw, stop := reviewGateway(t, yaml, testLogger)
	resp, body := post(t, gw+"/v1/chat/completions", `{"model":"client-made-up-1234","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 404 {
		t.Fatalf("an unknown model: %d %s, want 404", resp.StatusCode, body)
	}
	stop()
	reqs := serverSpans(sink.all())
	if len(reqs) != 1 {
		t.Fatalf("request spans: %v", spanNames(sink.all()))
	}
	if reqs[0].Name != "chat unknown" || attrString(reqs[0], "gen_ai.request.model") != "client-made-up-1234" {
		t.Errorf("span %q, gen_ai.request.model %q; want \"chat unknown\" and the model asked for", reqs[0].Name, attrString(reqs[0], "gen_ai.request.model"))
	}
}

// TestTracingContentToLangfuse: with the langfuse exporter on, the request
// span carries the call's messages and answer as Langfuse reads them
// (langfuse.observation.input and output), redacted (an email in the
// prompt masked); the otel exporter, without
// OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, gets the same span
// without them. turn_off_message_logging (or a request opting out) keeps
// content off every span.
func TestTracingContentToLangfuse(t *testing.T) {
	const prompt = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"mail jane.doe@example.com please"}]}`
	for _, tt := range []struct {
		name, settings, body string
		content              bool
	}{
		{"on", "", prompt, true},
		{"turn_off_message_logging", "  turn_off_message_logging: true\n", prompt, false},
		{"request opts out", "", `{"model":"gpt-4o-mini","no-log":true,"messages":[{"role":"user","content":"mail jane.doe@example.com please"}]}`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lf := &otlpSink{}
			lfs := httptest.NewServer(lf)
			defer lfs.Close()
			col := &otlpSink{}
			cols := httptest.NewServer(col)
			defer cols.Close()
			t.Setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-1")
			t.Setenv("LANGFUSE_SECRET_KEY", "sk-lf-2")
			t.Setenv("LANGFUSE_HOST", lfs.URL)
			ups := httptest.NewServer(&traceUpstream{})
			defer ups.Close()
			yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel", "langfuse"]
`, cols.URL) + tt.settings
			gw, stop := reviewGateway(t, yaml, testLogger)
			resp, body := post(t, gw+"/v1/chat/completions", tt.body, "Authorization", "Bearer sk-1234")
			if resp.StatusCode != 200 {
				t.Fatalf("chat: %d %s", resp.StatusCode, body)
			}
			stop()
			lreqs, creqs := serverSpans(lf.all()), serverSpans(col.all())
			if len(lreqs) != 1 || len(creqs) != 1 {
				t.Fatalf("request spans: langfuse %v, collector %v", spanNames(lf.all()), spanNames(col.all()))
			}
			in, out := attrString(lreqs[0], "langfuse.observation.input"), attrString(lreqs[0], "langfuse.observation.output")
			if !tt.content {
				if in != "" || out != "" {
					t.Errorf("content on the Langfuse span: input %q, output %q", in, out)
				}
			} else {
				if !strings.Contains(in, `"role":"user"`) || !strings.Contains(in, "please") || strings.Contains(in, "jane.doe@example.com") {
					t.Errorf("Langfuse input %q: want the messages with the email masked", in)
				}
				if !strings.Contains(out, "Hello") {
					t.Errorf("Langfuse output %q: want the answer", out)
				}
			}
			for _, k := range []string{"langfuse.observation.input", "langfuse.observation.output"} {
				if v := attrString(creqs[0], k); v != "" {
					t.Errorf("the otel collector (no opt-in) got %s %q", k, v)
				}
			}
		})
	}
}

// TestTracingContentToOTelOptIn: the otel exporter gets the content only
// with the GenAI conventions' opt-in,
// OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true.
func TestTracingContentToOTelOptIn(t *testing.T) {
	for _, optIn := range []bool{false, true} {
		t.Run(fmt.Sprint(optIn), func(t *testing.T) {
			if optIn {
				t.Setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
			}
			col := &otlpSink{}
			cols := httptest.NewServer(col)
			defer cols.Close()
			ups := httptest.NewServer(&traceUpstream{})
			defer ups.Close()
			yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel"]
`, cols.URL)
			gw, stop := reviewGateway(t, yaml, testLogger)
			resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi there"}]}`,
				"Authorization", "Bearer sk-1234")
			if resp.StatusCode != 200 {
				t.Fatalf("chat: %d %s", resp.StatusCode, body)
			}
			stop()
			reqs := serverSpans(col.all())
			if len(reqs) != 1 {
				t.Fatalf("request spans: %v", spanNames(col.all()))
			}
			in := attrString(reqs[0], "langfuse.observation.input")
			if got := strings.Contains(in, "hi there"); got != optIn {
				t.Errorf("opt-in %v: input %q", optIn, in)
			}
		})
	}
}
