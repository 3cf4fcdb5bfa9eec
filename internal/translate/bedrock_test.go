package translate

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/usage"
)

// sameJSON fails t unless got and want hold the same JSON value.
func cvSameJSON(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("got is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gj, _ := json.Marshal(g)
	wj, _ := json.Marshal(w)
	if string(gj) != string(wj) {
		t.Fatalf("got\n%s\nwant\n%s", gj, wj)
	}
}

// TestChatToConverse: a chat request lands in the Converse request's own
// members, as AWS's Converse API reference names them: system blocks,
// alternating turns, toolUse and toolResult blocks, image bytes,
// inferenceConfig, toolConfig and outputConfig.
func TestChatToConverse(t *testing.T) {
	in := `{"model":"anthropic.claude-3-5-sonnet-20240620-v1:0","max_tokens":512,"temperature":0.5,"top_p":0.9,"stop":["END"],
	"messages":[
		{"role":"system","content":"You are an app that creates playlists for a radio station."},
		{"role":"user","content":[{"type":"text","text":"What is on this cover?"},{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/4AAQ"}}]},
		{"role":"user","content":"Then find the most popular song."},
		{"role":"assistant","content":"Let me look.","tool_calls":[{"id":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","type":"function","function":{"name":"top_song","arguments":"{\"sign\":\"WZPZ\"}"}}]},
		{"role":"tool","tool_call_id":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","content":"Elemental Hotel"}
	],
	"tools":[{"type":"function","function":{"name":"top_song","description":"Get the most popular song played on a radio station.","parameters":{"type":"object","properties":{"sign":{"type":"string"}},"required":["sign"]}}}],
	"tool_choice":"required",
	"response_format":{"type":"json_schema","json_schema":{"name":"song","schema":{"type":"object","properties":{"title":{"type":"string"}}}}}}`
	b, err := ChatToConverse([]byte(in), 0)
	if err != nil {
		t.Fatal(err)
	}
	cvSameJSON(t, b, `{
	"messages":[
		{"role":"user","content":[{"text":"What is on this cover?"},{"image":{"format":"jpeg","source":{"bytes":"/9j/4AAQ"}}},{"text":"Then find the most popular song."}]},
		{"role":"assistant","content":[{"text":"Let me look."},{"toolUse":{"toolUseId":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","name":"top_song","input":{"sign":"WZPZ"}}}]},
		{"role":"user","content":[{"toolResult":{"toolUseId":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","content":[{"text":"Elemental Hotel"}]}}]}
	],
	"system":[{"text":"You are an app that creates playlists for a radio station."}],
	"inferenceConfig":{"maxTokens":512,"temperature":0.5,"topP":0.9,"stopSequences":["END"]},
	"toolConfig":{"tools":[{"toolSpec":{"name":"top_song","description":"Get the most popular song played on a radio station.",
		"inputSchema":{"json":{"type":"object","properties":{"sign":{"type":"string"}},"required":["sign"]}}}}],"toolChoice":{"any":{}}},
	"outputConfig":{"textFormat":{"type":"json_schema","structure":{"jsonSchema":{"schema":"{\"type\":\"object\",\"properties\":{\"title\":{\"type\":\"string\"}}}","name":"song"}}}}
	}`)

	named, err := ChatToConverse([]byte(`{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	cvSameJSON(t, named, `{"messages":[{"role":"user","content":[{"text":"x"}]}],
		"toolConfig":{"tools":[{"toolSpec":{"name":"f","inputSchema":{"json":{"type":"object","properties":{}}}}}],"toolChoice":{"tool":{"name":"f"}}}}`)

	for _, bad := range []string{`{"messages":[{"role":"system","content":"only a system prompt"}]}`, `{"messages":[{"role":"wizard","content":"x"}]}`,
		`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}]}`,
		`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AAAA"}}]}]}`,
		`{"messages":[{"role":"user","content":"x"}],"stop":5}`, `[1]`} {
		if _, err := ChatToConverse([]byte(bad), 0); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	// A request without max_tokens is held to the bound it was given; one
	// with max_tokens keeps it.
	for in, want := range map[string]string{
		`{"messages":[{"role":"user","content":"x"}]}`:                 `{"messages":[{"role":"user","content":[{"text":"x"}]}],"inferenceConfig":{"maxTokens":8192}}`,
		`{"messages":[{"role":"user","content":"x"}],"max_tokens":0}`:  `{"messages":[{"role":"user","content":[{"text":"x"}]}],"inferenceConfig":{"maxTokens":8192}}`,
		`{"messages":[{"role":"user","content":"x"}],"max_tokens":10}`: `{"messages":[{"role":"user","content":[{"text":"x"}]}],"inferenceConfig":{"maxTokens":10}}`,
	} {
		b, err := ChatToConverse([]byte(in), 8192)
		if err != nil {
			t.Fatal(err)
		}
		cvSameJSON(t, b, want)
	}
	// Bad messages are refused naming the message: image bytes that are
	// not base64, a tool result answering no tool call.
	for _, bad := range []string{
		`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,\"}not base64!!"}}]}]}`,
		`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,"}}]}]}`,
		`{"messages":[{"role":"tool","content":"orphan result"}]}`,
		`{"messages":[{"role":"user","content":"x"},{"role":"tool","tool_call_id":"","content":"orphan result"}]}`,
	} {
		if _, err := ChatToConverse([]byte(bad), 0); err == nil || !strings.HasPrefix(err.Error(), "messages[") {
			t.Errorf("%s: %v, want an error naming messages", bad, err)
		}
	}
}

