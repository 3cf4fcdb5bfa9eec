package server

import (
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

// TestLangfuseKeyBasedLoggingStaysOutOfTheGlobalProject: LiteLLM's
// team/key based logging (docs.litellm.ai/docs/proxy/team_logging) creates
// a key with metadata.logging [{callback_name: langfuse, callback_vars:
// {langfuse_public_key, langfuse_secret_key, langfuse_host}}] so that the
// key's calls go to its own Langfuse project. Per-key projects are not
// served yet; the safe behaviour: the key's calls (prompt included) never
// reach the gateway-wide Langfuse project, other keys' calls still do, and
// the log says so once per key, without the key's Langfuse secret.
func TestLangfuseKeyBasedLoggingStaysOutOfTheGlobalProject(t *testing.T) {
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
	resp, body := post(t, gw+"/key/generate", `{"metadata":{"logging":[{"callback_name":"langfuse","callback_type":"success","callback_vars":{"langfuse_public_key":"pk-lf-team1","langfuse_secret_key":"sk-lf-team1-secret","langfuse_host":"`+ows.URL+`"}}]}}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 {
		t.Fatalf("/key/generate with LiteLLM's key-based logging metadata: %d %s", resp.StatusCode, body)
	}
	var k struct{ Key string }
	_ = json.Unmarshal(body, &k)
	for i := 0; i < 2; i++ {
		if resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"team one's secret plan"}]}`,
			"Authorization", "Bearer "+k.Key); resp.StatusCode != 200 {
			t.Fatalf("chat: %d %s", resp.StatusCode, body)
		}
	}
	// Another key's call still goes to the gateway-wide project.
	if resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}`,
		"Authorization", "Bearer sk-1234"); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	stop() // flushes the exporters
	global.mu.Lock()
	var leaked int
	for _, s := range global.spans {
		for _, a := range s.Attributes {
			if strings.Contains(a.GetValue().GetStringValue(), "secret plan") {
				leaked++
			}
		}
	}
	global.mu.Unlock()
	if n := len(requestSpans(global)); n != 1 || leaked != 0 {
		t.Errorf("the gateway-wide Langfuse project got %d request spans (want 1: the other key's), %d attributes with the key's prompt", n, leaked)
	}
	if n := len(own.all()); n != 0 {
		t.Errorf("the key's own project got %d spans: per-key projects are not served", n)
	}
	warned := loggedLines("own Langfuse project")
	if len(warned) != 1 {
		t.Errorf("%d warnings about the key's own Langfuse project for its 2 calls, want 1: %v", len(warned), warned)
	}
	if l := loggedLines("sk-lf-team1-secret"); len(l) != 0 {
		t.Errorf("the key's Langfuse secret is in the log: %s", l[0])
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
