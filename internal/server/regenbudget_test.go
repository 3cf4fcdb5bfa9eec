package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// heldUpstream is the mock upstream behind a gate: a chat request whose
// body says HOLD waits until release (or until the gateway drops it), then
// is answered by the mock, or with a 500 when fail is set.
type heldUpstream struct {
	url     string
	arrived chan struct{}
	release chan struct{}
	once    sync.Once
	fail    atomic.Bool
}

func newHeldUpstream(t *testing.T) *heldUpstream {
	h := &heldUpstream{arrived: make(chan struct{}, 8), release: make(chan struct{})}
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if bytes.Contains(body, []byte("HOLD")) {
			h.arrived <- struct{}{}
			select {
			case <-h.release:
			case <-r.Context().Done():
				return
			}
			if h.fail.Load() {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusInternalServerError)
				io.WriteString(w, `{"error":{"message":"upstream broke","type":"server_error"}}`)
				return
			}
		}
		mock.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)
	t.Cleanup(h.free) // registered after Close: runs first, so no request hangs
	h.url = up.URL
	return h
}

func (h *heldUpstream) free() { h.once.Do(func() { close(h.release) }) }

const chatHeld = `{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"HOLD one two"}]}`

// regenHeld runs one case of the regenerate tests on a rig of n replicas
// (the config's extra lines in extra): a key whose budget covers three
// requests spends one, holds a second on the old key on the last replica,
// is regenerated on the first, and the new key gets one more request (the
// third) and is then refused on every replica while the held one is in
// flight, then after it ends as end says: "success" (it is charged: the
// budget stays used up), "upstream error" or "client gone" (its hold is
// dropped: exactly one more request fits). The new key's spend is the
// three requests', once each.
func regenHeld(t *testing.T, spec rigSpec, n int, extra, end string) {
	up := newHeldUpstream(t)
	spec.up = up.url
	r := newRig(t, spec)
	for range n {
		r.start(t, pricedConfig+extra, Options{})
	}
	first, last := r.urls[0], r.urls[n-1]
	const raw = "sk-regen-held"
	r.key(t, raw, `"max_budget": 0.0009`) // three requests of 3e-4
	if code, body := send(t, first+"/v1/chat/completions", raw, chat3); code != 200 {
		t.Fatalf("first request: %d %s", code, body)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", last+"/v1/chat/completions", strings.NewReader(chatHeld))
		req.Header.Set("Authorization", "Bearer "+raw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	select {
	case <-up.arrived:
	case <-time.After(time.Minute):
		t.Fatal("the held request never reached the upstream")
	}

	code, out := sendJSON(t, first+"/key/regenerate", "sk-1234", `{"key": "`+raw+`"}`)
	fresh, _ := out["key"].(string)
	if code != 200 || fresh == "" {
		t.Fatalf("regenerate: %d %v", code, out)
	}
	for _, u := range r.urls { // every replica knows the new key
		if _, ok := within(time.Minute, func() bool {
			c, _ := send(t, u+"/v1/chat/completions", fresh, `{"model":"nope"}`)
			return c == 404
		}); !ok {
			t.Fatal("a replica does not know the regenerated key")
		}
	}
	// Spent 3e-4, 3e-4 held under the old hash: one more request fits.
	if code, body := send(t, last+"/v1/chat/completions", fresh, chat3); code != 200 {
		t.Fatalf("the new key's first request: %d %s", code, body)
	}
	refused := func(when string) {
		t.Helper()
		for i, u := range r.urls {
			if code, body := send(t, u+"/v1/chat/completions", fresh, chat3); code != 400 || !strings.Contains(body, "budget_exceeded") {
				t.Fatalf("%s: replica %d admitted the new key past its budget (the request held under the old hash not counted): %d %s", when, i, code, body)
			}
		}
	}
	refused("with the old key's request in flight")

	switch end {
	case "success":
		up.free()
	case "upstream error":
		up.fail.Store(true)
		up.free()
	case "client gone":
		cancel()
	}
	select {
	case code := <-done:
		if end == "success" && code != 200 {
			t.Fatalf("the held request answered %d", code)
		}
		if end == "upstream error" && code == 200 {
			t.Fatal("the held request succeeded despite the upstream error")
		}
	case <-time.After(time.Minute):
		t.Fatal("the held request never ended")
	}

	want := 0.0009
	if end == "success" {
		refused("after the old key's request settled")
	} else {
		// Its hold is dropped (perhaps a moment after its client heard):
		// one more request fits, then none.
		if _, ok := within(time.Minute, func() bool {
			c, _ := send(t, first+"/v1/chat/completions", fresh, chat3)
			return c == 200
		}); !ok {
			t.Fatal("the held request's hold was never dropped")
		}
		refused("after the old key's request was dropped and one more spent")
	}
	// Every request charged once, on the new key's record.
	var got float64
	if _, ok := within(time.Minute, func() bool {
		r.flush()
		k, err := r.st.GetKey(context.Background(), sha(fresh))
		if err != nil {
			return false
		}
		got = k.Spend
		return math.Abs(got-want) < 1e-12
	}); !ok {
		t.Fatalf("the new key's stored spend is %v, want %v", got, want)
	}
	for i, s := range r.srvs { // and in each replica's view, which has no more
		if a, ok := s.book.Lookup(store.KindKey, sha(raw)); ok && a.Spent() > 900000 {
			t.Errorf("replica %d's budget view of the key has %v spent, more than the three requests", i, a.Spent())
		}
	}
}

// sendJSON posts body and decodes the answer.
func sendJSON(t *testing.T, url, key, body string) (int, map[string]any) {
	t.Helper()
	code, text := send(t, url, key, body)
	var out map[string]any
	_ = json.Unmarshal([]byte(text), &out)
	return code, out
}

var regenEnds = []string{"success", "upstream error", "client gone"}

// TestRegenerateCountsHeldSpend: a request held under a key's old hash
// when the key is regenerated counts against the new key's budget, in
// process, on SQLite and on PostgreSQL (one replica).
func TestRegenerateCountsHeldSpend(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		for _, end := range regenEnds {
			t.Run(db+"/"+end, func(t *testing.T) {
				regenHeld(t, rigSpec{name: "regen", postgres: db == "postgres"}, 1, "", end)
			})
		}
	}
}

// TestRegenerateCountsHeldSpendAcrossReplicas: the same on two replicas
// sharing PostgreSQL and Redis, the request held on one and the key
// regenerated on the other, in default mode (allotments on) and strict.
func TestRegenerateCountsHeldSpendAcrossReplicas(t *testing.T) {
	for _, mode := range []string{"default", "strict"} {
		for _, end := range regenEnds {
			t.Run(mode+"/"+end, func(t *testing.T) {
				regenHeld(t, rigSpec{name: "regenr", postgres: true, redis: true}, 2,
					"  redis_url: {{REDIS}}\nlitellm_settings:\n  budget_enforcement: "+mode+"\n", end)
			})
		}
	}
}

// TestRegenerateSpendEditReachesTheBudget: /key/update's spend on a
// regenerated key sets the budget its requests are checked against (the
// account of the key's first hash), not an account nothing reads.
func TestRegenerateSpendEditReachesTheBudget(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, "")
	_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 0.0009}`)
	key, _ := out["key"].(string)
	if resp, out := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
		t.Fatalf("first request: %d %v", resp.StatusCode, out)
	}
	_, out = e.post(t, "/key/regenerate", "sk-1234", `{"key": "`+key+`"}`)
	fresh, _ := out["key"].(string)
	if fresh == "" {
		t.Fatalf("regenerate: %v", out)
	}
	if resp, out := e.post(t, "/key/update", "sk-1234", `{"key": "`+fresh+`", "spend": 0.0009}`); resp.StatusCode != 200 {
		t.Fatalf("update: %d %v", resp.StatusCode, out)
	}
	if resp, out := e.post(t, "/v1/chat/completions", fresh, chat3); resp.StatusCode == 200 {
		t.Fatalf("a key whose spend was set to its budget was admitted: %v", out)
	}
	if resp, out := e.post(t, "/key/update", "sk-1234", `{"key": "`+fresh+`", "spend": 0}`); resp.StatusCode != 200 {
		t.Fatalf("update: %d %v", resp.StatusCode, out)
	}
	if resp, out := e.post(t, "/v1/chat/completions", fresh, chat3); resp.StatusCode != 200 {
		t.Fatalf("a key whose spend was set to 0 was refused: %d %v", resp.StatusCode, out)
	}
}
