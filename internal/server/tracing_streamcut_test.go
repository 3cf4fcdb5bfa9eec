package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

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

// TestTracingStreamCutOffIsAnError: an upstream stream that breaks off
// mid-answer (connection cut, no finish reason, no [DONE]) leaves the
// client with a truncated answer; the request and attempt spans end with
// error.type and an Error status, as docs/tracing.md promises "on
// failures" (the call is observed as a 502 since the stream-cut fix).
func TestTracingStreamCutOffIsAnError(t *testing.T) {
	sink := &otlpSink{}
	col := httptest.NewServer(sink)
	defer col.Close()
	ups := httptest.NewServer(brokenStream{})
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + fmt.Sprintf(`  otel: {endpoint: %q, export_interval: 3600}
litellm_settings:
  callbacks: ["otel"]
`, col.URL)
	gw, stop := reviewGateway(t, yaml, testLogger)
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
