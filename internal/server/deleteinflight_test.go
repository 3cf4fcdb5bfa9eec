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

// TestProbeSpendInFlightAcrossDeleteSparesRemadeKey: a request of a key is
// in flight when the key is deleted and made again with the same secret
// (custom key of /key/generate). The request's cost is the deleted key's:
// it is in the spend log, under the hash, but neither the new key's stored
// spend nor its model spend nor its in-memory account counts it.
func TestProbeSpendInFlightAcrossDeleteSparesRemadeKey(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		h := newHeldUpstream(t)
		e := startConfigWith(t, st, mockupstream.Options{}, strings.ReplaceAll(pricedConfig, "{{UP}}", h.url), Options{})
		const key = "sk-inflight-delete-1"
		gen := `{"key": "` + key + `", "max_budget": 1, "model_max_budget": {"gpt-4": 1}}`
		if resp, out := e.post(t, "/key/generate", "sk-1234", gen); resp.StatusCode != 200 {
			t.Fatalf("generate: %d %v", resp.StatusCode, out)
		}
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
			t.Fatal("the request never reached the upstream")
		}
		if resp, out := e.post(t, "/key/delete", "sk-1234", `{"keys": ["`+key+`"]}`); resp.StatusCode != 200 {
			t.Fatalf("delete: %d %v", resp.StatusCode, out)
		}
		if resp, out := e.post(t, "/key/generate", "sk-1234", gen); resp.StatusCode != 200 {
			t.Fatalf("generate again: %d %v", resp.StatusCode, out)
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
		waitFor(t, "the in-flight request's spend row", func() bool { return len(e.keyRows(t, key)) == 1 })
		rows := e.keyRows(t, key)
		if math.Abs(rows[0].Cost-0.0003) > 1e-12 {
			t.Fatalf("the in-flight request's row costs %v, want 0.0003", rows[0].Cost)
		}
		k, err := st.GetKey(context.Background(), sha(key))
		if err != nil {
			t.Fatal(err)
		}
		if k.Spend != 0 || k.ModelSpend["gpt-4"] != 0 {
			t.Errorf("the key made again has stored spend %v, model spend %v: the deleted key's request in flight was charged to it", k.Spend, k.ModelSpend)
		}
		if a, ok := e.srv.book.Lookup(store.KindKey, sha(key)); ok && a.Spent() != 0 {
			t.Errorf("the key made again has %v spent in the book", a.Spent().Dollars())
		}
		// The key made again is charged for its own request: the creation
		// its requests carry is its created_at, to the microsecond.
		if resp, out := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
			t.Fatalf("the key made again: %d %v", resp.StatusCode, out)
		}
		waitFor(t, "the key made again's spend row", func() bool { return len(e.keyRows(t, key)) == 2 })
		if k, err = st.GetKey(context.Background(), sha(key)); err != nil {
			t.Fatal(err)
		}
		if math.Abs(k.Spend-0.0003) > 1e-12 || math.Abs(k.ModelSpend["gpt-4"]-0.0003) > 1e-12 {
			t.Errorf("the key made again has stored spend %v, model spend %v after its own request; want 0.0003 on each", k.Spend, k.ModelSpend)
		}
	})
}
