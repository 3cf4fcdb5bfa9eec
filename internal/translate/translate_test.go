package translate

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/usage"
)

// jsonEq compares two JSON texts structurally.
func jsonEq(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: output is not JSON: %s", what, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: bad expectation: %v", what, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("%s:\n got %s\nwant %s", what, gb, wb)
	}
}

func TestChatToMessages(t *testing.T) {
	in := `{"model":"claude","max_tokens":50,"temperature":0.2,"stop":"END","user":"cust-1",
	"messages":[
	  {"role":"system","content":"Be brief."},
	  {"role":"user","content":[{"type":"text","text":"What is in this image?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBOR"}}]},
	  {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"cat\"}"}}]},
	  {"role":"tool","tool_call_id":"call_1","content":"a cat"},
	  {"role":"user","content":"And the weather?"}],
	"tools":[{"type":"function","function":{"name":"lookup","description":"Look up","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}],
	"tool_choice":"required"}`
	out, err := ChatToMessages([]byte(in), "claude-3-5-sonnet")
	if err != nil {
		t.Fatal(err)
	}
	jsonEq(t, "request", out, `{"model":"claude-3-5-sonnet","system":"Be brief.","max_tokens":50,"temperature":0.2,"stop_sequences":["END"],
	"metadata":{"user_id":"cust-1"},
	"messages":[
	  {"role":"user","content":[{"type":"text","text":"What is in this image?"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBOR"}}]},
	  {"role":"assistant","content":[{"type":"tool_use","id":"call_1","name":"lookup","input":{"q":"cat"}}]},
	  {"role":"user","content":[{"type":"tool_result","tool_use_id":"call_1","content":"a cat"},{"type":"text","text":"And the weather?"}]}],
	"tools":[{"name":"lookup","description":"Look up","input_schema":{"type":"object","properties":{"q":{"type":"string"}}}}],
	"tool_choice":{"type":"any"}}`)

	out, _ = ChatToMessages([]byte(`{"model":"x","messages":[{"role":"user","content":"hi"}]}`), "claude")
	if !strings.Contains(string(out), `"max_tokens":4096`) {
		t.Errorf("no default max_tokens: %s", out)
	}
	if _, err := ChatToMessages([]byte(`{"messages":[{"role":"wizard","content":"hi"}]}`), "c"); err == nil {
		t.Error("an unknown role was accepted")
	}
}

func TestMessagesToChat(t *testing.T) {
	in := `{"model":"gpt","max_tokens":100,"system":[{"type":"text","text":"Be brief."}],"stop_sequences":["END"],
	"metadata":{"user_id":"u-7"},
	"messages":[
	  {"role":"user","content":[{"type":"text","text":"Look"},{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/"}}]},
	  {"role":"assistant","content":[{"type":"text","text":"Calling."},{"type":"tool_use","id":"toolu_1","name":"lookup","input":{"q":"cat"}}]},
	  {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"a cat"}]}]}],
	"tools":[{"name":"lookup","input_schema":{"type":"object"}}],
	"tool_choice":{"type":"tool","name":"lookup"}}`
	out, err := MessagesToChat([]byte(in), "gpt-4o")
	if err != nil {
		t.Fatal(err)
	}
	jsonEq(t, "request", out, `{"model":"gpt-4o","max_tokens":100,"stop":["END"],"user":"u-7",
	"messages":[
	  {"role":"system","content":"Be brief."},
	  {"role":"user","content":[{"type":"text","text":"Look"},{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/"}}]},
	  {"role":"assistant","content":"Calling.","tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"cat\"}"}}]},
	  {"role":"tool","tool_call_id":"toolu_1","content":"a cat"}],
	"tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object"}}}],
	"tool_choice":{"type":"function","function":{"name":"lookup"}}}`)
}

