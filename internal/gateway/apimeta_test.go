package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/router"
)

// apiMetaRig serves one deployment of prov whose upstream records the
// bodies it gets and answers with answer.
func apiMetaRig(t *testing.T, prov, answer string) (string, chan map[string]json.RawMessage) {
	t.Helper()
	bodies := make(chan map[string]json.RawMessage, 4)
	u := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]json.RawMessage
		_ = json.Unmarshal(b, &m)
		bodies <- m
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(u.Close)
	deps := []config.Deployment{{ModelName: "g", Provider: prov, Model: "m", APIBase: u.URL, ID: "d1"}}
	rt, err := router.New(deps, router.Settings{Health: router.NewHealth(nil)})
	if err != nil {
		t.Fatal(err)
	}
	g := New(Options{Observer: &Telemetry{}}, auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), rt)
	mux := http.NewServeMux()
	g.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, bodies
}

func apiMetaPost(t *testing.T, url, body string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
	}
}

// TestLitellmMetadataNeverForwarded: litellm_metadata is LiteLLM's
// member, never Anthropic's or OpenAI's. On /v1/messages and
// /v1/responses, where metadata is the API's own and goes as sent, the
// gateway still reads litellm_metadata (for tags) and removes it: the
// upstreams refuse an unknown top-level member.
func TestLitellmMetadataNeverForwarded(t *testing.T) {
	for _, c := range []struct{ name, prov, path, body, answer string }{
		{"messages", "anthropic", "/v1/messages",
			`{"model":"g","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"u1"},"litellm_metadata":{"tags":["lm"]}}`,
			`{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}`},
		{"responses", "openai", "/v1/responses",
			`{"model":"g","input":"hi","litellm_metadata":{"tags":["lm"]}}`,
			`{"id":"resp_1","object":"response","status":"completed","model":"m","output":[{"type":"message","id":"m1","role":"assistant","content":[{"type":"output_text","text":"ok"}]}],"usage":{"input_tokens":3,"output_tokens":1,"total_tokens":4}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			url, bodies := apiMetaRig(t, c.prov, c.answer)
			apiMetaPost(t, url+c.path, c.body)
			got := <-bodies
			if v, ok := got["litellm_metadata"]; ok {
				t.Errorf("%s forwarded litellm_metadata upstream: %s", c.path, v)
			}
			if c.name == "messages" && string(got["metadata"]) != `{"user_id":"u1"}` {
				t.Errorf("Anthropic's own metadata changed: %s", got["metadata"])
			}
		})
	}
}

// TestRetriedRequestCarriesAnsweringDeploymentTags: each attempt carries
// its own deployment's litellm_params.tags; a request that the first
// deployment failed and the second answered is logged with the second's
// tags only, after the client's (a client tag that is also an operator's
// counts as the operator's).
func TestRetriedRequestCarriesAnsweringDeploymentTags(t *testing.T) {
	fail := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":{"message":"down"}}`, 500)
	}))
	t.Cleanup(fail.Close)
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`)
	}))
	t.Cleanup(ok.Close)
	deps := []config.Deployment{
		{ModelName: "g", Provider: "openai", Model: "m", APIBase: fail.URL, ID: "d1", Order: 1, Tags: []string{"dep-a"}},
		{ModelName: "g", Provider: "openai", Model: "m", APIBase: ok.URL, ID: "d2", Order: 2, Tags: []string{"dep-b", "client"}},
	}
	rt, err := router.New(deps, router.Settings{Health: router.NewHealth(nil)})
	if err != nil {
		t.Fatal(err)
	}
	pub := &publisher{got: make(chan *callback.Payload, 4)}
	g := New(Options{Observer: &Telemetry{Callbacks: pub}, Routing: config.Routing{NumRetries: 1}}, auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), rt)
	mux := http.NewServeMux()
	g.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	if status, body := metaPost(t, srv.URL, `{"model":"g","messages":[{"role":"user","content":"hi"}]}`, "x-litellm-tags", "client,other"); status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	pl := nextPayload(t, pub)
	if pl.Retries != 1 {
		t.Fatalf("retries %d: the failing deployment was not tried first", pl.Retries)
	}
	if got := strings.Join(pl.RequestTags, ","); got != "other,dep-b,client" {
		t.Errorf("tags %q, want the client's and the answering deployment's only (other,dep-b,client)", got)
	}
}
