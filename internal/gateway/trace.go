package gateway

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/router"
)

// A traced call has a span of its own (the request, SERVER kind, the
// client's traceparent its parent), a CLIENT span per upstream attempt
// (whose context goes upstream in traceparent), and spans for admission
// and each budget hold that waited, failed or went to Redis. All of it exists only when Options.Tracer is set:
// without one, c.tr is nil and every function here returns at once. The
// request span carries the call's content (shaped by finishContent) only
// when an exporter takes it (Options.TraceContent) and the call's content
// may leave the process (contentAllowed).
//
// Span names carry no client-chosen text: the request span is named by
// the model group the request resolved to ("unknown" when none), an
// attempt span by the model the deployment's configuration sends (the
// group's name for a wildcard deployment).

// propagator reads and writes W3C traceparent and tracestate.
var propagator = propagation.TraceContext{}

// callTrace is a traced call's spans.
type callTrace struct {
	ctx     context.Context // the request span's context
	span    trace.Span
	attempt trace.Span // the attempt in flight; nil between attempts
	actx    context.Context
	n       int // attempts made
}

// startTrace opens the request span, continuing the client's trace. It
// runs once the caller is authenticated, before the body is read: the
// span's name is set when it ends (endTrace), once the model group is
// known.
func (c *call) startTrace() {
	t := c.g.opts.Tracer
	if t == nil {
		return
	}
	ctx := propagator.Extract(c.r.Context(), propagation.HeaderCarrier(c.r.Header))
	ctx, sp := t.Start(ctx, genAIOperation(c.op), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(c.start))
	c.tr = &callTrace{ctx: ctx, span: sp}
}

// traced reports whether the call's request span is recorded (sampled).
func (c *call) traced() bool {
	return c.tr != nil && c.tr.span.IsRecording()
}

// traceID is the W3C trace id of a traced call, else the call id.
func (c *call) traceID() string {
	if c.tr != nil {
		if sc := c.tr.span.SpanContext(); sc.HasTraceID() {
			return sc.TraceID().String()
		}
	}
	return c.id
}

// tracedAdmit is admit, in a span of its own when traced and there are
// rate limits to take (see endStep for when that span is kept).
func (c *call) tracedAdmit(grp *router.Group) error {
	l := c.g.opts.Limits
	if c.tr == nil || l == nil {
		return c.admit(grp)
	}
	rl, ok := l.(*RateLimits)
	st := c.startStep("tollgate.admit", ok && rl.Limiter != nil && rl.Limiter.Shared())
	err := c.admit(grp)
	c.endStep(st, err)
	return err
}

// stepSpanMin is how long an admission or a budget hold in process must
// take for its span to be recorded: below it the step did not wait, and
// its span would cost more than the step did (docs/tracing.md).
const stepSpanMin = time.Millisecond

// step is a step of a traced call (admission, a budget hold) whose span
// is made when it ends, and only when it is worth one: see endStep. The
// zero step (the call not traced) makes none.
type step struct {
	name   string
	parent context.Context
	start  time.Time
	shared bool // it asks Redis: always recorded
}

// startStep begins a step of the call, under the attempt in flight if
// any, else under the request; the zero step when the call's span is not
// recorded. It allocates nothing.
func (c *call) startStep(name string, shared bool) step {
	if c.tr == nil || !c.tr.span.IsRecording() {
		return step{}
	}
	parent := c.tr.ctx
	if c.tr.attempt != nil {
		parent = c.tr.actx
	}
	return step{name: name, parent: parent, start: time.Now(), shared: shared}
}

// endStep records the step's span, with err's status when it failed, if
// it failed, went to Redis, or took stepSpanMin or more; a step in
// process that took microseconds gets no span. The span is made now with
// the step's start time, so it covers the step exactly.
func (c *call) endStep(st step, err error) {
	if st.parent == nil {
		return
	}
	end := time.Now()
	if err == nil && !st.shared && end.Sub(st.start) < stepSpanMin {
		return
	}
	_, sp := c.g.opts.Tracer.Start(st.parent, st.name, trace.WithSpanKind(trace.SpanKindInternal), trace.WithTimestamp(st.start))
	if err != nil && sp.IsRecording() {
		e := apierror.From(err)
		sp.SetAttributes(attribute.Int("http.response.status_code", e.Status), attribute.String("error.type", e.Type))
		sp.SetStatus(codes.Error, spanText(e.Message))
	}
	sp.End(trace.WithTimestamp(end))
}

