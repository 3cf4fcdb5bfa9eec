package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/router"
)

// TestPayloadTraceIDIsTheW3CTraceID: a traced call's callback payload
// carries the trace's id (the client's, continued); an untraced one the
// call id.
func TestPayloadTraceIDIsTheW3CTraceID(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	u := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`)
	}))
	defer u.Close()
	deps := []config.Deployment{{ModelName: "g", Provider: "openai", Model: "m", APIBase: u.URL, ID: "d1"}}
	for _, traced := range []bool{true, false} {
		rt, err := router.New(deps, router.Settings{Health: router.NewHealth(nil)})
		if err != nil {
			t.Fatal(err)
		}
		pub := &publisher{got: make(chan *callback.Payload, 4)}
		opts := Options{Observer: &Telemetry{Callbacks: pub}}
		if traced {
			opts.Tracer = tp.Tracer("test")
		}
		g := New(opts, auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), rt)
		mux := http.NewServeMux()
		g.Register(mux)
		srv := httptest.NewServer(mux)
		status, body := metaPost(t, srv.URL, `{"model":"g","messages":[{"role":"user","content":"hi"}]}`,
			"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		srv.Close()
		if status != 200 {
			t.Fatalf("status %d: %s", status, body)
		}
		pl := nextPayload(t, pub)
		if traced && pl.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("traced: trace_id %q, want the W3C trace id", pl.TraceID)
		}
		if !traced && pl.TraceID != pl.ID {
			t.Errorf("untraced: trace_id %q, want the call id %q", pl.TraceID, pl.ID)
		}
	}
	ended := rec.Ended()
	if len(ended) != 2 { // the request and its attempt (no limits, no meter)
		t.Errorf("%d spans ended, want 2", len(ended))
	}
}

// TestTracingOffAllocatesNothing: without a tracer every tracing hook on
// the request path returns on a nil check, allocating nothing.
func TestTracingOffAllocatesNothing(t *testing.T) {
	g := New(Options{}, auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), nil)
	r := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	up := httptest.NewRequest("POST", "http://upstream/v1/chat/completions", nil)
	c := &call{g: g, r: r, req: &request{model: "m"}}
	tgt := &provider.Target{D: &config.Deployment{ID: "d", Provider: "openai"}}
	var grp router.Group
	n := testing.AllocsPerRun(100, func() {
		c.startTrace()
		c.startAttempt(tgt, grp.Name, "m")
		st := c.startStep("tollgate.budget_hold", true)
		c.endStep(st, nil)
		c.propagate(up)
		c.endAttempt(true, nil)
		c.res.traced = c.tr != nil
		c.endTrace(200)
		_ = c.traceID()
	})
	if n != 0 || c.tr != nil {
		t.Errorf("tracing off: %v allocations per request, trace %v", n, c.tr)
	}
}

// TestModelInNestedEvents: the first events of an Anthropic stream
// (message_start) and of a Responses stream (response.created) name the
// model inside their message or response; a top-level model wins.
func TestModelInNestedEvents(t *testing.T) {
	for ev, want := range map[string]string{
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-3-5-sonnet-20241022\",\"usage\":{\"input_tokens\":1}}}\n": "claude-3-5-sonnet-20241022",
		"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-4o-2024-08-06\",\"usage\":null}}\n":                  "gpt-4o-2024-08-06",
		"data: {\"model\":\"top\",\"message\":{\"model\":\"inner\"}}\n":                                                                                                     "top",
		"data: {\"type\":\"ping\"}\n": "",
	} {
		if got := modelIn([]byte(ev)); got != want {
			t.Errorf("modelIn(%q) = %q, want %q", ev, got, want)
		}
	}
}

// TestGenAIOperationNames: every operation of a chat API is chat, every
// embeddings API embeddings (the conventions' well-known values).
func TestGenAIOperationNames(t *testing.T) {
	for op, want := range map[provider.Op]string{
		provider.OpChat: "chat", provider.OpMessages: "chat", provider.OpResponses: "chat", provider.OpCohereChat: "chat",
		provider.OpConverse: "chat", provider.OpCompletions: "text_completion", provider.OpEmbeddings: "embeddings",
		provider.OpBatchEmbedContents: "embeddings", provider.OpCohereEmbed: "embeddings", provider.OpBedrockEmbed: "embeddings",
		provider.OpGenerateContent: "generate_content", provider.OpRerank: "rerank",
	} {
		if got := genAIOperation(op); got != want {
			t.Errorf("genAIOperation(%s) = %q, want %q", op, got, want)
		}
	}
	for p, want := range map[string]string{"text-completion-openai": "openai", "custom_openai": "openai", "cohere_chat": "cohere",
		"vertex_ai_beta": "gcp.vertex_ai", "codestral": "mistral_ai", "groq": "groq"} {
		if got := genAIProvider(p); got != want {
			t.Errorf("genAIProvider(%s) = %q, want %q", p, got, want)
		}
	}
}

// TestStepSpans: a step in process that took microseconds gets no span;
// one that failed, went to Redis or waited stepSpanMin gets one, under
// the attempt in flight, covering the step's time, with the failure's
// status.
func TestStepSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	g := New(Options{Tracer: tp.Tracer("test")}, auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), nil)
	c := &call{g: g, r: httptest.NewRequest("POST", "/v1/chat/completions", nil), req: &request{model: "m"}, start: time.Now()}
	c.startTrace()
	c.startAttempt(&provider.Target{D: &config.Deployment{ID: "d", Provider: "openai"}}, "g", "m")
	attempt := c.tr.attempt.SpanContext().SpanID()

	c.endStep(c.startStep("fast", false), nil)
	c.endStep(c.startStep("shared", true), nil)
	c.endStep(c.startStep("failed", false), apierror.BudgetExceeded("over"))
	st := c.startStep("slow", false)
	st.start = st.start.Add(-2 * stepSpanMin) // as if it had waited
	c.endStep(st, nil)

	got := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		got[s.Name()] = s
	}
	if _, ok := got["fast"]; ok || len(got) != 3 {
		t.Fatalf("step spans %v, want shared, failed and slow", got)
	}
	for name, s := range got {
		if s.Parent().SpanID() != attempt {
			t.Errorf("%s: parent %s, want the attempt %s", name, s.Parent().SpanID(), attempt)
		}
		if !s.EndTime().After(s.StartTime()) && name == "slow" || s.EndTime().Before(s.StartTime()) {
			t.Errorf("%s: %v to %v", name, s.StartTime(), s.EndTime())
		}
	}
	if d := got["slow"].EndTime().Sub(got["slow"].StartTime()); d < 2*stepSpanMin {
		t.Errorf("slow step's span lasts %v, want its whole time", d)
	}
	if s := got["failed"]; s.Status().Code != codes.Error {
		t.Errorf("failed step's status %v", s.Status())
	}
}
