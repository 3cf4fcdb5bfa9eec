package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/usage"
)

// chatStream posts a streamed chat request and gathers what came back:
// the text, the tool calls' arguments, the finish reason, whether a usage
// chunk and [DONE] came.
func chatStream(t *testing.T, e *spendEnv, key, body string) (status int, text, args, finish string, sawUsage, done bool) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tb, ab strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content   string `json:"content"`
					ToolCalls []struct {
						Function struct{ Arguments string } `json:"function"`
					} `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		for _, ch := range c.Choices {
			tb.WriteString(ch.Delta.Content)
			for _, tc := range ch.Delta.ToolCalls {
				ab.WriteString(tc.Function.Arguments)
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
		if c.Usage != nil && c.Usage.CompletionTokens > 0 {
			sawUsage = true
		}
	}
	return resp.StatusCode, tb.String(), ab.String(), finish, sawUsage, done
}

// TestCohereDeploymentsServeChatEmbeddingsAndMessages: cohere/ deployments
// answer OpenAI chat (plain, streamed, with tools and a JSON schema),
// Anthropic Messages and OpenAI embeddings clients through Cohere's v2 chat
// and embed (the mock checks the Bearer key); every answer is booked from
// billed_units at the table's price for the Cohere model; Cohere's errors
// come back in OpenAI's shape, and a 429 falls back to the next deployment.
func TestCohereDeploymentsServeChatEmbeddingsAndMessages(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	fake := &geminiFake{answer: func(*http.Request, string) (int, string) {
		return 429, `{"message":"You are using a Trial key, which is limited to 10 API calls / minute."}`
	}}
	fakeSrv := httptest.NewServer(fake)
	defer fakeSrv.Close()
	yaml := fmt.Sprintf(`
model_list:
  - model_name: command
    litellm_params: {model: cohere/command-r, api_key: co-key, api_base: "%s"}
  - model_name: command-plus
    litellm_params: {model: cohere_chat/command-r-plus, api_key: co-key, api_base: "%s"}
  - model_name: embed
    litellm_params: {model: cohere/embed-english-v3.0, api_key: co-key, api_base: "%s"}
  - model_name: flaky
    litellm_params: {model: cohere/command-r, api_key: co-key-2, api_base: "%s"}
  - model_name: limited
    litellm_params: {model: cohere/command-r, api_key: co-key-2, api_base: "%s"}
router_settings:
  num_retries: 0
litellm_settings:
  fallbacks: [{flaky: [command]}]
general_settings:
  master_key: sk-1234
