package server

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeReplacedSecretIsRefused: a secret a key had before
// /key/regenerate (its first, which names its budget account, or a later
// one still forwarded) is refused as a new key's, by /key/generate and by
// /key/regenerate's new_key, with an OpenAI-shaped 400 that changes
// nothing; the regenerated key keeps its budget to itself.
func TestProbeReplacedSecretIsRefused(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		e := startSpend(t, st, mockupstream.Options{}, "")
		const first, second = "sk-probe-reuse-first", "sk-probe-reuse-second"
		if resp, out := e.post(t, "/key/generate", "sk-1234", `{"key": "`+first+`", "max_budget": 0.0009}`); resp.StatusCode != 200 {
			t.Fatalf("generate: %d %v", resp.StatusCode, out)
		}
		if resp, out := e.post(t, "/v1/chat/completions", first, chat3); resp.StatusCode != 200 {
			t.Fatalf("first request: %d %v", resp.StatusCode, out)
		}
		if resp, out := e.post(t, "/key/regenerate", "sk-1234", `{"key": "`+first+`", "new_key": "`+second+`"}`); resp.StatusCode != 200 {
			t.Fatalf("regenerate: %d %v", resp.StatusCode, out)
		}
		_, out := e.post(t, "/key/regenerate", "sk-1234", `{"key": "`+second+`"}`)
		fresh, _ := out["key"].(string)
		if fresh == "" {
			t.Fatalf("regenerate: %v", out)
		}
		refused := func(path, body, param, secret string) {
			t.Helper()
			resp, out := e.post(t, path, "sk-1234", body)
			eo, _ := out["error"].(map[string]any)
			if resp.StatusCode != 400 || eo == nil || eo["param"] != param || !strings.Contains(eo["message"].(string), "regenerate") {
				t.Fatalf("%s with a replaced secret: %d %v, want a 400 on %s", path, resp.StatusCode, out, param)
			}
			if _, err := e.store.GetKey(context.Background(), sha(secret)); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("%s with a replaced secret stored a key under it: %v", path, err)
			}
		}
		refused("/key/generate", `{"key": "`+first+`"}`, "key", first)
		refused("/key/generate", `{"key": "`+second+`"}`, "key", second)
		refused("/key/regenerate", `{"key": "`+fresh+`", "new_key": "`+first+`"}`, "new_key", first)
		// The regenerated key is untouched and still has its own budget.
		if resp, out := e.post(t, "/v1/chat/completions", fresh, chat3); resp.StatusCode != 200 {
			t.Fatalf("the regenerated key after the refusals: %d %v", resp.StatusCode, out)
		}
		// Any other custom key is fine.
		if resp, out := e.post(t, "/key/generate", "sk-1234", `{"key": "sk-probe-reuse-other"}`); resp.StatusCode != 200 {
			t.Fatalf("an unrelated custom key: %d %v", resp.StatusCode, out)
		}
	})
}