// startAttempt opens the span of an attempt on t, asking it for model.
func (c *call) startAttempt(t *provider.Target, group, model string) {
	tr := c.tr
	if tr == nil {
		return
	}
	tr.n++
	upstream := t.UpstreamModel(model)
	named := upstream
	if strings.Contains(t.D.Model, "*") {
		named = group // a wildcard deployment sends the name the client chose
	}
	actx, sp := c.g.opts.Tracer.Start(tr.ctx, genAIOperation(c.op)+" "+named, trace.WithSpanKind(trace.SpanKindClient))
	tr.attempt, tr.actx = sp, actx
	if !sp.IsRecording() {
		return
	}
	buf := attrBufs.Get().(*[]attribute.KeyValue)
	defer putAttrs(buf)
	attrs := append((*buf)[:0],
		attribute.String("gen_ai.operation.name", genAIOperation(c.op)),
		attribute.String("gen_ai.provider.name", genAIProvider(t.D.Provider)),
		attribute.String("gen_ai.request.model", clip(upstream)),
		attribute.String("tollgate.deployment", t.D.ID),
		attribute.String("tollgate.model_group", group),
		attribute.Int("tollgate.attempt", tr.n),
		attribute.String("langfuse.observation.type", "span"),
	)
	if u, err := url.Parse(t.D.APIBase); err == nil && u.Host != "" {
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil {
			host = u.Host
		}
		attrs = append(attrs, attribute.String("server.address", host))
		if p, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, attribute.Int("server.port", p))
		}
	}
	attrs = cleanAttrs(c.skipAttrs(attrs))
	sp.SetAttributes(attrs...)
	*buf = attrs
}

// endAttempt ends the attempt's span: err is what c.attempt returned (nil
// or done: answered or ended; a *failure: the policy may retry).
func (c *call) endAttempt(done bool, err error) {
	tr := c.tr
	if tr == nil || tr.attempt == nil {
		return
	}
	sp := tr.attempt
	tr.attempt, tr.actx = nil, nil
	if sp.IsRecording() {
		status := c.res.status
		var f *failure
		if fe, ok := err.(*failure); ok {
			f = fe
			if f.err != nil {
				status = apierror.From(f.err).Status
			} else {
				status = f.status
			}
		} else if err != nil && !done {
			status = apierror.From(err).Status
		}
		if c.res.clientGone {
			status = 499
		}
		attrs := make([]attribute.KeyValue, 0, 4) // at most four, set at once
		if status != 0 {
			attrs = append(attrs, attribute.Int("http.response.status_code", status))
		}
		if c.res.id != "" {
			attrs = append(attrs, attribute.String("gen_ai.response.id", spanText(c.res.id)))
		}
		msg, failed := "", true
		switch {
		case f != nil:
			msg = f.Error()
			if f.err != nil {
				e := apierror.From(f.err)
				msg = e.Message
				attrs = append(attrs, attribute.String("error.type", e.Type))
			} else {
				attrs = append(attrs, attribute.String("error.type", strconv.Itoa(f.status)))
			}
			attrs = append(attrs, attribute.Bool("tollgate.retryable", f.retryable))
		case err != nil && !isResponded(err):
			e := apierror.From(err)
			attrs = append(attrs, attribute.String("error.type", e.Type))
			msg = e.Message
		case status >= 400 || c.res.clientGone:
			msg = "status " + strconv.Itoa(status)
		default:
			failed = false
		}
		sp.SetAttributes(attrs...)
		if failed {
			sp.SetStatus(codes.Error, spanText(msg))
		}
	}
	sp.End()
}

func isResponded(err error) bool {
	return err == errResponded || err == errClientGone
}

