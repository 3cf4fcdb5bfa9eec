package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store"
)

const anthropicYAML = `
model_list:
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-sonnet, api_base: "{{up}}", api_key: sk-ant-upstream, input_cost_per_token: 0.000001, output_cost_per_token: 0.00001}
    model_info: {id: claude-dep}
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: "{{up}}", api_key: sk-openai-upstream, input_cost_per_token: 0.000001, output_cost_per_token: 0.00001}
    model_info: {id: gpt-dep}
general_settings:
  master_key: sk-1234
`

func anthropicGateway(t *testing.T) (string, *spendEnv) {
	t.Helper()
	urls, mocks := upstreams(t, "up")
	cfg, err := config.Parse("a.yaml", []byte(strings.ReplaceAll(anthropicYAML, "{{up}}", urls["up"])))
	if err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	url, srv := serveSrv(t, cfg, Options{Store: st})
	return url, &spendEnv{url: url, mock: mocks["up"], store: st, srv: srv}
}

func postAs(t testing.TB, url, path, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+path, strings.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestOpenAIClientToAnthropicDeployment: chat completions reach a Claude
// deployment as Messages API calls and come back in OpenAI's shape.
func TestOpenAIClientToAnthropicDeployment(t *testing.T) {
	url, e := anthropicGateway(t)
	resp, body := postAs(t, url, "/v1/chat/completions",
		`{"model":"claude","max_tokens":20,"messages":[{"role":"system","content":"Be kind."},{"role":"user","content":"hello there"}]}`,
		"Authorization", "Bearer sk-1234")
	var c struct {
		Object  string
		Choices []struct {
			Message      struct{ Role, Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
		}
	}
	if err := json.Unmarshal([]byte(body), &c); err != nil || resp.StatusCode != 200 || c.Object != "chat.completion" ||
		c.Choices[0].Message.Content != "Hello! You said: hello there" || c.Choices[0].FinishReason != "stop" || c.Usage.CompletionTokens != 5 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	last := e.mock.LastRequest()
	if last.Path != "/v1/messages" || last.Header.Get("x-api-key") != "sk-ant-upstream" || last.Header.Get("anthropic-version") == "" ||
		!strings.Contains(string(last.Body), `"system":"Be kind."`) || !strings.Contains(string(last.Body), `"model":"claude-3-5-sonnet"`) {
		t.Fatalf("upstream got %s %v %s", last.Path, last.Header, last.Body)
	}
	if resp.Header.Get("x-tollgate-response-cost") == "" {
		t.Error("no cost header")
	}

	// Streaming, with the usage chunk asked for.
	resp, body = postAs(t, url, "/v1/chat/completions",
		`{"model":"claude","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"one two three"}]}`,
		"Authorization", "Bearer sk-1234")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %v", resp.StatusCode, resp.Header)
	}
	var text strings.Builder
	var usage int64
	done := false
	for _, ev := range strings.Split(strings.TrimSpace(body), "\n\n") {
		data := strings.TrimPrefix(ev, "data: ")
		if data == "[DONE]" {
			done = true
			continue
		}
		var ch struct {
			Choices []struct{ Delta struct{ Content string } }
			Usage   *struct {
				CompletionTokens int64 `json:"completion_tokens"`
			}
		}
		if err := json.Unmarshal([]byte(data), &ch); err != nil {
			t.Fatalf("not an OpenAI chunk: %q", ev)
		}
		for _, c := range ch.Choices {
			text.WriteString(c.Delta.Content)
		}
		if ch.Usage != nil {
			usage = ch.Usage.CompletionTokens
		}
	}
	if text.String() != "Hello! You said: one two three" || usage != 6 || !done {
		t.Fatalf("stream text %q usage %d done %v:\n%s", text.String(), usage, done, body)
	}
}

// TestAnthropicClientToBothDeployments: /v1/messages reaches a Claude
// deployment as is and an OpenAI one through translation, streaming or not,
// and both are booked.
func TestAnthropicClientToBothDeployments(t *testing.T) {
	url, e := anthropicGateway(t)
	_, kb := postAs(t, url, "/key/generate", `{}`, "Authorization", "Bearer sk-1234")
	var key struct{ Key string }
	json.Unmarshal([]byte(kb), &key)
	for _, model := range []string{"claude", "gpt-4"} {
		resp, body := postAs(t, url, "/v1/messages",
			`{"model":"`+model+`","max_tokens":50,"system":"Be kind.","metadata":{"user_id":"cust-9"},"messages":[{"role":"user","content":"hello there"}]}`,
			"x-api-key", key.Key, "anthropic-version", "2023-06-01")
		var m struct {
			Type       string
			Role       string
			Content    []struct{ Type, Text string }
			StopReason string `json:"stop_reason"`
			Usage      struct {
				InputTokens  int64 `json:"input_tokens"`
				OutputTokens int64 `json:"output_tokens"`
			}
		}
		if err := json.Unmarshal([]byte(body), &m); err != nil || resp.StatusCode != 200 || m.Type != "message" || m.Role != "assistant" ||
			len(m.Content) != 1 || m.Content[0].Text != "Hello! You said: hello there" || m.StopReason != "end_turn" || m.Usage.OutputTokens != 5 {
			t.Fatalf("%s: %d %s", model, resp.StatusCode, body)
		}
		wantPath := map[string]string{"claude": "/v1/messages", "gpt-4": "/v1/chat/completions"}[model]
		if p := e.mock.LastRequest().Path; p != wantPath {
			t.Errorf("%s went upstream to %s, want %s", model, p, wantPath)
		}

		resp, body = postAs(t, url, "/v1/messages",
			`{"model":"`+model+`","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"one two three"}]}`,
			"x-api-key", key.Key, "anthropic-version", "2023-06-01")
		var names []string
		var text strings.Builder
		var outTokens float64
		sc := bufio.NewScanner(strings.NewReader(body))
		for sc.Scan() {
			line := sc.Text()
			if n, ok := strings.CutPrefix(line, "event: "); ok {
				names = append(names, n)
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				var ev map[string]any
				if err := json.Unmarshal([]byte(d), &ev); err != nil {
					t.Fatalf("%s stream: bad data %q", model, d)
				}
				if delta, ok := ev["delta"].(map[string]any); ok {
					if s, ok := delta["text"].(string); ok {
						text.WriteString(s)
					}
				}
				if u, ok := ev["usage"].(map[string]any); ok && ev["type"] == "message_delta" {
					outTokens = u["output_tokens"].(float64)
				}
			}
		}
		seq := strings.Join(names, " ")
		if resp.StatusCode != 200 || !strings.HasPrefix(seq, "message_start content_block_start") || !strings.HasSuffix(seq, "message_delta message_stop") ||
			text.String() != "Hello! You said: one two three" || outTokens != 6 {
			t.Fatalf("%s stream: %d events %q text %q output %v", model, resp.StatusCode, seq, text.String(), outTokens)
		}
	}
	if !strings.Contains(string(e.mock.LastRequest().Body), `"include_usage":true`) {
		t.Error("the OpenAI upstream was not asked for its usage chunk")
	}
	e.srv.writer.Flush()
	logs, total, _ := e.store.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key.Key)})
	if total != 4 {
		t.Fatalf("%d spend rows for 4 /v1/messages calls", total)
	}
	for _, l := range logs {
		if l.Cost <= 0 || l.CompletionTokens == 0 || l.PromptTokens == 0 {
			t.Errorf("row %+v", l)
		}
	}
	if logs[len(logs)-1].EndUser != "cust-9" {
		t.Errorf("metadata.user_id not booked as the end user: %+v", logs[len(logs)-1])
	}
}

