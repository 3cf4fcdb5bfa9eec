package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/router"
)

// publisher records the payloads it is given.
type publisher struct {
	failures bool // wants failures only
	got      chan *callback.Payload
}

func (p *publisher) Wants(failed bool) bool       { return !p.failures || failed }
func (p *publisher) Publish(pl *callback.Payload) { p.got <- pl }

func metaRig(t *testing.T, pub callback.Publisher, up http.HandlerFunc) string {
	t.Helper()
	u := httptest.NewServer(up)
	t.Cleanup(u.Close)
	deps := []config.Deployment{{ModelName: "g", Provider: "openai", Model: "m", APIBase: u.URL, ID: "d1"}}
	rt, err := router.New(deps, router.Settings{Health: router.NewHealth(nil)})
	if err != nil {
		t.Fatal(err)
	}
	g := New(Options{Observer: &Telemetry{Callbacks: pub}}, auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), rt)
	mux := http.NewServeMux()
	g.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func metaPost(t *testing.T, url, body string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func nextPayload(t *testing.T, p *publisher) *callback.Payload {
	t.Helper()
	select {
	case pl := <-p.got:
		return pl
	case <-time.After(time.Minute):
		t.Fatal("no payload was published")
		return nil
	}
}

// TestPayloadCarriesTagsAndMetadata: the header's tags, then the body's
// metadata.tags, each once; the body's metadata as requester_metadata;
// usage, the deployment and the status as LiteLLM's payload names them.
func TestPayloadCarriesTagsAndMetadata(t *testing.T) {
	pub := &publisher{got: make(chan *callback.Payload, 4)}
	url := metaRig(t, pub, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`)
	})
	status, body := metaPost(t, url, `{"model":"g","messages":[{"role":"user","content":"hi"}],"metadata":{"tags":["eval","nightly"],"generation_name":"g1"}}`,
		"x-litellm-tags", "team-a, eval")
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	pl := nextPayload(t, pub)
	if want := []string{"team-a", "eval", "nightly"}; !slices.Equal(pl.RequestTags, want) {
		t.Errorf("request_tags %v, want %v", pl.RequestTags, want)
	}
	if pl.Metadata.RequesterMetadata["generation_name"] != "g1" {
		t.Errorf("requester_metadata %v", pl.Metadata.RequesterMetadata)
	}
	if pl.Status != "success" || pl.PromptTokens != 7 || pl.CompletionTokens != 3 || pl.TotalTokens != 10 || pl.HTTPStatus != 200 {
		t.Errorf("payload %+v", pl)
	}
	if pl.ModelID == nil || *pl.ModelID != "d1" || pl.ModelGroup == nil || *pl.ModelGroup != "g" || pl.Model != "m" || pl.CallType != "acompletion" {
		t.Errorf("deployment fields: %+v", pl)
	}
	if pl.EndTime < pl.StartTime || pl.ErrorStr != nil {
		t.Errorf("times or error: %+v", pl)
	}
}

// TestPayloadOfFailures: a publisher that wants failures gets the upstream's
// error with its status, and nothing of the successes.
func TestPayloadOfFailures(t *testing.T) {
	pub := &publisher{failures: true, got: make(chan *callback.Payload, 4)}
	var fail atomic.Bool
	fail.Store(true)
	url := metaRig(t, pub, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if fail.Load() {
			w.WriteHeader(400)
			_, _ = io.WriteString(w, `{"error":{"message":"bad thing","type":"invalid_request_error"}}`)
			return
		}
		_, _ = io.WriteString(w, `{"id":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	})
	if status, _ := metaPost(t, url, `{"model":"g","messages":[{"role":"user","content":"hi"}]}`); status != 400 {
		t.Fatalf("status %d", status)
	}
	pl := nextPayload(t, pub)
	if pl.Status != "failure" || pl.HTTPStatus != 400 || pl.ErrorStr == nil || !strings.Contains(*pl.ErrorStr, "bad thing") ||
		pl.ErrorInformation == nil || pl.ErrorInformation.ErrorCode != "400" {
		t.Errorf("failure payload %+v", pl)
	}
	fail.Store(false)
	if status, _ := metaPost(t, url, `{"model":"g","messages":[{"role":"user","content":"hi"}]}`); status != 200 {
		t.Fatalf("status %d", status)
	}
	// A refusal by the gateway itself is a failure too.
	if status, _ := metaPost(t, url, `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`); status != 404 {
		t.Fatalf("status %d", status)
	}
	pl = nextPayload(t, pub)
	if pl.HTTPStatus != 404 || pl.ErrorInformation == nil || pl.ErrorInformation.ErrorClass == "" {
		t.Errorf("the 200 was published, or the refusal's payload is wrong: %+v", pl)
	}
}

// TestMalformedMetadataIsRefused: metadata that is not an object, or tags
// that are not strings, are a 400 that never reaches the upstream.
func TestMalformedMetadataIsRefused(t *testing.T) {
	pub := &publisher{got: make(chan *callback.Payload, 4)}
	var reached atomic.Bool
	url := metaRig(t, pub, func(w http.ResponseWriter, r *http.Request) { reached.Store(true) })
	for _, body := range []string{
		`{"model":"g","messages":[],"metadata":"x"}`,
		`{"model":"g","messages":[],"metadata":{"tags":"a"}}`,
		`{"model":"g","messages":[],"metadata":{"tags":[1]}}`,
		`{"model":"g","messages":[],"litellm_metadata":[1]}`,
	} {
		if status, b := metaPost(t, url, body); status != 400 || !strings.Contains(b, "metadata") {
			t.Errorf("%s: %d %s", body, status, b)
		}
	}
	if reached.Load() {
		t.Error("a malformed request reached the upstream")
	}
}

// TestErrorClassIsLiteLLMs: error_information.error_class is the class of
// the exception LiteLLM raises for a call that ended so.
func TestErrorClassIsLiteLLMs(t *testing.T) {
	tests := []struct {
		status    int
		typ, code string
		body      string
		want      string
	}{
		{400, "", "", `{"error":{"message":"bad"}}`, "BadRequestError"},
		{400, "", "", `{"error":{"code":"context_length_exceeded"}}`, "ContextWindowExceededError"},
		{400, "", "content_policy_violation", "", "ContentPolicyViolationError"},
		{400, "budget_exceeded", "budget_exceeded", "", "BudgetExceededError"},
		{401, "authentication_error", "", "", "AuthenticationError"},
		{403, "permission_error", "", "", "PermissionDeniedError"},
		{404, "not_found_error", "model_not_found", "", "NotFoundError"},
		{408, "", "", "", "Timeout"},
		{422, "", "", "", "UnprocessableEntityError"},
		{429, "rate_limit_error", "", "", "RateLimitError"},
		{500, "", "", "", "InternalServerError"},
		{502, "api_error", "upstream_error", "", "APIConnectionError"},
		{503, "", "", "", "ServiceUnavailableError"},
		{504, "timeout_error", "upstream_timeout", "", "Timeout"},
		{418, "", "", "", "BadRequestError"},
		{507, "", "", "", "APIError"},
	}
	for _, tt := range tests {
		if got := errorClass(tt.status, tt.typ, tt.code, []byte(tt.body)); got != tt.want {
			t.Errorf("errorClass(%d, %q, %q, %q) = %q, want %q", tt.status, tt.typ, tt.code, tt.body, got, tt.want)
		}
	}
}
