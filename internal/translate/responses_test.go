package translate

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/usage"
)

// The request and answer shapes below follow OpenAI's API reference for
// the Responses API (create a response; function calling; structured
// outputs) and for chat completions.

func TestResponsesToChat(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{
			name: "string input with instructions",
			in:   `{"model":"gpt-4.1","instructions":"Talk like a pirate.","input":"Are semicolons optional in JavaScript?","max_output_tokens":100,"temperature":0.5,"top_p":0.9,"user":"u-1","store":true,"metadata":{"a":"b"}}`,
			want: `{"model":"m","messages":[{"role":"system","content":"Talk like a pirate."},{"role":"user","content":"Are semicolons optional in JavaScript?"}],
				"max_tokens":100,"temperature":0.5,"top_p":0.9,"user":"u-1"}`,
		},
		{
			name: "items: parts, image, developer, a tool round trip",
			in: `{"model":"gpt-4.1","stream":true,"input":[
				{"role":"developer","content":"Be brief."},
				{"type":"message","role":"user","content":[{"type":"input_text","text":"what is in this image?"},{"type":"input_image","image_url":"https://example.com/cat.png","detail":"low"}]},
				{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Let me look it up."}]},
				{"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
				{"type":"function_call","id":"fc_2","call_id":"call_2","name":"get_weather","arguments":"{\"city\":\"Rome\"}"},
				{"type":"function_call_output","call_id":"call_1","output":"15C"},
				{"type":"function_call_output","call_id":"call_2","output":[{"type":"input_text","text":"20C"}]},
				{"type":"reasoning","id":"rs_1","summary":[]}],
				"tools":[{"type":"function","name":"get_weather","description":"Get the weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true}],
				"tool_choice":{"type":"function","name":"get_weather"},"parallel_tool_calls":false}`,
			want: `{"model":"m","stream":true,"stream_options":{"include_usage":true},"parallel_tool_calls":false,"messages":[
				{"role":"system","content":"Be brief."},
				{"role":"user","content":[{"type":"text","text":"what is in this image?"},{"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"low"}}]},
				{"role":"assistant","content":"Let me look it up.","tool_calls":[
					{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
					{"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]},
				{"role":"tool","tool_call_id":"call_1","content":"15C"},
				{"role":"tool","tool_call_id":"call_2","content":"20C"}],
				"tools":[{"type":"function","function":{"name":"get_weather","description":"Get the weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true}}],
				"tool_choice":{"type":"function","function":{"name":"get_weather"}}}`,
		},
		{
			name: "structured output",
			in:   `{"model":"gpt-4o","input":"Jane, 54","text":{"format":{"type":"json_schema","name":"person","schema":{"type":"object","properties":{"name":{"type":"string"}}},"strict":true}},"reasoning":{"effort":"low"},"tool_choice":"required"}`,
			want: `{"model":"m","messages":[{"role":"user","content":"Jane, 54"}],"tool_choice":"required","reasoning_effort":"low",
				"response_format":{"type":"json_schema","json_schema":{"name":"person","schema":{"type":"object","properties":{"name":{"type":"string"}}},"strict":true}}}`,
		},
		{
			name: "json mode",
			in:   `{"model":"gpt-4o","input":"x","text":{"format":{"type":"json_object"}}}`,
			want: `{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := ResponsesToChat([]byte(tt.in), "m")
			if err != nil {
				t.Fatal(err)
			}
			jsonEq(t, "chat request", out, tt.want)
		})
	}
}

func TestResponsesToChatRefuses(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"hosted tool", `{"input":"x","tools":[{"type":"web_search_preview"}]}`, "web_search_preview"},
		{"item reference", `{"input":[{"type":"item_reference","id":"msg_1"}]}`, "item_reference"},
		{"image by file id", `{"input":[{"role":"user","content":[{"type":"input_image","file_id":"file-1"}]}]}`, "file_id"},
		{"unknown role", `{"input":[{"role":"wizard","content":"x"}]}`, "wizard"},
		{"empty input", `{"input":[]}`, "empty"},
		{"input a number", `{"input":5}`, "input"},
		{"bad tool_choice", `{"input":"x","tool_choice":{"type":"file_search"}}`, "tool_choice"},
		{"bad format", `{"input":"x","text":{"format":{"type":"yaml"}}}`, "yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ResponsesToChat([]byte(tt.in), "m")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %q", err, tt.want)
			}
		})
	}
}

func TestChatToResponse(t *testing.T) {
	req := []byte(`{"model":"gpt","input":"hi","instructions":"be kind","max_output_tokens":64,"tools":[{"type":"function","name":"f"}]}`)
	tests := []struct {
		name, chat          string
		status, incomplete  string
		items               []string // output item types
		text, callID, args  string
		input, output, cach int64
	}{
		{
			name: "text",
			chat: `{"id":"chatcmpl-abc","object":"chat.completion","created":1741476542,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there."},"finish_reason":"stop"}],
				"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":0}}}`,
			status: "completed", items: []string{"message"}, text: "Hello there.", input: 19, output: 10, cach: 4,
		},
		{
			name: "tool calls",
			chat: `{"id":"chatcmpl-def","object":"chat.completion","created":1741476542,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":null,
				"tool_calls":[{"id":"call_9","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],
				"usage":{"prompt_tokens":30,"completion_tokens":5,"total_tokens":35}}`,
			status: "completed", items: []string{"function_call"}, callID: "call_9", args: `{"a":1}`, input: 30, output: 5,
		},
		{
			name:   "cut at max_output_tokens",
			chat:   `{"id":"chatcmpl-x","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Once upon"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`,
			status: "incomplete", incomplete: "max_output_tokens", items: []string{"message"}, text: "Once upon", input: 3, output: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, u, err := ChatToResponse([]byte(tt.chat), req)
			if err != nil {
				t.Fatal(err)
			}
			if u != (usage.Usage{Prompt: tt.input, Completion: tt.output, Cached: tt.cach}) {
				t.Errorf("usage %+v", u)
			}
			var r struct {
				ID, Object, Status, Model, Instructions string
				MaxOutputTokens                         int64                    `json:"max_output_tokens"`
				IncompleteDetails                       *struct{ Reason string } `json:"incomplete_details"`
				Tools                                   []any
				Output                                  []struct {
					Type, ID, Status, Role, Name, Arguments string
					CallID                                  string `json:"call_id"`
					Content                                 []struct{ Type, Text string }
				}
				Usage usage.Responses
			}
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(r.ID, "resp_") || r.Object != "response" || r.Status != tt.status || r.Model == "" || r.Instructions != "be kind" ||
				r.MaxOutputTokens != 64 || len(r.Tools) != 1 || len(r.Output) != len(tt.items) {
				t.Fatalf("response %s", out)
			}
			if (tt.incomplete == "") != (r.IncompleteDetails == nil) || (r.IncompleteDetails != nil && r.IncompleteDetails.Reason != tt.incomplete) {
				t.Errorf("incomplete_details in %s", out)
			}
			for i, typ := range tt.items {
				it := r.Output[i]
				if it.Type != typ || it.Status != "completed" || it.ID == "" {
					t.Errorf("item %d: %+v", i, it)
				}
				if typ == "message" && (it.Role != "assistant" || len(it.Content) != 1 || it.Content[0].Type != "output_text" || it.Content[0].Text != tt.text) {
					t.Errorf("message %+v", it)
				}
				if typ == "function_call" && (it.CallID != tt.callID || it.Arguments != tt.args || it.Name != "f") {
					t.Errorf("function call %+v", it)
				}
			}
			if r.Usage.InputTokens != tt.input || r.Usage.OutputTokens != tt.output || r.Usage.InputTokensDetails.CachedTokens != tt.cach ||
				!strings.Contains(string(out), fmt.Sprintf(`"total_tokens":%d`, tt.input+tt.output)) {
				t.Errorf("usage in %s", out)
			}
		})
	}
	if _, _, err := ChatToResponse([]byte(`[]`), req); err == nil {
		t.Error("a non-object answer was accepted")
	}
}

// chatChunks is a chat stream as OpenAI sends it with include_usage: text,
// then a tool call in two argument fragments, the finish chunk, the usage
// chunk and [DONE].
var chatChunks = []string{
	`{"id":"chatcmpl-7","object":"chat.completion.chunk","created":5,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
	`{"id":"chatcmpl-7","object":"chat.completion.chunk","created":5,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Let me "},"finish_reason":null}]}`,
	`{"id":"chatcmpl-7","object":"chat.completion.chunk","created":5,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"check."},"finish_reason":null}]}`,
	`{"id":"chatcmpl-7","object":"chat.completion.chunk","created":5,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}`,
	`{"id":"chatcmpl-7","object":"chat.completion.chunk","created":5,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}`,
	`{"id":"chatcmpl-7","object":"chat.completion.chunk","created":5,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]}`,
	`{"id":"chatcmpl-7","object":"chat.completion.chunk","created":5,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
	`{"id":"chatcmpl-7","object":"chat.completion.chunk","created":5,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}`,
	`[DONE]`,
}

type rsEvent struct {
	name string
	data map[string]any
}

// runStream feeds events to s and parses what comes out.
func runStream(t *testing.T, s Stream, events []string) []rsEvent {
	t.Helper()
	var out []byte
	for _, e := range events {
		out = s.Event([]byte(e), out)
	}
	out = s.End(out)
	var evs []rsEvent
	for _, block := range strings.Split(strings.TrimSpace(string(out)), "\n\n") {
		name, data := parseEvent([]byte(block))
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("event %q: %v", block, err)
		}
		if m["type"] != name {
			t.Fatalf("event name %q, type %v", name, m["type"])
		}
		evs = append(evs, rsEvent{name, m})
	}
	return evs
}

func TestChatToResponsesStream(t *testing.T) {
	in := make([]string, len(chatChunks))
	for i, c := range chatChunks {
		in[i] = "data: " + c + "\n\n"
	}
	s := ChatToResponsesStream([]byte(`{"model":"gpt","input":"weather?","tools":[{"type":"function","name":"get_weather"}]}`))
	evs := runStream(t, s, in)
	var names []string
	for i, ev := range evs {
		names = append(names, ev.name)
		if ev.data["sequence_number"] != float64(i) {
			t.Errorf("event %d has sequence_number %v", i, ev.data["sequence_number"])
		}
	}
	want := []string{"response.created", "response.in_progress",
		"response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done",
		"response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done", "response.completed"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("events\n got %v\nwant %v", names, want)
	}
	if d := evs[12].data; d["arguments"] != `{"city":"Paris"}` || d["output_index"] != float64(1) {
		t.Errorf("arguments done: %v", d)
	}
	if d := evs[6].data; d["text"] != "Let me check." {
		t.Errorf("text done: %v", d)
	}
	final := evs[len(evs)-1].data["response"].(map[string]any)
	out := final["output"].([]any)
	call := out[1].(map[string]any)
	if final["status"] != "completed" || final["id"] != "resp_7" || len(out) != 2 || call["call_id"] != "call_1" || call["arguments"] != `{"city":"Paris"}` {
		t.Errorf("final response %v", final)
	}
	u := final["usage"].(map[string]any)
	if u["input_tokens"] != float64(12) || u["output_tokens"] != float64(9) || u["total_tokens"] != float64(21) {
		t.Errorf("usage %v", u)
	}
	if got, ok := s.Usage(); !ok || got != (usage.Usage{Prompt: 12, Completion: 9}) || s.Chunks() != 5 {
		t.Errorf("stream usage %+v %v, chunks %d", got, ok, s.Chunks())
	}
}

func TestChatToResponsesStreamCutAtMaxTokens(t *testing.T) {
	in := []string{
		"data: " + `{"id":"chatcmpl-8","model":"m","choices":[{"index":0,"delta":{"content":"Once"},"finish_reason":null}]}` + "\n\n",
		"data: " + `{"id":"chatcmpl-8","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}` + "\n\n",
	}
	// No [DONE]: End completes the stream once a finish reason was seen.
	evs := runStream(t, ChatToResponsesStream([]byte(`{"model":"m","input":"x","max_output_tokens":1}`)), in)
	last := evs[len(evs)-1]
	r := last.data["response"].(map[string]any)
	if last.name != "response.incomplete" || r["status"] != "incomplete" || r["incomplete_details"].(map[string]any)["reason"] != "max_output_tokens" || r["max_output_tokens"] != float64(1) {
		t.Fatalf("last event %v", last)
	}
}

func TestMessagesToResponsesStream(t *testing.T) {
	in := []string{
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi there\"}}\n\n",
		"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
	}
	s := MessagesToResponsesStream([]byte(`{"model":"claude","input":"hi"}`))
	evs := runStream(t, s, in)
	last := evs[len(evs)-1]
	r := last.data["response"].(map[string]any)
	text := r["output"].([]any)[0].(map[string]any)["content"].([]any)[0].(map[string]any)["text"]
	if last.name != "response.completed" || evs[0].name != "response.created" || text != "Hi there" || r["id"] != "resp_1" {
		t.Fatalf("events %v", evs)
	}
	if u, ok := s.Usage(); !ok || u.Prompt != 25 || u.Completion != 15 {
		t.Errorf("usage %+v %v", u, ok)
	}
}

func TestResponsesPassthroughReadsUsage(t *testing.T) {
	in := []string{
		"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"usage\":null}}\n\n",
		"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
		"event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":36,\"input_tokens_details\":{\"cached_tokens\":20},\"output_tokens\":87,\"output_tokens_details\":{\"reasoning_tokens\":64},\"total_tokens\":123}}}\n\n",
	}
	s := ResponsesPassthrough()
	var out []byte
	for _, e := range in {
		out = s.Event([]byte(e), out)
	}
	if string(out) != strings.Join(in, "") {
		t.Fatalf("events changed:\n%s", out)
	}
	if u, ok := s.Usage(); !ok || u != (usage.Usage{Prompt: 36, Completion: 87, Cached: 20, Reasoning: 64}) || s.Chunks() != 1 {
		t.Fatalf("usage %+v %v, chunks %d", u, ok, s.Chunks())
	}
}
