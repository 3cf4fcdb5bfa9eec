package server

import (
	"encoding/json"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

// TestRelaxedBodyContentIsLogged: a body with LiteLLM-curl-style trailing
// commas and # comments is accepted (docs: "accepted in its cleaned
// form"). With content logging and a webhook on, its call must still have
// one payload at the webhook and a spend row whose messages are JSON.
func TestRelaxedBodyContentIsLogged(t *testing.T) {
	bodies := map[string]string{
		"trailing comma in messages": "{\"model\":\"ok\",\"messages\":[{\"role\":\"user\",\"content\":\"mail jane@example.com\"},]}",
		"comment":                    "{\"model\":\"ok\", # the model\n\"messages\":[{\"role\":\"user\",\"content\":\"mail jane@example.com\"}]}",
		"trailing comma in message":  "{\"model\":\"ok\",\"messages\":[{\"role\":\"user\",\"content\":\"mail jane@example.com\",}]}",
	}
	stores(t, func(t *testing.T, st store.Store) {
		for name, body := range bodies {
			t.Run(name, func(t *testing.T) {
				var code int
				out := moneyCase(t, st, true, func(t *testing.T, url, key string, _ func()) int {
					resp, b := post(t, url+"/v1/chat/completions", body, "Authorization", "Bearer "+key)
					code = resp.StatusCode
					if code != 200 {
						t.Fatalf("chat: %d %s", code, b)
					}
					return code
				})
				if len(out.rows) != 1 {
					t.Fatalf("%d spend rows, want 1", len(out.rows))
				}
				if m := out.rows[0].Messages; m == nil || !json.Valid(m) {
					t.Errorf("spend row messages not JSON: %q", m)
				}
				if len(out.payloads) != 1 {
					t.Fatalf("%d payloads, want 1", len(out.payloads))
				}
				if _, ok := out.payloads[0]["messages"].([]any); !ok {
					t.Errorf("payload messages: %#v", out.payloads[0]["messages"])
				}
			})
		}
	})
}