`, up.URL, up.URL, up.URL, fakeSrv.URL, fakeSrv.URL)
	cfg, err := config.Parse("c.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{"max_budget": 1}`)

	// Plain chat, with a JSON schema.
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"command","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"one two three"}],
		"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object"}}}}`)
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %v", resp.StatusCode, out)
	}
	choice := out["choices"].([]any)[0].(map[string]any)
	if msg := choice["message"].(map[string]any); !strings.HasSuffix(fmt.Sprint(msg["content"]), "one two three") || choice["finish_reason"] != "stop" || out["model"] != "command-r" {
		t.Fatalf("chat answer %v", out)
	}
	got := mock.LastRequest()
	if got.Path != "/v2/chat" || got.Header.Get("Authorization") != "Bearer co-key" || !strings.Contains(string(got.Body), `"model":"command-r"`) ||
		!strings.Contains(string(got.Body), `"response_format":{"type":"json_object","json_schema":{"type":"object"}}`) {
		t.Fatalf("cohere got %s %v %s", got.Path, got.Header, got.Body)
	}

	// Streamed chat, with the usage chunk asked for.
	status, text, _, finish, sawUsage, done := chatStream(t, e, key, `{"model":"command","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"alpha beta gamma delta"}]}`)
	if status != 200 || !done || !sawUsage || !strings.HasSuffix(text, "alpha beta gamma delta") || finish != "stop" {
		t.Fatalf("stream: %d done=%v usage=%v text=%q finish=%q", status, done, sawUsage, text, finish)
	}

	// Tools, whole and streamed: the mock calls the first tool.
	tools := `"tools":[{"type":"function","function":{"name":"search","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}]`
	resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"command-plus","messages":[{"role":"user","content":"find cats"}],`+tools+`}`)
	if resp.StatusCode != 200 {
		t.Fatalf("tools: %d %v", resp.StatusCode, out)
	}
	choice = out["choices"].([]any)[0].(map[string]any)
	call := choice["message"].(map[string]any)["tool_calls"].([]any)[0].(map[string]any)
	if fn := call["function"].(map[string]any); fn["name"] != "search" || fn["arguments"] != `{"q":"find cats"}` || choice["finish_reason"] != "tool_calls" {
		t.Fatalf("tool answer %v", out)
	}
	status, _, args, finish, _, done := chatStream(t, e, key, `{"model":"command-plus","stream":true,"messages":[{"role":"user","content":"find dogs"}],`+tools+`}`)
	if status != 200 || !done || args != `{"q":"find dogs"}` || finish != "tool_calls" {
		t.Fatalf("streamed tool call: %d args=%q finish=%q", status, args, finish)
	}

	// An Anthropic client.
	resp, out = e.post(t, "/v1/messages", key, `{"model":"command","max_tokens":20,"messages":[{"role":"user","content":"red green blue"}]}`)
	if resp.StatusCode != 200 || out["type"] != "message" || !strings.Contains(fmt.Sprint(out["content"]), "red green blue") {
		t.Fatalf("messages: %d %v", resp.StatusCode, out)
	}

	req, _ := http.NewRequest("POST", e.url+"/v1/messages", strings.NewReader(`{"model":"command","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"a streamed message"}]}`))
	req.Header.Set("x-api-key", key)
	sresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(sresp.Body)
	sresp.Body.Close()
	if sresp.StatusCode != 200 || !strings.Contains(string(raw), "event: message_stop") || !strings.Contains(string(raw), "streamed") || !strings.Contains(string(raw), `"output_tokens"`) {
		t.Fatalf("messages stream: %d %s", sresp.StatusCode, raw)
	}

	// Embeddings.
	resp, out = e.post(t, "/v1/embeddings", key, `{"model":"embed","input":["hello world","again"]}`)
	if resp.StatusCode != 200 || len(out["data"].([]any)) != 2 || out["object"] != "list" {
		t.Fatalf("embeddings: %d %v", resp.StatusCode, out)
	}
	if got = mock.LastRequest(); got.Path != "/v2/embed" || !strings.Contains(string(got.Body), `"input_type":"search_document"`) {
		t.Fatalf("embed got %s %s", got.Path, got.Body)
	}

	// A 429 from Cohere: the fallback answers. Without one, it comes back
	// in OpenAI's shape.
	if resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"flaky","messages":[{"role":"user","content":"fallback please"}]}`); resp.StatusCode != 200 {
		t.Fatalf("fallback: %d %v", resp.StatusCode, out)
	}
	if up, _ := fake.last(t); up.URL.Path != "/v2/chat" || up.Header.Get("Authorization") != "Bearer co-key-2" {
		t.Fatalf("flaky got %s %v", up.URL, up.Header)
	}
	resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"limited","messages":[{"role":"user","content":"no fallback"}]}`)
	if e2, _ := out["error"].(map[string]any); resp.StatusCode != 429 || e2["type"] != "rate_limit_error" || !strings.Contains(fmt.Sprint(e2["message"]), "Trial key") {
		t.Fatalf("error: %d %v", resp.StatusCode, out)
	}

	// Every answer is booked from billed_units at the Cohere price.
	// The upstream's refusal has a failure row without cost.
	rows := answeredRows(t, spendRows(t, e, key), 1)
	if len(rows) != 8 {
		t.Fatalf("%d answered spend rows, want 8", len(rows))
	}
	for _, r := range rows {
		model := map[string]string{"command": "command-r", "command-plus": "command-r-plus", "embed": "embed-english-v3.0", "flaky": "command-r", "limited": "command-r"}[r.ModelGroup]
		want := tableCost(t, "cohere", model, usage.Usage{Prompt: r.PromptTokens, Completion: r.CompletionTokens})
		if r.PromptTokens <= 0 || (r.CompletionTokens <= 0 && model != "embed-english-v3.0") || r.UsageEstimated || !near(r.Cost, want) || r.Cost <= 0 {
			t.Fatalf("booked %+v, want %v", r, want)
		}
	}
}