// propagate puts the trace context on an upstream request: the attempt
// span's when traced; untraced, the client's own traceparent and
// tracestate pass on unchanged.
func (c *call) propagate(req *http.Request) {
	if c.tr == nil {
		if v := c.r.Header["Traceparent"]; v != nil {
			req.Header["Traceparent"] = v
			if s := c.r.Header["Tracestate"]; s != nil {
				req.Header["Tracestate"] = s
			}
		}
		return
	}
	ctx := c.tr.ctx
	if c.tr.actx != nil {
		ctx = c.tr.actx
	}
	propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
}

// endTrace ends the request span with what the call did.
func (c *call) endTrace(status int) {
	tr := c.tr
	if tr == nil {
		return
	}
	c.endAttempt(true, nil) // a panic may leave one open
	c.tr = nil              // ended once, even if finish runs again after a panic
	sp := tr.span
	if !sp.IsRecording() {
		sp.End()
		return
	}
	group := c.spanGroup()
	sp.SetName(genAIOperation(c.op) + " " + group)
	res, p := &c.res, c.p
	req := c.req
	if req == nil {
		req = &request{} // refused before its body was decoded
	}
	buf := attrBufs.Get().(*[]attribute.KeyValue)
	defer putAttrs(buf)
	attrs := append((*buf)[:0],
		attribute.String("gen_ai.operation.name", genAIOperation(c.op)),
		attribute.Float64("tollgate.cost_usd", c.cost),
		attribute.Float64("gen_ai.usage.cost", c.cost), // Langfuse's cost
		attribute.Int("tollgate.retries", c.retries),
		attribute.Int("tollgate.fallbacks", c.fellBack),
		attribute.Bool("tollgate.stream", req.stream),
		attribute.Int("http.response.status_code", status),
		attribute.String("langfuse.observation.type", "generation"),
	)
	if req.model != "" {
		attrs = append(attrs, attribute.String("gen_ai.request.model", clip(req.model)))
	}
	if c.id != "" {
		attrs = append(attrs, attribute.String("tollgate.call_id", c.id))
	}
	if c.model != "" {
		attrs = append(attrs, attribute.String("tollgate.model_group", c.model))
	}
	if t := c.target; t != nil {
		attrs = append(attrs, attribute.String("gen_ai.provider.name", genAIProvider(t.D.Provider)),
			attribute.String("tollgate.deployment", t.D.ID))
	}
	if m := responseModel(res); m != "" {
		attrs = append(attrs, attribute.String("gen_ai.response.model", m))
	}
	if res.id != "" {
		attrs = append(attrs, attribute.String("gen_ai.response.id", res.id))
	}
	if res.hasUsage || res.estimated {
		attrs = append(attrs, attribute.Int64("gen_ai.usage.input_tokens", res.usage.Prompt),
			attribute.Int64("gen_ai.usage.output_tokens", res.usage.Completion))
		if res.estimated {
			attrs = append(attrs, attribute.Bool("tollgate.usage_estimated", true))
		}
	}
	if len(res.reasons) > 0 {
		attrs = append(attrs, attribute.StringSlice("gen_ai.response.finish_reasons", res.reasons))
	}
	if res.ttfb > 0 {
		attrs = append(attrs, attribute.String("langfuse.observation.completion_start_time", c.start.Add(res.ttfb).UTC().Format(time.RFC3339Nano)))
	}
	if req.maxTokens > 0 {
		attrs = append(attrs, attribute.Int64("gen_ai.request.max_tokens", req.maxTokens))
	}
	if v := req.obj.Get("temperature"); v != nil {
		if f, err := strconv.ParseFloat(string(v), 64); err == nil {
			attrs = append(attrs, attribute.Float64("gen_ai.request.temperature", f))
		}
	}
	if p != nil && !c.g.content.noKeyInfo { // redact_user_api_key_info keeps them out
		if len(p.KeyHash) >= 8 {
			attrs = append(attrs, attribute.String("tollgate.key_hash", p.KeyHash[:8]))
		}
		if k := p.Key; k != nil {
			if k.KeyAlias != nil {
				attrs = append(attrs, attribute.String("tollgate.key_alias", *k.KeyAlias))
			}
			if k.UserID != "" {
				attrs = append(attrs, attribute.String("tollgate.user", k.UserID), attribute.String("user.id", k.UserID))
			}
			if k.TeamID != "" {
				attrs = append(attrs, attribute.String("tollgate.team", k.TeamID))
			}
		}
	}
	if req.user != "" {
		attrs = append(attrs, attribute.String("tollgate.end_user", clip(req.user)))
	}
	if len(c.meta.tags) > 0 {
		attrs = append(attrs, attribute.StringSlice("tollgate.tags", c.meta.tags),
			attribute.StringSlice("langfuse.trace.tags", c.meta.tags))
	}
	if cp := c.cap; cp != nil && c.g.content.tracing {
		// Shaped by finishContent, which ran before.
		if len(cp.messages) > 0 {
			attrs = append(attrs, attribute.String(AttrContentInput, string(cp.messages)))
		}
		if len(cp.response) > 0 {
			attrs = append(attrs, attribute.String(AttrContentOutput, string(cp.response)))
		}
	}
	attrs = c.requestMetaAttrs(attrs)
	msg, failed := "", status >= 400 || status == 0
	if failed {
		msg = "status " + strconv.Itoa(status)
		switch {
		case c.err != nil:
			e := apierror.From(c.err)
			msg = e.Message
			attrs = append(attrs, attribute.String("error.type", e.Type))
		case status == 499:
			msg = "the client disconnected"
			attrs = append(attrs, attribute.String("error.type", "client_disconnected"))
		default:
			attrs = append(attrs, attribute.String("error.type", strconv.Itoa(status)))
		}
	}
	// One call: the SDK copies the attributes into the span, so buf is
	// reused by the next call.
	attrs = cleanAttrs(attrs)
	sp.SetAttributes(attrs...)
	*buf = attrs
	if failed {
		sp.SetStatus(codes.Error, spanText(msg))
	}
	sp.End()
}