// Converse answers in the shape of AWS's Converse API reference: a text
// answer, and a tool call with prompt-cache usage.
const (
	converseTextAnswer = `{"output":{"message":{"role":"assistant","content":[{"text":"Here is a list of songs."}]}},
		"stopReason":"end_turn","usage":{"inputTokens":30,"outputTokens":628,"totalTokens":658},"metrics":{"latencyMs":1275}}`
	converseToolAnswer = `{"output":{"message":{"role":"assistant","content":[
		{"text":"I'll look it up."},
		{"toolUse":{"toolUseId":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","name":"top_song","input":{"sign":"WZPZ"}}}]}},
		"stopReason":"tool_use","usage":{"inputTokens":10,"outputTokens":20,"totalTokens":130,"cacheReadInputTokens":60,"cacheWriteInputTokens":40},"metrics":{"latencyMs":900}}`
)

func TestConverseToCompletion(t *testing.T) {
	tests := []struct {
		name, in, finish, content, call string
		usage                           usage.Usage
	}{
		{"text", converseTextAnswer, "stop", "Here is a list of songs.", "", usage.Usage{Prompt: 30, Completion: 628}},
		{"tool", converseToolAnswer, "tool_calls", "I'll look it up.", `{"sign":"WZPZ"}`, usage.Usage{Prompt: 110, Completion: 20, Cached: 60, CacheCreation: 40}},
		{"length", strings.Replace(converseTextAnswer, "end_turn", "max_tokens", 1), "length", "Here is a list of songs.", "", usage.Usage{Prompt: 30, Completion: 628}},
		{"guardrail", strings.Replace(converseTextAnswer, "end_turn", "guardrail_intervened", 1), "content_filter", "Here is a list of songs.", "", usage.Usage{Prompt: 30, Completion: 628}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, u, err := ConverseToCompletion([]byte(tt.in), "m")
			if err != nil {
				t.Fatal(err)
			}
			if u != tt.usage {
				t.Errorf("usage %+v, want %+v", u, tt.usage)
			}
			var c oaResponse
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			if len(c.Choices) != 1 || c.Choices[0].FinishReason != tt.finish || c.Choices[0].Message.Content == nil || *c.Choices[0].Message.Content != tt.content {
				t.Fatalf("completion %s", b)
			}
			if c.Usage == nil || c.Usage.PromptTokens != tt.usage.Prompt || c.Usage.CompletionTokens != tt.usage.Completion {
				t.Errorf("usage member %s", b)
			}
			calls := c.Choices[0].Message.ToolCalls
			if tt.call == "" {
				if len(calls) != 0 {
					t.Errorf("tool calls in %s", b)
				}
				return
			}
			if len(calls) != 1 || calls[0].ID != "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q" || calls[0].Function.Name != "top_song" || calls[0].Function.Arguments != tt.call {
				t.Errorf("tool calls in %s", b)
			}
		})
	}
	if _, _, err := ConverseToCompletion([]byte(`{"stopReason":"end_turn"}`), "m"); err == nil {
		t.Error("an answer without output.message was accepted")
	}
}

// cvSSE is a ConverseStream event as the gateway hands it over.
func cvSSE(name, data string) []byte { return []byte("event: " + name + "\ndata: " + data + "\n\n") }

