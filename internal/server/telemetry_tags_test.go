package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"net/http/httptest"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// LiteLLM's cost_tracking curl example, as its docs print it (# comments
// included), and its request_tags example's header.
const litellmTaggedCurl = `{
"model": "llama3",
"messages": [
{
"role": "user",
"content": "what llm are you"
}
],
"user": "palantir", # OPTIONAL: pass user to track spend by user
"metadata": {
"tags": ["jobID:214590dsff09fds", "taskName:run_page_classification"] # ENTERPRISE: pass tags to track spend by tags
}
}`

func getAny(t *testing.T, url string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer sk-1234")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestLiteLLMTagExamplesWithTelemetry: LiteLLM's documented tag requests
// (metadata.tags in a commented curl body, x-litellm-tags, deployment
// tags), with content logging and a webhook on, land in the spend row's
// request_tags, the webhook's request_tags and /spend/tags and
// /global/spend/tags in LiteLLM's shapes.
func TestLiteLLMTagExamplesWithTelemetry(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		hook := &receiver{}
		hs := hookURL(t, hook)
		models := "  - model_name: llama3\n    litellm_params: {model: openai/gpt-4o-mini, api_base: \"{{UP}}\", input_cost_per_token: 0, output_cost_per_token: 0.0001, tags: [\"AWS_IAM_PROD\"]}\n"
		extra := "  store_prompts_in_spend_logs: true\nlitellm_settings:\n  callbacks: [\"hook\"]\ncallback_settings:\n  hook:\n    callback_type: generic_api\n    endpoint: \"" + hs + "\"\n"
		e := startSpendWith(t, st, mockupstream.Options{}, models, extra, Options{})
		_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
		key := out["key"].(string)
		if resp, out := e.post(t, "/v1/chat/completions", key, litellmTaggedCurl, "x-litellm-tags", "team-api,production,us-east-1"); resp.StatusCode != 200 {
			t.Fatalf("LiteLLM's curl example: %d %v", resp.StatusCode, out)
		}
		want := []string{"team-api", "production", "us-east-1", "jobID:214590dsff09fds", "taskName:run_page_classification", "AWS_IAM_PROD"}
		var row store.SpendLog
		for deadline := time.Now().Add(30 * time.Second); ; {
			e.srv.writer.Flush()
			logs, _, err := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
			if err != nil {
				t.Fatal(err)
			}
			if len(logs) == 1 {
				row = logs[0]
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d rows after 30 s", len(logs))
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, w := range want {
			if !slices.Contains(row.RequestTags, w) {
				t.Errorf("spend row request_tags %v lacks %q", row.RequestTags, w)
			}
		}
		if row.EndUser != "palantir" {
			t.Errorf("end user %q", row.EndUser)
		}
		code, b := getAny(t, e.url+"/spend/tags")
		var tags []map[string]any
		if code != 200 || json.Unmarshal(b, &tags) != nil {
			t.Fatalf("/spend/tags: %d %s", code, b)
		}
		seen := map[string]bool{}
		for _, x := range tags {
			name, _ := x["individual_request_tag"].(string)
			if n, _ := x["log_count"].(float64); n >= 1 {
				if s, _ := x["total_spend"].(float64); s > 0 {
					seen[name] = true
				}
			}
		}
		for _, w := range want {
			if !seen[w] {
				t.Errorf("/spend/tags has no spend for %q: %s", w, b)
			}
		}
		day := time.Now().UTC().Format("2006-01-02")
		code, b = getAny(t, e.url+"/global/spend/tags?start_date="+day+"&end_date="+day+"&tags=production,AWS_IAM_PROD")
		if code != 200 || !strings.Contains(string(b), `"spend_per_tag"`) || !strings.Contains(string(b), `"AWS_IAM_PROD"`) {
			t.Errorf("/global/spend/tags: %d %s", code, b)
		}
		e.stop()
		ps := hook.payloads(t)
		if len(ps) != 1 {
			t.Fatalf("%d payloads, want 1", len(ps))
		}
		got, _ := ps[0]["request_tags"].([]any)
		for _, w := range want {
			if !slices.Contains(got, any(w)) {
				t.Errorf("payload request_tags %v lacks %q", got, w)
			}
		}
	})
}

func hookURL(t *testing.T, h http.Handler) string {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}
