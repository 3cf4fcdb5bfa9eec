// Regression tests for findings of a review (they failed before the fixes):
// per-second holds and charges, credentials in api_base, and emails that
// belong to another user.

package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// Found by review: a stream on a per-second deployment is charged for at
// most `timeout` seconds, although a stream's watchdog bounds only each gap
// (stream_timeout), so it may run far longer.
func TestReview2PerSecondStreamUnderbilled(t *testing.T) {
	const yaml = `model_list:
  - model_name: sm
    litellm_params: {model: openai/llama-endpoint, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0, input_cost_per_second: 1, timeout: 1, stream_timeout: 1}
general_settings:
  master_key: sk-1234
`
	st := sqliteStore(t)
	e := startConfig(t, st, mockupstream.Options{ChunkDelay: 400 * time.Millisecond, Chunks: 8}, yaml)
	key := newKey(t, e, `{"max_budget": 100}`)
	req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(`{"model":"sm","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	began := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(began)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "[DONE]") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	e.srv.writer.Flush()
	k, err := st.GetKey(context.Background(), sha(key))
	if err != nil {
		t.Fatal(err)
	}
	// The mock waits 400 ms before each content chunk, so the gateway's
	// call to it, which a per-second price charges, lasted at least that
	// many times 400 ms however loaded the machine. The client's clock also
	// counts its connection and the gateway's admission: an upper bound.
	chunks := strings.Count(string(body), `"delta":{"content":`)
	least := time.Duration(chunks) * 400 * time.Millisecond
	t.Logf("stream of %d chunks took %v (at least %v upstream); key booked $%v at $1/s", chunks, took, least, k.Spend)
	if least <= time.Second {
		t.Fatalf("%d content chunks: the stream need not outlast the 1 s timeout, so the test proves nothing", chunks)
	}
	// Before the fix it was charged at most timeout, 1 s.
	if k.Spend < least.Seconds()-0.001 || k.Spend > took.Seconds()+0.001 {
		t.Fatalf("a stream of at least %v (%v at the client) at $1/s was booked $%v", least, took, k.Spend)
	}
}

// Found by review: with no timeout set, the hold of a per-second deployment
// is 10 minutes of its price (DefaultTimeout), so a strict key whose budget
// covers thousands of real calls is refused its first.
func TestReview2PerSecondStrictRefused(t *testing.T) {
	const yaml = `model_list:
  - model_name: sm
    litellm_params: {model: openai/llama-endpoint, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0, input_cost_per_second: 0.01}
general_settings:
  master_key: sk-1234
`
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, yaml)
	key := newKey(t, e, `{"max_budget": 5, "metadata": {"budget_enforcement": "strict"}}`)
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"sm","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("a $5 strict key, a call costing ~$0.0001 at $0.01/s: %d %v", resp.StatusCode, out)
	}
}

// Found by review: default mode, same root cause: while one call is in
// flight a second concurrent call of a $5 key is refused (each holds 10
// minutes of per-second price = $6).
func TestReview2PerSecondDefaultSerializes(t *testing.T) {
	const yaml = `model_list:
  - model_name: sm
    litellm_params: {model: openai/llama-endpoint, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0, input_cost_per_second: 0.01}
general_settings:
  master_key: sk-1234
`
	e := startConfig(t, sqliteStore(t), mockupstream.Options{Delay: 500 * time.Millisecond}, yaml)
	key := newKey(t, e, `{"max_budget": 5}`)
	done := make(chan int, 1)
	go func() {
		resp, _ := e.post(t, "/v1/chat/completions", key, `{"model":"sm","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
		done <- resp.StatusCode
	}()
	// wait until the first call holds its reservation
	for i := 0; i < 2000; i++ {
		if e.mock.Stats().Requests > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"sm","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
	first := <-done
	if resp.StatusCode != 200 {
		t.Fatalf("second concurrent call of a $5 key (calls cost ~$0.005): %d %v (first: %d)", resp.StatusCode, out, first)
	}
}

// Found by review: an api_base with credentials in its userinfo (basic auth
// to a self-hosted upstream) reaches every caller in x-litellm-model-api-base
// and in /spend/logs api_base (the query string is cut, the userinfo is not).
func TestReview2APIBaseUserinfoLeaks(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	t.Cleanup(up.Close)
	base := strings.Replace(up.URL, "http://", "http://svc:hunter2@", 1)
	yaml := `model_list:
  - model_name: m
    litellm_params: {model: openai/gpt-4o, api_base: "` + base + `"}
general_settings:
  master_key: sk-1234
`
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, yaml)
	key := newKey(t, e, `{}`)
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, out)
	}
	if h := resp.Header.Get("x-litellm-model-api-base"); strings.Contains(h, "hunter2") {
		t.Errorf("a plain key's answer carries the upstream's password: x-litellm-model-api-base: %s", h)
	}
	if s, info := e.getJSON(t, "/model/info", key); s != 200 || strings.Contains(fmt.Sprint(info), "hunter2") {
		t.Errorf("/model/info as a plain key: %d %v", s, info)
	}
}

// Found by review: /model/info shows a plain key the api_base's query
// string, which the header code itself cuts because it "may carry a secret".
func TestReview2ModelInfoAPIBaseQuery(t *testing.T) {
	const yaml = `model_list:
  - model_name: m
    litellm_params: {model: openai/gpt-4o, api_base: "{{UP}}?api-key=SECRET123"}
general_settings:
  master_key: sk-1234
`
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, yaml)
	key := newKey(t, e, `{"user_id": "u1"}`)
	if s, info := e.getJSON(t, "/model/info", key); s != 200 || strings.Contains(fmt.Sprint(info), "SECRET123") {
		t.Errorf("/model/info as an internal user's key: %d %v", s, info)
	}
}

// Found by review: member_add by an unknown user_id with the user_email of an
// existing user creates a second user with that email (createByID does not
// look the email up); lookups by email then pick either.
func TestReview2MemberAddDuplicatesEmail(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, gpt4(5, ""))
	for _, c := range [][2]string{
		{"/user/new", `{"user_id": "alice", "user_email": "alice@x.io"}`},
		{"/team/new", `{"team_id": "eng"}`},
	} {
		if resp, out := e.post(t, c[0], "sk-1234", c[1]); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", c[0], resp.StatusCode, out)
		}
	}
	if resp, out := e.post(t, "/team/member_add", "sk-1234", `{"team_id": "eng", "member": {"user_id": "not-alice", "user_email": "alice@x.io", "role": "user"}}`); resp.StatusCode != 400 {
		t.Fatalf("member_add naming alice's email for another user_id: %d %v, want 400", resp.StatusCode, out)
	}
	if u, err := e.store.GetUser(context.Background(), "not-alice"); err == nil {
		t.Fatalf("member_add created user not-alice (email %q)", u.UserEmail)
	}
}
