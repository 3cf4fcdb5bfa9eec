package server

// Review probes (rev4) of the Gemini, Vertex AI and Cohere deployments
// (issue #24): each fails while the defect it names is present.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestProbeVertexPassPathNamingTwoProjects: vertexPath keeps the LAST
// projects/{p} segment, while Vertex AI routes on the first: a path that
// names project p2 first and p1 later is sent, under p2, with the token of
// p1's use_in_pass_through deployment. Expected: the credentials chosen are
// those of the project the upstream URL names first (or the call refused).
func TestProbeVertexPassPathNamingTwoProjects(t *testing.T) {
	f := newNativeFake(t)
	tokens, _ := googleTokenServer(t)
	deploymentKey, _ := json.Marshal(serviceAccount(t, "deploy@p1.iam.gserviceaccount.com", tokens.URL))
	defaultKey, _ := json.Marshal(serviceAccount(t, "default@p2.iam.gserviceaccount.com", tokens.URL))
	yaml := fmt.Sprintf(`
model_list:
  - model_name: gemini-vertex
    litellm_params:
      model: vertex_ai/gemini-2.0-flash
      vertex_project: p1
      vertex_location: us-central1
      vertex_credentials: %s
      api_base: %s/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash
      use_in_pass_through: true
default_vertex_config:
  vertex_project: p2
  vertex_location: us-central1
  vertex_credentials: %s
  api_base: %s
general_settings:
  master_key: sk-1234
`, deploymentKey, f.url, defaultKey, f.url)
	cfg, err := config.Parse("v.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{}`)
	gem := `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`
	path := "/vertex_ai/v1/projects/p2/locations/us-central1/publishers/google/models/x/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"
	resp, body := passSend(t, "POST", e.url+path, gem, "Authorization", "Bearer "+key)
	t.Logf("status %d %s, %d upstream requests", resp.StatusCode, body, len(f.requests()))
	if len(f.requests()) == 0 {
		return // refused before Vertex AI: fine
	}
	got := f.last(t)
	t.Logf("upstream %s auth %q", got.Path, got.Header.Get("Authorization"))
	if strings.HasPrefix(got.Path, "/v1/projects/p2/") && got.Header.Get("Authorization") == "Bearer ya29.deploy" {
		t.Fatalf("a path naming project p2 first reached Vertex AI with p1's deployment token (status %d %s): upstream %s", resp.StatusCode, body, got.Path)
	}
}

// TestProbeGeminiStreamClientGoneBeforeUsage: a Gemini stream whose
// usageMetadata comes only in its last event (as Vertex AI sends it), left
// by the client after the first words, must still be booked: an estimated
// row with a prompt, some output and a cost.
func TestProbeGeminiStreamClientGoneBeforeUsage(t *testing.T) {
	released := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range []string{"alpha ", "beta ", "gamma "} {
			fmt.Fprintf(w, "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":%q}]},\"index\":0}],\"modelVersion\":\"gemini-2.0-flash\",\"responseId\":\"r1\"}\n\n", word)
		}
		w.(http.Flusher).Flush()
		select { // the gateway lets go once its client has
		case <-r.Context().Done():
		case <-released:
		case <-time.After(60 * time.Second):
		}
		fmt.Fprint(w, "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"delta\"}]},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":4,\"totalTokenCount\":13},\"modelVersion\":\"gemini-2.0-flash\",\"responseId\":\"r1\"}\n\n")
	}))
	defer up.Close()
	defer close(released)
	cfg, err := config.Parse("g.yaml", []byte(fmt.Sprintf(`
model_list:
  - model_name: gemini
    litellm_params: {model: gemini/gemini-2.0-flash, api_key: g-key, api_base: "%s/v1beta"}
general_settings:
  master_key: sk-1234
`, up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{"max_budget": 1}`)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions", strings.NewReader(`{"model":"gemini","stream":true,"messages":[{"role":"user","content":"count to four please"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "alpha") {
			break
		}
	}
	cancel()
	resp.Body.Close()
	var rows []any
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		e.srv.writer.Flush()
		if rs := spendRows(t, e, key); len(rs) > 0 {
			r := rs[0]
			t.Logf("booked %+v", r)
			if r.PromptTokens <= 0 || r.CompletionTokens <= 0 || r.Cost <= 0 {
				t.Fatalf("a stream left before its usage was booked as prompt %d, completion %d, cost %v", r.PromptTokens, r.CompletionTokens, r.Cost)
			}
			return
		}
	}
	t.Fatalf("no spend row for a stream the client left (%d rows)", len(rows))
}

// geminiProbeEnv serves one gemini deployment backed by fake.
func geminiProbeEnv(t *testing.T, fake *geminiFake) (*spendEnv, string) {
	t.Helper()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cfg, err := config.Parse("g.yaml", []byte(fmt.Sprintf(`
model_list:
  - model_name: gemini
    litellm_params: {model: gemini/gemini-2.0-flash, api_key: g-key, api_base: "%s/v1beta"}
general_settings:
  master_key: sk-1234
`, srv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	return e, newKey(t, e, `{"max_budget": 1}`)
}

const geminiOKForProbe = `{"candidates":[{"content":{"role":"model","parts":[{"text":"ok"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":1},"modelVersion":"gemini-2.0-flash","responseId":"r"}`

// TestProbeGeminiBadToolMessageStaysHome: a tool message answering no
// known call and naming no function has no name Gemini can take
// (functionResponse.name is required): it must be refused with a 400 in
// OpenAI's shape, not sent upstream with "name":"".
func TestProbeGeminiBadToolMessageStaysHome(t *testing.T) {
	fake := &geminiFake{answer: func(*http.Request, string) (int, string) { return 200, geminiOKForProbe }}
	e, key := geminiProbeEnv(t, fake)
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"gemini","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"nope","content":"42"}]}`)
	fake.mu.Lock()
	n := len(fake.bodies)
	var sent string
	if n > 0 {
		sent = fake.bodies[n-1]
	}
	fake.mu.Unlock()
	if n > 0 {
		t.Fatalf("a tool message without a function name reached Gemini (%d %v): %s", resp.StatusCode, out, sent)
	}
}

// TestProbeGeminiEmptyContentStaysHome: a message whose content is ""
// becomes an empty part ({}), which Gemini refuses ("required oneof field
// 'data' must have one initialized field"): either leave it out or refuse
// it here, never send an empty part.
func TestProbeGeminiEmptyContentStaysHome(t *testing.T) {
	fake := &geminiFake{answer: func(*http.Request, string) (int, string) { return 200, geminiOKForProbe }}
	e, key := geminiProbeEnv(t, fake)
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"gemini","messages":[{"role":"system","content":""},{"role":"user","content":"hi"},{"role":"assistant","content":""},{"role":"user","content":"again"}]}`)
	fake.mu.Lock()
	defer fake.mu.Unlock()
	for _, b := range fake.bodies {
		if strings.Contains(b, `{}`) {
			t.Fatalf("an empty part reached Gemini (%d %v): %s", resp.StatusCode, out, b)
		}
	}
}

// TestProbeDefaultModeCapsGemini: in default budget mode, a chat request
// arriving while another request of the budget is uncovered is capped
// (X-Tollgate-Output-Capped, max_tokens lowered upstream) - capOutput
// knows generationConfig.maxOutputTokens and Cohere's max_tokens - but
// meter.go's canCap names only OpenAI's and Anthropic's ops, so a chat
// request to a Gemini deployment is refused where one to an OpenAI
// deployment is answered. The openai case is the control.
func TestProbeDefaultModeCapsGemini(t *testing.T) {
	for _, tc := range []struct{ name, model string }{
		{"openai", "openai/gpt-4"},
		{"gemini", "gemini/gemini-2.0-flash"},
		{"cohere", "cohere/command-r"},
	} {
		t.Run(tc.name, func(t *testing.T) { probeDefaultModeCap(t, tc.model) })
	}
}

func probeDefaultModeCap(t *testing.T, model string) {
	base := `"{{UP}}"`
	if strings.HasPrefix(model, "gemini/") {
		base = `"{{UP}}/v1beta"`
	}
	yaml := `model_list:
  - model_name: m
    litellm_params: {model: ` + model + `, api_key: k, api_base: ` + base + `, input_cost_per_token: 0.00003, output_cost_per_token: 0.00006, headers: {x-mock-completion-tokens: "400", x-mock-chunks: "40", x-mock-chunk-delay-ms: "50"}}
general_settings:
  master_key: sk-1234
`
	e := startConfigWith(t, sqliteStore(t), mockupstream.Options{}, yaml, Options{})
	free := newKey(t, e, `{}`)
	short := `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`
	for range 32 { // the deployment learns one-token answers
		if resp, out := e.post(t, "/v1/chat/completions", free, short); resp.StatusCode != 200 {
			t.Fatalf("teaching: %d %v", resp.StatusCode, out)
		}
	}
	key := newKey(t, e, `{"max_budget": 0.01}`)
	before := e.mock.Stats().Requests
	done := make(chan struct{})
	go func() { // the uncovered one: a stream, no max_tokens, 400 tokens
		defer close(done)
		req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}()
	for deadline := time.Now().Add(30 * time.Second); e.mock.Stats().Requests == before; {
		if time.Now().After(deadline) {
			t.Fatal("the stream never reached the upstream")
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"m","messages":[{"role":"user","content":"hello there"}]}`)
	<-done
	t.Logf("second request: %d capped %q %v", resp.StatusCode, resp.Header.Get("x-tollgate-output-capped"), out)
	if resp.StatusCode != 200 || resp.Header.Get("x-tollgate-output-capped") == "" {
		t.Fatalf("a chat request in default mode beside an uncovered one was not capped: %d %v", resp.StatusCode, out)
	}
}

// TestProbeVertexCredentialsStayHidden: vertex_credentials that is neither
// JSON nor a file path (a key pasted base64-encoded, or JSON wrapped in
// quotes) is read as a path, and os.ReadFile's error quotes it whole; the
// disabled deployment's reason is then shown to any caller of its model
// group. The key must never appear in an answer.
func TestProbeVertexCredentialsStayHidden(t *testing.T) {
	const secret = "eyJ0eXBlIjoic2VydmljZV9hY2NvdW50IiwicHJpdmF0ZV9rZXkiOiJTRUNSRVQtS0VZLU1BVEVSSUFMIn0"
	cfg, err := config.Parse("v.yaml", []byte(`
model_list:
  - model_name: vx
    litellm_params:
      model: vertex_ai/gemini-2.0-flash
      vertex_project: proj-1
      vertex_credentials: "`+secret+`"
general_settings:
  master_key: sk-1234
`))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{}`)
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"vx","messages":[{"role":"user","content":"x"}]}`)
	if strings.Contains(fmt.Sprint(out), secret) {
		t.Fatalf("an ordinary key was shown the deployment's vertex_credentials: %d %v", resp.StatusCode, out)
	}
}

// TestProbeGeminiAnswerWithoutUsageIsBooked: a generateContent answer that
// carries no usageMetadata (a proxy in between, an older Vertex endpoint)
// still used the upstream: it must be booked at an estimate, not at $0.
func TestProbeGeminiAnswerWithoutUsageIsBooked(t *testing.T) {
	fake := &geminiFake{answer: func(*http.Request, string) (int, string) {
		return 200, `{"candidates":[{"content":{"role":"model","parts":[{"text":"a fairly long answer of several words"}]},"finishReason":"STOP","index":0}],"modelVersion":"gemini-2.0-flash","responseId":"r"}`
	}}
	e, key := geminiProbeEnv(t, fake)
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"gemini","messages":[{"role":"user","content":"please write a fairly long answer"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, out)
	}
	rows := spendRows(t, e, key)
	if len(rows) != 1 {
		t.Fatalf("%d rows", len(rows))
	}
	if r := rows[0]; r.Cost <= 0 || r.PromptTokens <= 0 {
		t.Fatalf("an answer without usageMetadata was booked %+v", r)
	}
}

// TestProbeGeminiPassKeyParamEncoded: /gemini/* authenticates a client by
// ?key=, which url.Query decodes ("k%65y" is "key"), but withoutKeyParam
// strips only the raw name "key": a client's virtual key sent as k%65y=
// authenticates and is then forwarded to Google in the query string.
func TestProbeGeminiPassKeyParamEncoded(t *testing.T) {
	f := newNativeFake(t)
	e := startPass(t, f)
	key := newKey(t, e, `{}`)
	gem := `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`
	resp, body := passSend(t, "POST", e.url+"/gemini/v1beta/models/gemini-2.0-flash:generateContent?k%65y="+key, gem)
	if len(f.requests()) == 0 {
		return // refused: fine
	}
	if got := f.last(t); strings.Contains(got.Query, key) || strings.Contains(fmt.Sprint(got.Header), key) {
		t.Fatalf("the client's virtual key reached Google (%d %s): query %q", resp.StatusCode, body, got.Query)
	}
}

// TestProbeGeminiBadInputStaysHome: requests Gemini cannot take get a 400
// in OpenAI's shape from the gateway and never reach the upstream.
func TestProbeGeminiBadInputStaysHome(t *testing.T) {
	fake := &geminiFake{answer: func(*http.Request, string) (int, string) { return 200, geminiOKForProbe }}
	e, key := geminiProbeEnv(t, fake)
	for name, body := range map[string]string{
		"n=0":                         `{"model":"gemini","n":0,"messages":[{"role":"user","content":"hi"}]}`,
		"max_tokens<0":                `{"model":"gemini","max_tokens":-5,"messages":[{"role":"user","content":"hi"}]}`,
		"tool without name":           `{"model":"gemini","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":""}}]}`,
		"only system":                 `{"model":"gemini","messages":[{"role":"system","content":"be nice"}]}`,
		"image bad data":              `{"model":"gemini","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:"}}]}]}`,
		"assistant call without name": `{"model":"gemini","messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"x"}]}`,
	} {
		fake.mu.Lock()
		before := len(fake.bodies)
		fake.mu.Unlock()
		resp, out := e.post(t, "/v1/chat/completions", key, body)
		fake.mu.Lock()
		var sent string
		if len(fake.bodies) > before {
			sent = fake.bodies[len(fake.bodies)-1]
		}
		fake.mu.Unlock()
		errObj, _ := out["error"].(map[string]any)
		if sent != "" || resp.StatusCode != 400 || errObj == nil {
			t.Errorf("%s: %d %v; upstream got %s", name, resp.StatusCode, out, sent)
		}
	}
}

// TestProbeVertexKeyFileRotation: vertex_credentials naming a key file is
// cached by its path for the life of the process (googleSources), so a
// gateway configured again after the file's key was replaced (a rotation,
// a reload, another deployment pointing at the same path later) keeps
// signing with the old account.
func TestProbeVertexKeyFileRotation(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	tokens, _ := googleTokenServer(t)
	file := t.TempDir() + "/key.json"
	serve := func(email string) string {
		if err := os.WriteFile(file, []byte(serviceAccount(t, email, tokens.URL)), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse("v.yaml", []byte(fmt.Sprintf(`
model_list:
  - model_name: vx
    litellm_params: {model: vertex_ai/gemini-2.0-flash, vertex_project: proj-1, vertex_credentials: %s, api_base: %s}
general_settings:
  master_key: sk-1234
`, file, up.URL)))
		if err != nil {
			t.Fatal(err)
		}
		e := serveEnv(t, cfg, sqliteStore(t))
		key := newKey(t, e, `{}`)
		if resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"vx","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 200 {
			t.Fatalf("%d %v", resp.StatusCode, out)
		}
		return mock.LastRequest().Header.Get("Authorization")
	}
	if got := serve("old@proj.iam.gserviceaccount.com"); got != "Bearer ya29.old" {
		t.Fatalf("first key: %q", got)
	}
	if got := serve("new@proj.iam.gserviceaccount.com"); got != "Bearer ya29.new" {
		t.Fatalf("after the key file was replaced and the gateway configured again, Vertex AI got %q (want the new account's token)", got)
	}
}
