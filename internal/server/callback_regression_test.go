package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/store"
)

// TestCallbackPayloadHasLiteLLMsRequiredFields: LiteLLM's
// StandardLoggingPayload (docs.litellm.ai/docs/proxy/logging_spec) types
// model_parameters as dict (the request's optional params: temperature,
// max_tokens, ...), and has hidden_params (StandardLoggingHiddenParams:
// model_id, api_base, response_cost, ...) and model_map_information, none
// of them Optional. Tollgate sends model_parameters as null (the field is
// declared and never filled) and omits the other two: a LiteLLM receiver
// doing payload["hidden_params"]["model_id"] or
// payload["model_parameters"].get("temperature") raises.
func TestCallbackPayloadHasLiteLLMsRequiredFields(t *testing.T) {
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	vars := callbackUpstreams(t)
	vars["HOOK"] = hs.URL
	base, _ := servedGateway(t, callbackConfig+`
litellm_settings:
  callbacks: ["my_hook"]
callback_settings:
  my_hook: {callback_type: generic_api, endpoint: "{{HOOK}}"}
`, callback.QueueOptions{BatchCount: 1}, vars)
	resp, _ := post(t, base+"/v1/chat/completions", `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"temperature":0.2,"max_tokens":7}`,
		"Authorization", "Bearer sk-master")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	waitFor(t, "the payload", func() bool { return len(hook.posts()) >= 1 })
	p := hook.payloads(t)[0]
	mp, ok := p["model_parameters"].(map[string]any)
	if !ok {
		t.Errorf("model_parameters = %#v, want LiteLLM's dict of the request's parameters", p["model_parameters"])
	} else if mp["temperature"] != 0.2 || mp["max_tokens"] != float64(7) {
		t.Errorf("model_parameters = %v, want temperature 0.2 and max_tokens 7", mp)
	}
	for _, f := range []string{"hidden_params", "model_map_information"} {
		if _, ok := p[f].(map[string]any); !ok {
			t.Errorf("%s = %#v, want LiteLLM's object", f, p[f])
		}
	}
}

// TestCallbackErrorClassIsLiteLLMs: LiteLLM's error_information
// .error_class is the exception's class ("BadRequestError",
// "RateLimitError", "NotFoundError": the spec's own example is
// "RateLimitError"). Tollgate writes "upstream_error" for every failure an
// upstream returned and OpenAI error types ("invalid_request_error") for
// its own: dashboards and monitors built on LiteLLM's values match
// nothing.
func TestCallbackErrorClassIsLiteLLMs(t *testing.T) {
	limited := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(429)
		io.WriteString(w, `{"error":{"message":"rate limited","type":"rate_limit_exceeded"}}`)
	}))
	defer limited.Close()
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	vars := callbackUpstreams(t)
	vars["HOOK"], vars["LIMITED"] = hs.URL, limited.URL
	base, _ := servedGateway(t, callbackConfig+`
  - model_name: limited
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {{LIMITED}}/v1
      api_key: sk-upstream-secret
router_settings:
  num_retries: 0
litellm_settings:
  failure_callback: ["my_hook"]
callback_settings:
  my_hook: {callback_type: generic_api, endpoint: "{{HOOK}}"}
`, callback.QueueOptions{BatchCount: 1}, vars)
	want := map[string]string{"broken": "BadRequestError", "limited": "RateLimitError", "no-such-model": "NotFoundError"}
	for _, m := range []string{"broken", "limited", "no-such-model"} {
		chat(t, base, m)
	}
	waitFor(t, "three failure payloads", func() bool { return len(hook.posts()) >= 3 })
	for _, p := range hook.payloads(t) {
		info, _ := p["error_information"].(map[string]any)
		group, _ := p["model_group"].(string)
		if w := want[group]; info["error_class"] != w {
			t.Errorf("model %q (error_code %v): error_class %q, want LiteLLM's %q", group, info["error_code"], info["error_class"], w)
		}
	}
}

