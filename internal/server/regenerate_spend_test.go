package server

import (
	"context"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// TestSpendInFlightAcrossRegenerateLandsOnNewKey: a request in flight when
// its key is regenerated settles after /key/regenerate, and its spend row
// names the old hash, whose keys row ReplaceKey removed. Its cost is the
// new key's (spend and model budget): before key_replacements it was
// lost to both (the user's and the rollups' still had it).
func TestSpendInFlightAcrossRegenerateLandsOnNewKey(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		h := newHeldUpstream(t)
		e := startConfigWith(t, st, mockupstream.Options{}, strings.ReplaceAll(pricedConfig, "{{UP}}", h.url), Options{})
		_, out := e.post(t, "/key/generate", "sk-1234", `{"user_id": "u-regen", "model_max_budget": {"gpt-4": 1}}`)
		key, _ := out["key"].(string)
		if key == "" {
			t.Fatalf("generate: %v", out)
		}
		if resp, out := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
			t.Fatalf("first request: %d %v", resp.StatusCode, out)
		}
		e.srv.writer.Flush()

		done := make(chan int, 1)
		go func() {
			req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(chatHeld))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- 0
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
		select {
		case <-h.arrived:
		case <-time.After(time.Minute):
			t.Fatal("the second request never reached the upstream")
		}
		resp, out := e.post(t, "/key/regenerate", "sk-1234", `{"key": "`+key+`"}`)
		fresh, _ := out["key"].(string)
		if resp.StatusCode != 200 || fresh == "" {
			t.Fatalf("regenerate: %d %v", resp.StatusCode, out)
		}
		h.free()
		select {
		case code := <-done:
			if code != 200 {
				t.Fatalf("the request in flight answered %d", code)
			}
		case <-time.After(time.Minute):
			t.Fatal("the request in flight never answered")
		}
		// Both rows are written (under the old hash) once the second settled.
		waitFor(t, "both spend rows", func() bool { return len(e.keyRows(t, key)) == 2 })

		const want = 0.0006 // two requests of 3 output tokens at 0.0001
		k, err := st.GetKey(context.Background(), sha(fresh))
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(k.Spend-want) > 1e-12 {
			t.Errorf("the new key's spend is %v, want %v: the request in flight across the regenerate was lost", k.Spend, want)
		}
		if got := k.ModelSpend["gpt-4"]; math.Abs(got-want) > 1e-12 {
			t.Errorf("the new key's model_spend for gpt-4 is %v, want %v", got, want)
		}
		if code, info := e.getJSON(t, "/key/info?key="+fresh, "sk-1234"); code != 200 {
			t.Errorf("/key/info: %d %v", code, info)
		} else if in, _ := info["info"].(map[string]any); in == nil || math.Abs(in["spend"].(float64)-want) > 1e-12 {
			t.Errorf("/key/info of the new key: %v", info)
		}
		if u, err := st.GetUser(context.Background(), "u-regen"); err == nil && math.Abs(u.Spend-want) > 1e-12 {
			t.Errorf("the user's spend is %v, want %v", u.Spend, want)
		}
	})
}
