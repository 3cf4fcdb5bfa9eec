package server

import (
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// requestSpans are the server (request) spans received.
func requestSpans(s *otlpSink) []*tracepb.Span {
	var out []*tracepb.Span
	for _, x := range s.all() {
		if x.Kind == tracepb.Span_SPAN_KIND_SERVER {
			out = append(out, x)
		}
	}
	return out
}

// TestProbeLangfuseKeyBasedLoggingIgnored: LiteLLM's team/key based logging
// (docs.litellm.ai/docs/proxy/team_logging) creates a key with
// metadata.logging [{callback_name: langfuse, callback_vars:
// {langfuse_public_key, langfuse_secret_key, langfuse_host}}] so that the
// key's calls go to its own Langfuse project ("Team 1 -> Langfuse Project
// 1"). Tollgate reads only callback_vars.turn_off_message_logging from such
// an entry: the key's prompts and answers go to the gateway-wide Langfuse
// project, another tenant's, and never to the key's. Tollgate's docs do not
// say the entry's credentials are ignored (content-logging.md names the
// entry only for its opt-out).
func TestProbeLangfuseKeyBasedLoggingIgnored(t *testing.T) {
	global := &otlpSink{}
	gs := httptest.NewServer(global)
	defer gs.Close()
	own := &otlpSink{}
	ows := httptest.NewServer(own)
	defer ows.Close()
	t.Setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-global")
	t.Setenv("LANGFUSE_SECRET_KEY", "sk-lf-global")
	t.Setenv("LANGFUSE_HOST", gs.URL)
	up := &traceUpstream{}
	ups := httptest.NewServer(up)
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + "litellm_settings:\n  callbacks: [\"langfuse\"]\n"
	gw, stop := tracedGateway(t, yaml)
	resp, body := post(t, gw+"/key/generate", `{"metadata":{"logging":[{"callback_name":"langfuse","callback_type":"success","callback_vars":{"langfuse_public_key":"pk-lf-team1","langfuse_secret_key":"sk-lf-team1","langfuse_host":"`+ows.URL+`"}}]}}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 {
		t.Fatalf("/key/generate with LiteLLM's key-based logging metadata: %d %s", resp.StatusCode, body)
	}
	var k struct{ Key string }
	_ = json.Unmarshal(body, &k)
	if resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"team one's secret plan"}]}`,
		"Authorization", "Bearer "+k.Key); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	stop() // flushes the exporters
	if n := len(requestSpans(global)) + len(requestSpans(own)); n == 0 {
		t.Fatal("no request span anywhere: the call was not traced")
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("pk-lf-team1:sk-lf-team1"))
	own.mu.Lock()
	got := len(own.spans)
	var auth string
	if len(own.headers) > 0 {
		auth = own.headers[0].Get("Authorization")
	}
	own.mu.Unlock()
	if got == 0 || auth != want {
		t.Errorf("the key's own Langfuse project got %d spans (Authorization %q); want the key's call there, with the key's project credentials", got, auth)
	}
	if n := len(requestSpans(global)); n != 0 {
		t.Errorf("the gateway-wide Langfuse project got %d request spans of a key that logs to its own project (its prompt included)", n)
	}
}

// TestLangfuseRequestMetadataIsMapped: LiteLLM's Langfuse docs have
// clients set, in the request's metadata, session_id (groups traces into a
// Langfuse session), trace_user_id (the trace's user), trace_name and
// generation_name; they reach the request span as Langfuse's attributes
// (langfuse.session.id and session.id, langfuse.user.id,
// langfuse.trace.name, langfuse.observation.name).
func TestLangfuseRequestMetadataIsMapped(t *testing.T) {
	lf := &otlpSink{}
	lfs := httptest.NewServer(lf)
	defer lfs.Close()
	t.Setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-1")
	t.Setenv("LANGFUSE_SECRET_KEY", "sk-lf-2")
	t.Setenv("LANGFUSE_HOST", lfs.URL)
	up := &traceUpstream{}
	ups := httptest.NewServer(up)
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + "litellm_settings:\n  callbacks: [\"langfuse\"]\n"
	gw, stop := tracedGateway(t, yaml)
	if resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],
		"metadata":{"session_id":"sess-42","trace_user_id":"user-7","trace_name":"agent-run","generation_name":"plan-step"}}`,
		"Authorization", "Bearer sk-1234"); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	stop()
	spans := requestSpans(lf)
	if len(spans) != 1 {
		t.Fatalf("%d request spans at Langfuse, want 1", len(spans))
	}
	s := spans[0]
	if got := attrString(s, "langfuse.session.id"); got != "sess-42" || attrString(s, "session.id") != "sess-42" {
		t.Errorf("session: %q; want metadata.session_id as langfuse.session.id", got)
	}
	if got := attrString(s, "langfuse.user.id"); got != "user-7" && attrString(s, "user.id") != "user-7" {
		t.Errorf("trace user: langfuse.user.id %q, user.id %q; want metadata.trace_user_id", got, attrString(s, "user.id"))
	}
	if got := attrString(s, "langfuse.trace.name"); got != "agent-run" {
		t.Errorf("langfuse.trace.name %q; want metadata.trace_name", got)
	}
	if got := attrString(s, "langfuse.observation.name"); got != "plan-step" && s.Name != "plan-step" {
		t.Errorf("generation name: span %q, langfuse.observation.name %q; want metadata.generation_name", s.Name, got)
	}
}