// attrBufs are the attribute slices spans are given their attributes in:
// SetAttributes copies them, so one slice serves call after call instead
// of a new 2 KB slice per span.
var attrBufs = sync.Pool{New: func() any { b := make([]attribute.KeyValue, 0, 40); return &b }}

func putAttrs(b *[]attribute.KeyValue) {
	if cap(*b) > 256 {
		return // grown by an odd call: let it go
	}
	clear((*b)[:cap(*b)]) // no strings of this call kept alive
	*b = (*b)[:0]
	attrBufs.Put(b)
}

// spanText makes s valid UTF-8 for a span (OTLP is protobuf, whose
// strings must be UTF-8: one bad string makes the whole batch, other calls'
// spans with it, unencodable). A client can put any byte in a JSON string.
// Valid text is returned as it is.
func spanText(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// cleanAttrs makes every string (and string list) value of attrs valid
// UTF-8 (spanText), in place; every span's attribute list goes through it.
func cleanAttrs(attrs []attribute.KeyValue) []attribute.KeyValue {
	for i, a := range attrs {
		switch a.Value.Type() {
		case attribute.STRING:
			if v := a.Value.AsString(); !utf8.ValidString(v) {
				attrs[i] = attribute.String(string(a.Key), spanText(v))
			}
		case attribute.STRINGSLICE:
			vs := a.Value.AsStringSlice()
			dirty := false
			for j, v := range vs {
				if !utf8.ValidString(v) {
					vs[j], dirty = spanText(v), true
				}
			}
			if dirty {
				attrs[i] = attribute.StringSlice(string(a.Key), vs)
			}
		}
	}
	return attrs
}

// Content attributes of the request span: Langfuse's observation input
// and output (Langfuse also reads them as the generation's prompt and
// completion).
const (
	AttrContentInput  = "langfuse.observation.input"
	AttrContentOutput = "langfuse.observation.output"
)

// spanGroup names the request span: the model group the request resolved
// to, or "unknown" when it resolved to none (a span name is an index in
// every tracing backend, and a client can send any name).
func (c *call) spanGroup() string {
	if c.rt != nil && c.model != "" {
		if grp, ok := c.rt.Group(c.model); ok {
			return grp.Name
		}
	}
	return "unknown"
}

func responseModel(res *result) string {
	switch {
	case res.served != "":
		return res.served
	case res.respModel != "":
		return res.respModel
	}
	return res.model
}

// genAIOperation is the GenAI operation name of op: the conventions'
// well-known value where one applies (a chat API of any shape is chat,
// the Responses API included; an embeddings API is embeddings; Google's
// generateContent is generate_content), else Tollgate's own name.
func genAIOperation(op provider.Op) string {
	switch op {
	case provider.OpChat, provider.OpMessages, provider.OpResponses, provider.OpCohereChat, provider.OpConverse:
		return "chat"
	case provider.OpCompletions:
		return "text_completion"
	case provider.OpEmbeddings, provider.OpBatchEmbedContents, provider.OpCohereEmbed, provider.OpBedrockEmbed:
		return "embeddings"
	case provider.OpGenerateContent:
		return "generate_content"
	}
	return op.String()
}

// genAIProviders maps Tollgate's (LiteLLM's) provider names to the GenAI
// conventions' gen_ai.provider.name values where they differ.
// LiteLLM's aliases of a provider (text-completion-openai, cohere_chat,
// ...) map to that provider's value.
var genAIProviders = map[string]string{
	"azure": "azure.ai.openai", "azure_text": "azure.ai.openai", "azure_ai": "azure.ai.inference",
	"bedrock": "aws.bedrock", "bedrock_converse": "aws.bedrock",
	"vertex_ai": "gcp.vertex_ai", "vertex_ai_beta": "gcp.vertex_ai", "gemini": "gcp.gemini",
	"mistral": "mistral_ai", "codestral": "mistral_ai", "text-completion-codestral": "mistral_ai",
	"xai": "x_ai", "watsonx": "ibm.watsonx.ai", "watsonx_text": "ibm.watsonx.ai",
	"text-completion-openai": "openai", "custom_openai": "openai",
	"cohere_chat": "cohere", "anthropic_text": "anthropic",
}

func genAIProvider(p string) string {
	if v, ok := genAIProviders[p]; ok {
		return v
	}
	return p
}

// Finish reasons are read from an answer only when the call is traced.
var (
	reasonKeys = [][]byte{[]byte(`"finish_reason":`), []byte(`"stop_reason":`), []byte(`"finishReason":`), []byte(`"stopReason":`)}
	reasonHint = []byte(`eason"`)
)

// traceAnswer reads the finish reasons (and the model) of a whole answer
// or of one stream event into res.
func (res *result) traceAnswer(data []byte, whole bool) {
	// A stream names its model in its first events: later ones are not read for it.
	if (whole || (res.respModel == "" && res.chunks == 0)) && res.served == "" {
		if m := modelIn(data); m != "" {
			res.respModel = m
		}
	}
	if !bytes.Contains(data, reasonHint) {
		return
	}
	for _, k := range reasonKeys {
		for rest := data; ; {
			i := bytes.Index(rest, k)
			if i < 0 {
				break
			}
			rest = bytes.TrimLeft(rest[i+len(k):], " ")
			if len(rest) == 0 || rest[0] != '"' {
				continue // null: not finished yet
			}
			end := bytes.IndexByte(rest[1:], '"')
			if end < 0 || end > 64 {
				break
			}
			if r := rest[1 : 1+end]; len(res.reasons) < 16 && !containsBytes(res.reasons, r) {
				res.reasons = append(res.reasons, string(r))
			}
			rest = rest[1+end:]
		}
	}
}

func containsBytes(list []string, b []byte) bool {
	for _, s := range list {
		if s == string(b) {
			return true
		}
	}
	return false
}

// modelIn is the "model" member of an answer or of a stream event's data.
func modelIn(data []byte) string {
	if _, after, found := bytes.Cut(data, []byte("data:")); found {
		data, _, _ = bytes.Cut(after, []byte{'\n'})
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return ""
	}
	var o jsonbody.Object
	if o.Reset(data) != nil {
		return ""
	}
	if m, _ := o.String("model"); m != "" {
		return m
	}
	// Anthropic's message_start names it in message, the Responses API's
	// response.created in response.
	for _, k := range []string{"message", "response"} {
		if v := o.Get(k); len(v) > 0 && v[0] == '{' {
			var in jsonbody.Object
			if in.Reset(v) == nil {
				if m, _ := in.String("model"); m != "" {
					return m
				}
			}
		}
	}
	return ""
}
