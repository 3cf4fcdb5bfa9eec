package server

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store"
)

// TestWildcardModelNotUTF8IsObservedOnce: a model name with a byte that
// is not UTF-8 (JSON text lets a client put one in a string), served by a
// wildcard group, becomes a metric label; Prometheus panics on a label not
// UTF-8, which made serve's deferred finish publish a second payload. The
// label is cleaned (labels.go labelValue): the call is answered, booked
// once and reaches the webhook once, and nothing panics.
func TestWildcardModelNotUTF8IsObservedOnce(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		up := httptest.NewServer(&moneyUpstream{})
		defer up.Close()
		hook := &receiver{}
		hs := httptest.NewServer(hook)
		defer hs.Close()
		yaml := `
model_list:
  - model_name: "openai/*"
    litellm_params: {model: "openai/*", api_base: "` + up.URL + `/v1", api_key: sk-up, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
general_settings:
  master_key: sk-1234
  store_prompts_in_spend_logs: true
litellm_settings:
  callbacks: ["hook"]
callback_settings:
  hook:
    callback_type: generic_api
    endpoint: "` + hs.URL + `"
`
		cfg, err := config.Parse("w.yaml", []byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		e := serveWith(t, cfg, Options{Store: st})
		_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
		key, _ := out["key"].(string)
		body := []byte("{\"model\":\"openai/gpt-\xff\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}")
		req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("the call broke off: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !strings.Contains(string(b), "chat.completion") {
			t.Errorf("answer: %d %q (read error %v)", resp.StatusCode, b, err)
		}
		e.stop() // flushes the writer and the webhook
		logs, _, err := st.ListSpendLogs(t.Context(), store.SpendFilter{KeyHash: sha(key)})
		if err != nil {
			t.Fatal(err)
		}
		if len(logs) != 1 {
			t.Errorf("%d spend rows, want 1", len(logs))
		}
		if n := len(hook.payloads(t)); n != 1 {
			t.Errorf("%d payloads for one call, want 1", n)
		}
		// The log is shared by the package's tests (one of which panics on
		// purpose): only a panic on this test's route counts.
		for _, l := range loggedLines("panic") {
			if strings.Contains(l, `"path":"/v1/chat/completions"`) {
				t.Errorf("the request path panicked: %s", l)
			}
		}
	})
}
