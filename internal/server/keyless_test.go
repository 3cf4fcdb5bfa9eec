package server

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestKeylessPrincipalStaysEmpty: an open gateway gives every request
// without a key one shared, read-only principal (auth.Authenticate). After
// whole and streamed answers, end users, metadata, tags, a cached answer,
// embeddings, the Responses and Messages routes and refusals, it is still
// the zero principal: nothing on the request path wrote to it.
func TestKeylessPrincipalStaysEmpty(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(`model_list:
  - model_name: demo
    litellm_params: {model: openai/gpt-4o, api_base: "{{UP}}/v1", input_cost_per_token: 0.000001, output_cost_per_token: 0.00001}
  - model_name: emb
    litellm_params: {model: openai/text-embedding-3-small, api_base: "{{UP}}/v1"}
litellm_settings:
  cache: true
`, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	probe, _ := http.NewRequest("POST", "/v1/chat/completions", nil)
	shared, err := srv.authn.Authenticate(probe)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := srv.authn.Authenticate(probe); again != shared {
		t.Fatal("the keyless principal is not shared: this test checks nothing")
	}
	for _, rq := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"demo","messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/chat/completions", `{"model":"demo","messages":[{"role":"user","content":"hi"}]}`}, // cached
		{"/v1/chat/completions", `{"model":"demo","stream":true,"user":"end-1","messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/chat/completions", `{"model":"demo","user":"end-2","metadata":{"tags":["a"],"trace_id":"t"},"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/chat/completions", `{"model":"nope","messages":[]}`},
		{"/v1/chat/completions", `{"model":`},
		{"/v1/embeddings", `{"model":"emb","input":"hi"}`},
		{"/v1/responses", `{"model":"demo","input":"hi"}`},
		{"/v1/messages", `{"model":"demo","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`},
	} {
		resp, _ := post(t, ts.URL+rq.path, rq.body)
		if resp.StatusCode >= 500 {
			t.Errorf("%s %s: %d", rq.path, rq.body, resp.StatusCode)
		}
	}
	if !reflect.DeepEqual(*shared, auth.Principal{}) {
		t.Fatalf("the keyless principal was written: %+v", *shared)
	}
}