// TestReadinessListsSuccessCallbacks: LiteLLM's /health/readiness
// reports the callbacks it runs in success_callbacks; Tollgate always
// answers [] (its comment still says callbacks are not run here), so a
// readiness check or dashboard shows configured sinks as absent.
func TestReadinessListsSuccessCallbacks(t *testing.T) {
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	vars := callbackUpstreams(t)
	vars["HOOK"] = hs.URL
	base, _ := servedGateway(t, callbackConfig+`
litellm_settings:
  success_callback: ["my_hook"]
callback_settings:
  my_hook: {callback_type: generic_api, endpoint: "{{HOOK}}"}
`, callback.QueueOptions{FlushInterval: time.Hour}, vars)
	resp, err := http.Get(base + "/health/readiness")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		SuccessCallbacks []string `json:"success_callbacks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(body.SuccessCallbacks, "my_hook") {
		t.Errorf("success_callbacks = %v, want the configured my_hook", body.SuccessCallbacks)
	}
}

// TestStreamCutByUpstreamIsAFailure: an upstream that breaks off a
// stream (connection closed before its last event and [DONE]) leaves the
// client with a truncated answer: the callbacks get a failure (observed
// status 502, error information), so failure_callback hears of it, as
// LiteLLM's stream raises and logs a failure. What is booked does not
// change: the spend row keeps the upstream's 200 and what it produced.
func TestStreamCutByUpstreamIsAFailure(t *testing.T) {
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}`+"\n\n")
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer cut.Close()
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	vars := callbackUpstreams(t)
	vars["HOOK"], vars["CUT"] = hs.URL, cut.URL
	st := sqliteStore(t)
	base, stop := servedGateway(t, callbackConfig+`
  - model_name: cut
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {{CUT}}/v1
      api_key: sk-upstream-secret
litellm_settings:
  callbacks: ["my_hook"]
callback_settings:
  my_hook: {callback_type: generic_api, endpoint: "{{HOOK}}"}
`, callback.QueueOptions{BatchCount: 1}, vars, st)
	resp, body := post(t, base+"/v1/chat/completions", `{"model":"cut","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-master")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Hel") {
		t.Errorf("client got %d %q, want the 200 and the part the upstream sent", resp.StatusCode, body)
	}
	waitFor(t, "the payload", func() bool { return len(hook.posts()) >= 1 })
	p := hook.payloads(t)[0]
	info, _ := p["error_information"].(map[string]any)
	if p["status"] != "failure" || info == nil || info["error_class"] != "APIConnectionError" || p["http_status"] != float64(502) {
		t.Errorf("a stream the upstream cut off: payload status %v, http_status %v, error_information %v; want a 502 failure", p["status"], p["http_status"], p["error_information"])
	}
	stop()
	rows, _, err := st.ListSpendLogs(context.Background(), store.SpendFilter{})
	if err != nil {
		t.Fatal(err)
	}
	// Booked as it was produced, and marked a failure: the client got a
	// truncated answer.
	if len(rows) != 1 || rows[0].Status != 502 || rows[0].Cost <= 0 || rows[0].ErrorInformation == nil ||
		rows[0].ErrorInformation.ErrorClass != "APIConnectionError" {
		t.Errorf("spend rows %+v, want one, booked with what was produced, status 502", rows)
	}
}

// TestCallbackResponseCostWithoutDatabase: a gateway without a
// database (LiteLLM's common logging-only setup: no DB, costs read from
// the callbacks) sends response_cost 0 for every priced request: the cost
// is only computed by the spend meter, which needs a store. LiteLLM fills
// response_cost from its price map on every call. Same model, same
// request: with a store the payload carries the cost (the existing
// TestGenericAPICallbackGetsLiteLLMPayloadsInBatches), without it 0.
func TestCallbackResponseCostWithoutDatabase(t *testing.T) {
	hook := &receiver{}
	hs := httptest.NewServer(hook)
	defer hs.Close()
	vars := callbackUpstreams(t)
	vars["HOOK"] = hs.URL
	base, _ := servedGateway(t, callbackConfig+`
litellm_settings:
  callbacks: ["my_hook"]
callback_settings:
  my_hook: {callback_type: generic_api, endpoint: "{{HOOK}}"}
`, callback.QueueOptions{BatchCount: 1}, vars)
	if code := chat(t, base, "gpt-4"); code != 200 {
		t.Fatalf("status %d", code)
	}
	waitFor(t, "the payload", func() bool { return len(hook.posts()) >= 1 })
	p := hook.payloads(t)[0]
	if c, _ := p["response_cost"].(float64); c <= 0 {
		t.Errorf("response_cost = %v for %v prompt + %v completion tokens of openai/gpt-4o-mini, want its price", p["response_cost"], p["prompt_tokens"], p["completion_tokens"])
	}
}