func TestResponses(t *testing.T) {
	msg := `{"id":"msg_01","type":"message","role":"assistant","model":"claude-3-5-sonnet",
	"content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"toolu_1","name":"lookup","input":{"q":"cat"}}],
	"stop_reason":"tool_use","stop_sequence":null,
	"usage":{"input_tokens":10,"output_tokens":20,"cache_read_input_tokens":100,"cache_creation_input_tokens":5}}`
	out, u, err := MessageToCompletion([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	if u != (usage.Usage{Prompt: 115, Completion: 20, Cached: 100, CacheCreation: 5}) {
		t.Errorf("usage %+v", u)
	}
	var c map[string]any
	json.Unmarshal(out, &c)
	delete(c, "created")
	b, _ := json.Marshal(c)
	jsonEq(t, "completion", b, `{"id":"chatcmpl-01","object":"chat.completion","model":"claude-3-5-sonnet",
	"choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"Let me check.",
	  "tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"cat\"}"}}]}}],
	"usage":{"prompt_tokens":115,"completion_tokens":20,"total_tokens":135,"prompt_tokens_details":{"cached_tokens":100}}}`)

	comp := `{"id":"chatcmpl-9","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"finish_reason":"length",
	"message":{"role":"assistant","content":"Hello"}}],"usage":{"prompt_tokens":50,"completion_tokens":3,"total_tokens":53,"prompt_tokens_details":{"cached_tokens":40}}}`
	out, u, err = CompletionToMessage([]byte(comp))
	if err != nil {
		t.Fatal(err)
	}
	jsonEq(t, "message", out, `{"id":"msg_9","type":"message","role":"assistant","model":"gpt-4o","content":[{"type":"text","text":"Hello"}],
	"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":3,"cache_read_input_tokens":40,"cache_creation_input_tokens":0}}`)
	if u.Prompt != 50 || u.Cached != 40 {
		t.Errorf("usage %+v", u)
	}
}

func TestErrors(t *testing.T) {
	jsonEq(t, "to anthropic", ErrorToAnthropic(429, []byte(`{"error":{"message":"slow down","type":"rate_limit_error"}}`)),
		`{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`)
	jsonEq(t, "to openai", ErrorToOpenAI(401, []byte(`{"type":"error","error":{"type":"authentication_error","message":"bad key"}}`)),
		`{"error":{"message":"bad key","type":"authentication_error","param":null,"code":"authentication_error"}}`)
}

// sse joins events as an upstream would send them.
func run(s Stream, events ...string) string {
	var out []byte
	for _, e := range events {
		out = s.Event([]byte(e), out)
	}
	return string(s.End(out))
}

func TestMessagesToChatStream(t *testing.T) {
	s := MessagesToChatStream(true)
	out := run(s,
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"content\":[],\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
		"event: ping\ndata: {\"type\":\"ping\"}\n\n",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
		"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"lookup\",\"input\":{}}}\n\n",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\":\"}}\n\n",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"cat\\\"}\"}}\n\n",
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n",
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
	)
	var args strings.Builder
	var finish, role string
	var chunkUsage *usage.OpenAI
	for _, ev := range strings.Split(strings.TrimSpace(out), "\n\n") {
		data := strings.TrimPrefix(ev, "data: ")
		if data == "[DONE]" {
			continue
		}
		var c struct {
			Object  string
			Choices []struct {
				Delta struct {
					Role      string
					Content   string
					ToolCalls []oaToolCall `json:"tool_calls"`
				}
				FinishReason *string `json:"finish_reason"`
			}
			Usage *usage.OpenAI
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("bad chunk %q", data)
		}
		if c.Usage != nil {
			chunkUsage = c.Usage
		}
		for _, ch := range c.Choices {
			if ch.Delta.Role != "" {
				role = ch.Delta.Role
			}
			args.WriteString(ch.Delta.Content)
			for _, tc := range ch.Delta.ToolCalls {
				args.WriteString(tc.Function.Name + tc.Function.Arguments)
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
	}
	if role != "assistant" || args.String() != `Hilookup{"q":"cat"}` || finish != "tool_calls" || !strings.HasSuffix(out, "data: [DONE]\n\n") {
		t.Fatalf("role %q text+tools %q finish %q:\n%s", role, args.String(), finish, out)
	}
	if chunkUsage == nil || chunkUsage.PromptTokens != 12 || chunkUsage.CompletionTokens != 9 {
		t.Fatalf("usage chunk %+v", chunkUsage)
	}
	if u, ok := s.Usage(); !ok || u.Completion != 9 || s.Chunks() != 4 {
		t.Fatalf("stream usage %+v %v, chunks %d", u, ok, s.Chunks())
	}
	if noUsage := run(MessagesToChatStream(false), "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"); strings.Contains(noUsage, "usage") {
		t.Errorf("usage chunk sent to a client that did not ask: %s", noUsage)
	}
}

func TestChatToMessagesStream(t *testing.T) {
	s := ChatToMessagesStream("gpt-4o")
	out := run(s,
		"data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
		"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
		"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
		"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"\"}}]}}]}\n\n",
		"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":1}\"}}]}}]}\n\n",
		"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
		"data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":4,\"total_tokens\":11}}\n\n",
		"data: [DONE]\n\n",
	)
	var names []string
	var text, json1 strings.Builder
	var stop string
	var outTok int64
	for _, ev := range strings.Split(strings.TrimSpace(out), "\n\n") {
		name, data := parseEvent([]byte(ev))
		names = append(names, name)
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil || m["type"] != name {
			t.Fatalf("event %q has data %s", name, data)
		}
		if d, ok := m["delta"].(map[string]any); ok {
			if s, ok := d["text"].(string); ok {
				text.WriteString(s)
			}
			if s, ok := d["partial_json"].(string); ok {
				json1.WriteString(s)
			}
			if s, ok := d["stop_reason"].(string); ok {
				stop = s
			}
		}
		if u, ok := m["usage"].(map[string]any); ok && name == "message_delta" {
			outTok = int64(u["output_tokens"].(float64))
		}
	}
	want := "message_start content_block_start content_block_delta content_block_delta content_block_stop content_block_start content_block_delta content_block_stop message_delta message_stop"
	if strings.Join(names, " ") != want {
		t.Fatalf("events:\n got %s\nwant %s", strings.Join(names, " "), want)
	}
	if text.String() != "Hello" || json1.String() != `{"q":1}` || stop != "tool_use" || outTok != 4 {
		t.Fatalf("text %q json %q stop %q output tokens %d", text.String(), json1.String(), stop, outTok)
	}
	if u, ok := s.Usage(); !ok || u.Prompt != 7 {
		t.Fatalf("usage %+v", u)
	}
}

// TestChatToMessagesStreamWithoutIndex: upstreams that omit tool_calls[].index
// still get one tool_use block per call.
func TestChatToMessagesStreamWithoutIndex(t *testing.T) {
	out := run(ChatToMessagesStream("m"),
		"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"a\",\"arguments\":\"{\\\"x\\\":1}\"}}]}}]}\n\n",
		"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"b\",\"arguments\":\"{\\\"y\\\":2}\"}}]}}]}\n\n",
		"data: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
		"data: [DONE]\n\n")
	if n := strings.Count(out, `"type":"tool_use"`); n != 2 {
		t.Fatalf("%d tool_use blocks for two calls:\n%s", n, out)
	}
}

// TestChatToMessagesStreamError: an OpenAI error event mid-stream reaches
// an Anthropic client as its error event, and the stream ends there: no
// message_stop (which would say the answer is whole), nothing after it.
func TestChatToMessagesStreamError(t *testing.T) {
	for _, tt := range []struct{ oaType, anType string }{{"rate_limit_error", "rate_limit_error"}, {"server_error", "api_error"}} {
		out := run(ChatToMessagesStream("m"),
			"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"partial\"}}]}\n\n",
			"data: {\"error\":{\"message\":\"Too many requests\",\"type\":\""+tt.oaType+"\",\"param\":null,\"code\":\"throttlingException\"}}\n\n",
			"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"after\"},\"finish_reason\":\"stop\"}]}\n\n",
			"data: [DONE]\n\n")
		events := strings.Split(strings.TrimSpace(out), "\n\n")
		name, data := parseEvent([]byte(events[len(events)-1]))
		var e struct {
			Type  string `json:"type"`
			Error struct{ Type, Message string }
		}
		if err := json.Unmarshal(data, &e); err != nil || name != "error" || e.Type != "error" || e.Error.Type != tt.anType || e.Error.Message != "Too many requests" {
			t.Fatalf("%s: the stream ended with %q %s, want Anthropic's error event:\n%s", tt.oaType, name, data, out)
		}
		if strings.Contains(out, "message_stop") || strings.Contains(out, "after") {
			t.Fatalf("%s: the stream went on after its error:\n%s", tt.oaType, out)
		}
	}
}
