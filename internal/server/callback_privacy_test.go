package server

import (
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// langfuseAndHook serves yaml (traceModels plus litellm) with Langfuse and a
// webhook named hook, makes one chat with a key of alias key-alias-1, user
// user-1 and team-less, stops, and returns the request span's sink and the
// webhook.
func langfuseAndHook(t *testing.T, litellm string) (*otlpSink, *receiver) {
	t.Helper()
	lf := &otlpSink{}
	lfs := httptest.NewServer(lf)
	t.Cleanup(lfs.Close)
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	t.Cleanup(hs.Close)
	t.Setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-1")
	t.Setenv("LANGFUSE_SECRET_KEY", "sk-lf-2")
	t.Setenv("LANGFUSE_HOST", lfs.URL)
	up := &traceUpstream{}
	ups := httptest.NewServer(up)
	t.Cleanup(ups.Close)
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + "litellm_settings:\n  callbacks: [\"langfuse\", \"hook\"]\n" + litellm +
		"callback_settings:\n  hook:\n    callback_type: generic_api\n    endpoint: \"" + hs.URL + "\"\n"
	gw, stop := tracedGateway(t, yaml)
	resp, body := post(t, gw+"/key/generate", `{"key_alias":"key-alias-1","user_id":"user-1"}`, "Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 {
		t.Fatalf("/key/generate: %d %s", resp.StatusCode, body)
	}
	var k struct{ Key string }
	_ = json.Unmarshal(body, &k)
	if resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer "+k.Key); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	stop()
	return lf, hook
}

// TestRedactUserAPIKeyInfo: LiteLLM's
// litellm_settings.redact_user_api_key_info: true ("redact information about
// the user api key (hashed token, user_id, team id, etc.) from logs";
// Langfuse and OpenTelemetry among the supported) keeps the key's hash,
// alias and user off the Langfuse span and out of the callback payload.
func TestRedactUserAPIKeyInfo(t *testing.T) {
	lf, hook := langfuseAndHook(t, "  redact_user_api_key_info: true\n")
	spans := requestSpans(lf)
	if len(spans) != 1 {
		t.Fatalf("%d request spans", len(spans))
	}
	for _, a := range []string{"tollgate.key_hash", "tollgate.key_alias", "tollgate.user", "user.id"} {
		if v := attrString(spans[0], a); v != "" {
			t.Errorf("span attribute %s = %q exported under redact_user_api_key_info", a, v)
		}
	}
	ps := hook.payloads(t)
	if len(ps) != 1 {
		t.Fatalf("%d payloads", len(ps))
	}
	md, _ := ps[0]["metadata"].(map[string]any)
	for _, f := range []string{"user_api_key_hash", "user_api_key_alias", "user_api_key_user_id"} {
		if v, _ := md[f].(string); v != "" {
			t.Errorf("payload metadata.%s = %q sent under redact_user_api_key_info", f, v)
		}
	}
}

// TestLangfuseDefaultTags: LiteLLM's litellm_settings.langfuse_default_tags
// names metadata fields (user_api_key_alias, user_api_key_user_id, ...)
// that become the Langfuse trace's tags as "<field>:<value>".
func TestLangfuseDefaultTags(t *testing.T) {
	lf, _ := langfuseAndHook(t, "  langfuse_default_tags: [\"user_api_key_alias\", \"user_api_key_user_id\"]\n")
	spans := requestSpans(lf)
	if len(spans) != 1 {
		t.Fatalf("%d request spans", len(spans))
	}
	tags := attrStrings(spans[0], "langfuse.trace.tags")
	for _, w := range []string{"user_api_key_alias:key-alias-1", "user_api_key_user_id:user-1"} {
		if !slices.Contains(tags, w) {
			t.Errorf("langfuse.trace.tags %v lacks %q", tags, w)
		}
	}
}

// TestDisableCallbacksHeader: LiteLLM's dynamic callback management
// (docs.litellm.ai/docs/proxy/dynamic_logging) lets a request keep its data
// out of named logging services with the header
// x-litellm-disable-callbacks: langfuse,hook: Langfuse gets no span of it
// (the exporter's queue drops the spans marked so) and the webhook no
// payload.
func TestDisableCallbacksHeader(t *testing.T) {
	lf := &otlpSink{}
	lfs := httptest.NewServer(lf)
	defer lfs.Close()
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	t.Setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-1")
	t.Setenv("LANGFUSE_SECRET_KEY", "sk-lf-2")
	t.Setenv("LANGFUSE_HOST", lfs.URL)
	up := &traceUpstream{}
	ups := httptest.NewServer(up)
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + "litellm_settings:\n  callbacks: [\"langfuse\", \"hook\"]\n" +
		"callback_settings:\n  hook:\n    callback_type: generic_api\n    endpoint: \"" + hs.URL + "\"\n"
	gw, stop := tracedGateway(t, yaml)
	if resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"regulated data"}]}`,
		"Authorization", "Bearer sk-1234", "x-litellm-disable-callbacks", "langfuse,hook"); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	stop()
	if n := len(requestSpans(lf)); n != 0 {
		t.Errorf("Langfuse got %d request spans of a request that disabled the langfuse callback", n)
	}
	if n := len(hook.payloads(t)); n != 0 {
		t.Errorf("the webhook got %d payloads of a request that disabled it", n)
	}
}

// TestCallbackMessageLoggingFalse: LiteLLM turns content off for one
// logging service with callback_settings.<callback>.message_logging: false
// while the others keep it: neither Langfuse (an entry of that name) nor
// the webhook (its own entry) gets the prompt.
func TestCallbackMessageLoggingFalse(t *testing.T) {
	lf := &otlpSink{}
	lfs := httptest.NewServer(lf)
	defer lfs.Close()
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	t.Setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-1")
	t.Setenv("LANGFUSE_SECRET_KEY", "sk-lf-2")
	t.Setenv("LANGFUSE_HOST", lfs.URL)
	up := &traceUpstream{}
	ups := httptest.NewServer(up)
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + "litellm_settings:\n  callbacks: [\"langfuse\", \"hook\"]\n" +
		"callback_settings:\n  langfuse:\n    message_logging: false\n  hook:\n    callback_type: generic_api\n    endpoint: \"" + hs.URL + "\"\n    message_logging: false\n"
	gw, stop := tracedGateway(t, yaml)
	if resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"the merger closes friday"}]}`,
		"Authorization", "Bearer sk-1234"); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	stop()
	spans := requestSpans(lf)
	if len(spans) != 1 {
		t.Fatalf("%d request spans", len(spans))
	}
	if in := attrString(spans[0], "langfuse.observation.input"); strings.Contains(in, "merger") {
		t.Errorf("Langfuse got the prompt under callback_settings.langfuse.message_logging: false: %s", in)
	}
	ps := hook.payloads(t)
	if len(ps) != 1 {
		t.Fatalf("%d payloads", len(ps))
	}
	if b, _ := json.Marshal(ps[0]["messages"]); strings.Contains(string(b), "merger") {
		t.Errorf("the webhook got the prompt under its message_logging: false: %s", b)
	}
}
