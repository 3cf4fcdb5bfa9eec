package translate

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzRequests: a client's request body of either API is refused or
// becomes a valid JSON request in the other.
func FuzzRequests(f *testing.F) {
	f.Add([]byte(`{"model":"claude","max_tokens":50,"stop":"END","user":"u","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"What?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBOR"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"q\":1}"}}]},{"role":"tool","tool_call_id":"c1","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"required"}`))
	f.Add([]byte(`{"model":"gpt","max_tokens":100,"system":[{"type":"text","text":"Be brief."}],"stop_sequences":["END"],"metadata":{"user_id":"u-7"},"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"ok"}]}]}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"f"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if out, err := ChatToMessages(body, "claude"); err == nil && !json.Valid(out) {
			t.Fatalf("ChatToMessages(%q) = %q, not JSON", body, out)
		}
		if out, err := MessagesToChat(body, "gpt"); err == nil && !json.Valid(out) {
			t.Fatalf("MessagesToChat(%q) = %q, not JSON", body, out)
		}
		if out, err := ResponsesToChat(body, "gpt"); err == nil && !json.Valid(out) {
			t.Fatalf("ResponsesToChat(%q) = %q, not JSON", body, out)
		}
	})
}

// FuzzResponses: an upstream's whole answer or error body of either API
// is refused or becomes valid JSON in the other, usage never negative from
// non-negative counts.
func FuzzResponses(f *testing.F) {
	f.Add([]byte(`{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"Hi"},{"type":"tool_use","id":"t","name":"f","input":{}}],"stop_reason":"tool_use","usage":{"input_tokens":3,"output_tokens":2,"cache_read_input_tokens":1,"cache_creation_input_tokens":1}}`), 200)
	f.Add([]byte(`{"id":"chatcmpl-1","object":"chat.completion","model":"gpt","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}`), 200)
	f.Add([]byte(`{"type":"error","error":{"type":"overloaded_error","message":"busy"}}`), 529)
	f.Add([]byte(`{"model":"gpt","instructions":"x","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"ok"}],"tools":[{"type":"function","name":"f"}],"text":{"format":{"type":"json_schema","name":"n","schema":{}}}}`), 200)
	f.Add([]byte(`{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded"}}`), 429)
	f.Fuzz(func(t *testing.T, body []byte, status int) {
		if out, _, err := MessageToCompletion(body); err == nil && !json.Valid(out) {
			t.Fatalf("MessageToCompletion(%q) = %q, not JSON", body, out)
		}
		if out, _, err := CompletionToMessage(body); err == nil && !json.Valid(out) {
			t.Fatalf("CompletionToMessage(%q) = %q, not JSON", body, out)
		}
		if out, _, err := ChatToResponse(body, body); err == nil && !json.Valid(out) {
			t.Fatalf("ChatToResponse(%q) = %q, not JSON", body, out)
		}
		_, _ = MessageUsage(body)
		_ = AnthropicErrorType(status)
		if out := ErrorToAnthropic(status, body); !json.Valid(out) {
			t.Fatalf("ErrorToAnthropic(%d, %q) = %q, not JSON", status, body, out)
		}
		if out := ErrorToOpenAI(status, body); !json.Valid(out) {
			t.Fatalf("ErrorToOpenAI(%d, %q) = %q, not JSON", status, body, out)
		}
	})
}

// FuzzStreams: any sequence of upstream events goes through each stream
// translator without panicking, and what a translator writes is SSE whose
// data lines are JSON (or [DONE]).
func FuzzStreams(f *testing.F) {
	f.Add([]byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":3}}}\n\n" +
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\"}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\"}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":1}}\n\n" +
		"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"))
	f.Add([]byte("data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n" +
		"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		for i, s := range []Stream{MessagesToChatStream(true), MessagesToChatStream(false), ChatToMessagesStream("m"), MessagesPassthrough()} {
			var out []byte
			for _, ev := range bytes.SplitAfter(in, []byte("\n\n")) {
				out = s.Event(ev, out)
			}
			out = s.End(out)
			_, _ = s.Usage()
			if s.Chunks() < 0 {
				t.Fatalf("stream %d: negative chunks", i)
			}
			if i == 3 {
				continue // passthrough: the upstream's bytes as they came
			}
			for _, line := range bytes.Split(out, []byte("\n")) {
				if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok && string(d) != "[DONE]" && !json.Valid(d) {
					t.Fatalf("stream %d wrote a data line that is not JSON: %q (from %q)", i, line, in)
				}
			}
		}
	})
}