// TestConverseStream: ConverseStream's events (messageStart, a text block,
// a toolUse block in two input deltas, messageStop, metadata) become chat
// chunks, the tool call's arguments joined, the finish reason mapped and
// the usage in the last chunk.
func TestConverseStream(t *testing.T) {
	s := ConverseToChatStream("claude", true)
	var out []byte
	for _, ev := range [][]byte{
		cvSSE("messageStart", `{"role":"assistant","p":"abc"}`),
		cvSSE("contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"Looking "}}`),
		cvSSE("contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"it up."}}`),
		cvSSE("contentBlockStop", `{"contentBlockIndex":0}`),
		cvSSE("contentBlockStart", `{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_1","name":"top_song"}}}`),
		cvSSE("contentBlockDelta", `{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"sign\":"}}}`),
		cvSSE("contentBlockDelta", `{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"WZPZ\"}"}}}`),
		cvSSE("contentBlockStop", `{"contentBlockIndex":1}`),
		cvSSE("messageStop", `{"stopReason":"tool_use"}`),
		cvSSE("metadata", `{"usage":{"inputTokens":12,"outputTokens":7,"totalTokens":19,"cacheReadInputTokens":3},"metrics":{"latencyMs":50}}`),
	} {
		out = s.Event(ev, out)
	}
	out = s.End(out)
	text, args, finish, usageSeen := "", "", "", false
	var id, name string
	for _, ev := range strings.Split(strings.TrimSpace(string(out)), "\n\n") {
		data := strings.TrimPrefix(ev, "data: ")
		if data == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content   string       `json:"content"`
					ToolCalls []oaToolCall `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *usage.OpenAI `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %q: %v", ev, err)
		}
		if c.Usage != nil {
			usageSeen = c.Usage.PromptTokens == 15 && c.Usage.CompletionTokens == 7
		}
		for _, ch := range c.Choices {
			text += ch.Delta.Content
			for _, tc := range ch.Delta.ToolCalls {
				args += tc.Function.Arguments
				id, name = id+tc.ID, name+tc.Function.Name
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
	}
	if text != "Looking it up." || args != `{"sign":"WZPZ"}` || id != "tooluse_1" || name != "top_song" || finish != "tool_calls" || !usageSeen {
		t.Fatalf("text %q args %q id %q name %q finish %q usage %v in\n%s", text, args, id, name, finish, usageSeen, out)
	}
	if !strings.HasSuffix(string(out), "data: [DONE]\n\n") {
		t.Error("no [DONE]")
	}
	if u, ok := s.Usage(); !ok || u != (usage.Usage{Prompt: 15, Completion: 7, Cached: 3}) {
		t.Errorf("usage %+v %v", u, ok)
	}

	// An exception mid-stream ends it with an error in OpenAI's shape.
	s = ConverseToChatStream("claude", false)
	out = s.Event(cvSSE("messageStart", `{"role":"assistant"}`), nil)
	out = s.Event(cvSSE("throttlingException", `{"message":"Too many tokens, please wait before trying again."}`), out)
	out = s.End(out)
	if !strings.Contains(string(out), `"type":"rate_limit_error"`) || !strings.Contains(string(out), `"code":"throttlingException"`) || strings.Contains(string(out), "[DONE]") {
		t.Errorf("exception became\n%s", out)
	}
}

func TestBedrockErrorToOpenAI(t *testing.T) {
	tests := []struct {
		status          int
		header, body    string
		typ, code, mess string
	}{
		{429, "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/", `{"message":"Too many requests, please wait before trying again."}`,
			"rate_limit_error", "ThrottlingException", "Too many requests, please wait before trying again."},
		{400, "ValidationException", `{"message":"The provided model identifier is invalid."}`, "invalid_request_error", "ValidationException", "The provided model identifier is invalid."},
		{403, "", `{"Message":"User is not authorized"}`, "authentication_error", "", "User is not authorized"},
		{503, "ServiceUnavailableException", `{"message":"Bedrock is unable to process your request."}`, "api_error", "ServiceUnavailableException", "Bedrock is unable to process your request."},
	}
	for _, tt := range tests {
		var e struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Code    *string `json:"code"`
			} `json:"error"`
		}
		b := BedrockErrorToOpenAI(tt.status, tt.header, []byte(tt.body))
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		code := ""
		if e.Error.Code != nil {
			code = *e.Error.Code
		}
		if e.Error.Type != tt.typ || code != tt.code || e.Error.Message != tt.mess {
			t.Errorf("%d %s: got %s", tt.status, tt.header, b)
		}
	}
}

// TestBedrockEmbeddings: an embeddings request becomes Titan's InvokeModel
// body (one inputText, dimensions) or Cohere's (texts, input_type), and
// their answers, in the shapes of AWS's model parameter pages, OpenAI's list.
func TestBedrockEmbeddings(t *testing.T) {
	b, err := EmbeddingsToBedrock([]byte(`{"model":"titan","input":["What are the different services that you offer?"],"dimensions":256}`), "amazon.titan-embed-text-v2:0")
	if err != nil {
		t.Fatal(err)
	}
	cvSameJSON(t, b, `{"inputText":"What are the different services that you offer?","dimensions":256}`)
	b, err = EmbeddingsToBedrock([]byte(`{"model":"co","input":["a","b"]}`), "cohere.embed-english-v3")
	if err != nil {
		t.Fatal(err)
	}
	cvSameJSON(t, b, `{"texts":["a","b"],"input_type":"search_document"}`)
	for _, bad := range []struct{ body, model string }{
		{`{"input":["a","b"]}`, "amazon.titan-embed-text-v2:0"}, {`{"input":[1,2,3]}`, "cohere.embed-english-v3"},
		{`{"input":"a"}`, "anthropic.claude-3-haiku-20240307-v1:0"}, {`{"input":[]}`, "cohere.embed-english-v3"},
	} {
		if _, err := EmbeddingsToBedrock([]byte(bad.body), bad.model); err == nil {
			t.Errorf("%s for %s: accepted", bad.body, bad.model)
		}
	}

	tests := []struct {
		name, in string
		vectors  int
		prompt   int64
	}{
		{"titan", `{"embedding":[0.1,-0.2,0.3],"inputTextTokenCount":9}`, 1, 9},
		{"cohere floats", `{"embeddings":[[0.1,0.2],[0.3,0.4]],"id":"e1","response_type":"embeddings_floats","texts":["a","b"]}`, 2, 0},
		{"cohere by type", `{"embeddings":{"float":[[0.1,0.2]]},"id":"e2","response_type":"embeddings_by_type","texts":["a"]}`, 1, 0},
	}
	for _, tt := range tests {
		out, u, err := BedrockEmbeddingToOpenAI([]byte(tt.in))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var l struct {
			Object string `json:"object"`
			Data   []struct {
				Index     int       `json:"index"`
				Embedding []float64 `json:"embedding"`
			} `json:"data"`
			Usage usage.OpenAI `json:"usage"`
		}
		if err := json.Unmarshal(out, &l); err != nil || l.Object != "list" || len(l.Data) != tt.vectors || l.Data[len(l.Data)-1].Index != tt.vectors-1 ||
			len(l.Data[0].Embedding) == 0 || u.Prompt != tt.prompt || l.Usage.PromptTokens != tt.prompt {
			t.Errorf("%s: %s %+v", tt.name, out, u)
		}
	}
	if _, _, err := BedrockEmbeddingToOpenAI([]byte(`{"id":"x"}`)); err == nil {
		t.Error("an answer without embeddings was accepted")
	}
}

// FuzzBedrock: no client request, Bedrock answer, error body or event
// sequence makes the Bedrock translations panic, and what they produce is
// JSON (SSE data lines included).
func FuzzBedrock(f *testing.F) {
	f.Add([]byte(`{"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto","response_format":{"type":"json_schema","json_schema":{"schema":{}}},"input":["a"]}`), 400)
	f.Add([]byte(converseToolAnswer), 200)
	f.Add([]byte(`{"embeddings":{"float":[[1]]},"message":"m"}`), 429)
	f.Add([]byte("event: contentBlockStart\ndata: {\"contentBlockIndex\":1,\"start\":{\"toolUse\":{\"toolUseId\":\"t\",\"name\":\"f\"}}}\n\nevent: contentBlockDelta\ndata: {\"contentBlockIndex\":1,\"delta\":{\"toolUse\":{\"input\":\"{\"}}}\n\nevent: metadata\ndata: {\"usage\":{\"inputTokens\":1}}\n\nevent: validationException\ndata: {\"message\":\"x\"}\n\n"), 0)
	f.Fuzz(func(t *testing.T, in []byte, status int) {
		if out, err := ChatToConverse(in, 4096); err == nil && !json.Valid(out) {
			t.Fatalf("ChatToConverse(%q) = %q", in, out)
		}
		for _, model := range []string{"amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"} {
			if out, err := EmbeddingsToBedrock(in, model); err == nil && !json.Valid(out) {
				t.Fatalf("EmbeddingsToBedrock(%q) = %q", in, out)
			}
		}
		if out, _, err := ConverseToCompletion(in, "m"); err == nil && !json.Valid(out) {
			t.Fatalf("ConverseToCompletion(%q) = %q", in, out)
		}
		if out, _, err := BedrockEmbeddingToOpenAI(in); err == nil && !json.Valid(out) {
			t.Fatalf("BedrockEmbeddingToOpenAI(%q) = %q", in, out)
		}
		if out := BedrockErrorToOpenAI(status, "ThrottlingException", in); !json.Valid(out) {
			t.Fatalf("BedrockErrorToOpenAI(%q) = %q", in, out)
		}
		s := Chain(ConverseToChatStream("m", true), ChatToMessagesStream("m"))
		for _, st := range []Stream{ConverseToChatStream("m", true), s} {
			var out []byte
			for _, ev := range bytes.SplitAfter(in, []byte("\n\n")) {
				out = st.Event(ev, out)
			}
			for _, line := range bytes.Split(st.End(out), []byte("\n")) {
				if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok && string(d) != "[DONE]" && !json.Valid(d) {
					t.Fatalf("a data line that is not JSON: %q (from %q)", line, in)
				}
			}
		}
	})
}
