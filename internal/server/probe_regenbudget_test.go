package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

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
		// The account stays internal.
		for _, path := range []string{"/key/info?key=" + fresh, "/key/list?return_full_object=true"} {
			req, _ := http.NewRequest("GET", e.url+path, nil)
			req.Header.Set("Authorization", "Bearer sk-1234")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || strings.Contains(string(body), "budget_account") || strings.Contains(string(body), sha(first)) {
				t.Fatalf("%s: %d shows the budget account: %s", path, resp.StatusCode, body)
			}
		}
		// Any other custom key is fine.
		if resp, out := e.post(t, "/key/generate", "sk-1234", `{"key": "sk-probe-reuse-other"}`); resp.StatusCode != 200 {
			t.Fatalf("an unrelated custom key: %d %v", resp.StatusCode, out)
		}
	})
}

// TestProbeRegeneratedKeyPeriodSweep: a regenerated key with a budget
// period, idle when the period ends, is rolled over by the sweep on the
// account its requests are checked on (the first hash's, on Redis too):
// the store shows the new period, Redis's hash of that account has it,
// no hash is made under the current token hash, and the key has its
// whole budget again.
func TestProbeRegeneratedKeyPeriodSweep(t *testing.T) {
	r := newRig(t, rigSpec{name: "regensweep", postgres: true, redis: true})
	r.start(t, pricedConfig+"  redis_url: {{REDIS}}\n", Options{ResyncInterval: 100 * time.Millisecond, BudgetSweepInterval: 200 * time.Millisecond})
	u := r.urls[0]
	const raw = "sk-probe-regen-sweep"
	r.key(t, raw, `"max_budget": 0.0003, "budget_duration": "3s"`) // one request a period
	if code, body := send(t, u+"/v1/chat/completions", raw, chat3); code != 200 {
		t.Fatalf("first request: %d %s", code, body)
	}
	code, out := sendJSON(t, u+"/key/regenerate", "sk-1234", `{"key": "`+raw+`"}`)
	fresh, _ := out["key"].(string)
	if code != 200 || fresh == "" {
		t.Fatalf("regenerate: %d %v", code, out)
	}
	if code, body := send(t, u+"/v1/chat/completions", fresh, chat3); code != 400 || !strings.Contains(body, "budget_exceeded") {
		t.Fatalf("the spent key's new secret: %d %s", code, body)
	}
	k0, err := r.st.GetKey(context.Background(), sha(fresh))
	if err != nil || k0.BudgetResetAt == nil {
		t.Fatalf("key: %+v %v", k0, err)
	}
	// Idle: the sweep moves the period in the store.
	var k *store.Key
	if _, ok := within(time.Minute, func() bool {
		k, err = r.st.GetKey(context.Background(), sha(fresh))
		return err == nil && k.BudgetResetAt != nil && k.BudgetResetAt.After(*k0.BudgetResetAt) && k.Spend == 0
	}); !ok {
		t.Fatalf("the sweep never moved the period: %+v %v", k, err)
	}
	c := r.client(t)
	ctx := context.Background()
	if _, ok := within(time.Minute, func() bool {
		p, _ := c.HGet(ctx, r.budget("key", sha(raw)), "period").Int64()
		return p >= k.BudgetResetAt.UnixNano()
	}); !ok {
		all, _ := c.HGetAll(ctx, r.budget("key", sha(raw))).Result()
		t.Errorf("Redis's hash of the key's account was not rolled over by the sweep: %v", all)
	}
	if n, _ := c.Exists(ctx, r.budget("key", sha(fresh))).Result(); n != 0 {
		all, _ := c.HGetAll(ctx, r.budget("key", sha(fresh))).Result()
		t.Errorf("the sweep made a Redis hash under the key's current hash, which no request reads: %v", all)
	}
	if code, body := send(t, u+"/v1/chat/completions", fresh, chat3); code != 200 {
		t.Fatalf("the key in its new period: %d %s", code, body)
	}
}

// TestRegeneratedKeyAfterRestart: a replica started after a key was
// regenerated seeds the key's account from the store's spend (both the
// old and the new secret's requests), once: exactly what is left of the
// budget is admitted.
func TestRegeneratedKeyAfterRestart(t *testing.T) {
	r := newRig(t, rigSpec{name: "regenrestart"})
	r.start(t, pricedConfig, Options{})
	const raw = "sk-probe-regen-restart"
	r.key(t, raw, `"max_budget": 0.0009`) // three requests
	if code, body := send(t, r.urls[0]+"/v1/chat/completions", raw, chat3); code != 200 {
		t.Fatalf("first request: %d %s", code, body)
	}
	code, out := sendJSON(t, r.urls[0]+"/key/regenerate", "sk-1234", `{"key": "`+raw+`"}`)
	fresh, _ := out["key"].(string)
	if code != 200 || fresh == "" {
		t.Fatalf("regenerate: %d %v", code, out)
	}
	if code, body := send(t, r.urls[0]+"/v1/chat/completions", fresh, chat3); code != 200 {
		t.Fatalf("second request: %d %s", code, body)
	}
	r.stops[0]()
	r.start(t, pricedConfig, Options{})
	u := r.urls[1]
	if code, body := send(t, u+"/v1/chat/completions", fresh, chat3); code != 200 {
		t.Fatalf("third request after the restart: %d %s", code, body)
	}
	if code, body := send(t, u+"/v1/chat/completions", fresh, chat3); code != 400 || !strings.Contains(body, "budget_exceeded") {
		t.Fatalf("a fourth request after the restart: %d %s", code, body)
	}
}
