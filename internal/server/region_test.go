package server

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestRegionRouting: an end user whose allowed_model_region is "eu" is
// served only by deployments with region_name eu (never by the group's
// us one, whatever the routing picks), a model with no eu deployment is a
// clear 400 that reaches no upstream, and other callers use every
// deployment. An unknown region is refused and changes nothing.
func TestRegionRouting(t *testing.T) {
	us := mockupstream.New(mockupstream.Options{})
	usUp := httptest.NewServer(us)
	defer usUp.Close()
	yaml := strings.ReplaceAll(`model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4, api_base: "{{UP}}", region_name: eu}
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4, api_base: "{{US}}", region_name: us}
  - model_name: us-only
    litellm_params: {model: openai/gpt-4, api_base: "{{US}}", region_name: us}
general_settings:
  master_key: sk-1234
`, "{{US}}", usUp.URL)
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, yaml)
	eu := e.mock
	if resp, out := e.post(t, "/customer/new", "sk-1234", `{"user_id": "anna", "allowed_model_region": "eu"}`); resp.StatusCode != 200 || out["allowed_model_region"] != "eu" {
		t.Fatalf("/customer/new: %d %v", resp.StatusCode, out)
	}
	for range 20 {
		resp, out := e.post(t, "/v1/chat/completions", "sk-1234", `{"model":"gpt-4","user":"anna","messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != 200 || resp.Header.Get("x-litellm-model-region") != "eu" {
			t.Fatalf("eu end user: %d %v (x-litellm-model-region %q)", resp.StatusCode, out, resp.Header.Get("x-litellm-model-region"))
		}
	}
	if n, m := eu.Stats().Requests, us.Stats().Requests; n != 20 || m != 0 {
		t.Fatalf("eu end user's requests: %d in eu, %d in us", n, m)
	}
	resp, out := e.post(t, "/v1/chat/completions", "sk-1234", `{"model":"us-only","user":"anna","messages":[{"role":"user","content":"hi"}]}`)
	if msg := messageOf(out); resp.StatusCode != 400 || !strings.Contains(msg, `region "eu"`) || us.Stats().Requests != 0 {
		t.Fatalf("eu end user, us-only model: %d %q (us served %d)", resp.StatusCode, msg, us.Stats().Requests)
	}
	// Without a region, both deployments serve.
	for range 40 {
		if resp, out := e.post(t, "/v1/chat/completions", "sk-1234", `{"model":"gpt-4","user":"bob","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 200 {
			t.Fatalf("no region: %d %v", resp.StatusCode, out)
		}
	}
	if us.Stats().Requests == 0 {
		t.Fatal("a caller without a region never reached the us deployment in 40 requests")
	}
	if resp, out := e.post(t, "/customer/new", "sk-1234", `{"user_id": "carl", "allowed_model_region": "mars"}`); resp.StatusCode != 400 {
		t.Fatalf("unknown region: %d %v", resp.StatusCode, out)
	}
	if _, err := e.store.GetEndUser(context.Background(), "carl"); err == nil {
		t.Fatal("a refused /customer/new created the end user")
	}
}