func TestAnthropicErrorsAndCountTokens(t *testing.T) {
	url, _ := anthropicGateway(t)
	anthropicErr := func(body string) (string, string) {
		var e struct {
			Type  string
			Error struct{ Type, Message string }
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Type != "error" {
			t.Fatalf("not an Anthropic error: %s", body)
		}
		return e.Error.Type, e.Error.Message
	}
	msg := `{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	resp, body := postAs(t, url, "/v1/messages", msg)
	if typ, _ := anthropicErr(body); resp.StatusCode != 401 || typ != "authentication_error" {
		t.Errorf("no key: %d %s", resp.StatusCode, body)
	}
	resp, body = postAs(t, url, "/v1/messages", strings.Replace(msg, "claude", "nope", 1), "x-api-key", "sk-1234")
	if typ, _ := anthropicErr(body); resp.StatusCode != 404 || typ != "not_found_error" {
		t.Errorf("unknown model: %d %s", resp.StatusCode, body)
	}
	resp, body = postAs(t, url, "/v1/messages", `{"model":"claude","messages":"not a list"}`, "x-api-key", "sk-1234")
	if typ, _ := anthropicErr(body); resp.StatusCode != 400 || typ != "invalid_request_error" {
		t.Errorf("bad body: %d %s", resp.StatusCode, body)
	}
	resp, body = postAs(t, url, "/v1/messages/count_tokens",
		`{"model":"claude","system":"Be kind.","messages":[{"role":"user","content":"hello world"}]}`, "x-api-key", "sk-1234")
	var ct struct {
		InputTokens int64 `json:"input_tokens"`
	}
	if json.Unmarshal([]byte(body), &ct); resp.StatusCode != 200 || ct.InputTokens < 5 || ct.InputTokens > 20 {
		t.Errorf("count_tokens: %d %s", resp.StatusCode, body)
	}
}
