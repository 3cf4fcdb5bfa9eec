package gateway

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/tollgate/tollgate/internal/usage"
)

// TestNativeUsage: each provider's own usage fields, in a whole answer and
// event by event, become the usage the call is booked with.
func TestNativeUsage(t *testing.T) {
	invocation := base64.StdEncoding.EncodeToString([]byte(`{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":7,"outputTokenCount":9}}`))
	tests := []struct {
		name   string
		read   func(*nativeMeter, []byte)
		events []string
		want   usage.Usage
		ok     bool
	}{
		{"openai chat", (*nativeMeter).openAI, []string{`{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":4}}}`},
			usage.Usage{Prompt: 10, Completion: 20, Cached: 4}, true},
		{"openai responses", (*nativeMeter).openAI, []string{`{"object":"response","usage":{"input_tokens":10,"output_tokens":20,"input_tokens_details":{"cached_tokens":3},"output_tokens_details":{"reasoning_tokens":5}}}`},
			usage.Usage{Prompt: 10, Completion: 20, Cached: 3, Reasoning: 5}, true},
		{"openai responses stream", (*nativeMeter).openAI, []string{`{"type":"response.created","response":{"usage":null}}`, `{"type":"response.output_text.delta","delta":"hi"}`,
			`{"type":"response.completed","response":{"usage":{"input_tokens":8,"output_tokens":2}}}`}, usage.Usage{Prompt: 8, Completion: 2}, true},
		{"openai without usage", (*nativeMeter).openAI, []string{`{"choices":[{"delta":{"content":"hello"}}]}`}, usage.Usage{}, false},
		{"anthropic message", (*nativeMeter).anthropic, []string{`{"type":"message","usage":{"input_tokens":10,"output_tokens":20,"cache_read_input_tokens":5}}`},
			usage.Usage{Prompt: 15, Completion: 20, Cached: 5}, true},
		{"anthropic stream", (*nativeMeter).anthropic, []string{`{"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1,"cache_creation_input_tokens":2}}}`,
			`{"type":"content_block_delta","delta":{"text":"hi"}}`, `{"type":"message_delta","usage":{"output_tokens":30}}`},
			usage.Usage{Prompt: 12, Completion: 30, CacheCreation: 2}, true},
		{"gemini array", (*nativeMeter).gemini, []string{`[{"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":1}},{"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":20,"thoughtsTokenCount":6,"cachedContentTokenCount":2}}]`},
			usage.Usage{Prompt: 10, Completion: 26, Cached: 2, Reasoning: 6}, true},
		{"cohere v1", (*nativeMeter).cohere, []string{`{"text":"hi","meta":{"billed_units":{"input_tokens":10,"output_tokens":20}}}`}, usage.Usage{Prompt: 10, Completion: 20}, true},
		{"cohere v1 stream-end", (*nativeMeter).cohere, []string{`{"event_type":"text-generation","text":"hi"}`, `{"event_type":"stream-end","response":{"meta":{"billed_units":{"input_tokens":4,"output_tokens":5}}}}`},
			usage.Usage{Prompt: 4, Completion: 5}, true},
		{"cohere v2 message-end", (*nativeMeter).cohere, []string{`{"type":"message-end","delta":{"usage":{"billed_units":{"input_tokens":6,"output_tokens":7}}}}`}, usage.Usage{Prompt: 6, Completion: 7}, true},
		{"bedrock converse", (*nativeMeter).bedrock, []string{`{"usage":{"inputTokens":10,"outputTokens":20,"cacheReadInputTokens":4}}`}, usage.Usage{Prompt: 14, Completion: 20, Cached: 4}, true},
		{"bedrock invoke stream", (*nativeMeter).bedrock, []string{`{"bytes":"` + invocation + `"}`}, usage.Usage{Prompt: 7, Completion: 9}, true},
		{"bedrock invoke anthropic", (*nativeMeter).bedrock, []string{`{"type":"message","usage":{"input_tokens":3,"output_tokens":4}}`}, usage.Usage{Prompt: 3, Completion: 4}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &nativeMeter{read: tt.read}
			for _, ev := range tt.events {
				m.read(m, []byte(ev))
			}
			if m.u != tt.want || m.ok != tt.ok {
				t.Fatalf("usage %+v (%v), want %+v (%v)", m.u, m.ok, tt.want, tt.ok)
			}
		})
	}
}

// TestEventLines: a stream split anywhere gives the meter the same JSON
// documents; an overlong line is skipped.
func TestEventLines(t *testing.T) {
	stream := "event: x\ndata: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n" + `{"not":"data","usage":{"prompt_tokens":5,"completion_tokens":6}}` + "\n"
	for cut := 1; cut < len(stream); cut++ {
		var seen []string
		l := &sseLines{limit: 1 << 10, m: &nativeMeter{read: func(_ *nativeMeter, d []byte) { seen = append(seen, string(d)) }}}
		l.feed([]byte(stream[:cut]))
		l.feed([]byte(stream[cut:]))
		if len(seen) != 2 || seen[0] != `{"usage":{"prompt_tokens":3,"completion_tokens":4}}` {
			t.Fatalf("cut at %d: %q", cut, seen)
		}
	}
	var seen int
	l := &sseLines{limit: 16, m: &nativeMeter{read: func(*nativeMeter, []byte) { seen++ }}}
	l.feed([]byte("data: {\"a\":\"a long line over the limit\"}\ndata: {}\n"))
	if seen != 1 {
		t.Fatalf("%d documents, want the short one", seen)
	}
}

// TestEventFrames: AWS's binary event stream, split anywhere, gives the
// meter each frame's JSON payload; a frame over the limit is skipped, and
// so is one whose checksum does not hold.
func TestEventFrames(t *testing.T) {
	frame := func(payload string) []byte {
		var b bytes.Buffer
		var h eventstream.Headers
		h.Set(":event-type", eventstream.StringValue("chunk"))
		if err := eventstream.NewEncoder().Encode(&b, eventstream.Message{Headers: h, Payload: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	stream := append(frame(`{"delta":{"text":"hi"}}`), frame(`{"usage":{"inputTokens":2,"outputTokens":3}}`)...)
	for cut := 1; cut < len(stream); cut++ {
		m := &nativeMeter{read: (*nativeMeter).bedrock}
		f := &eventFrames{limit: 1 << 10, m: m}
		f.feed(stream[:cut])
		f.feed(stream[cut:])
		if !m.ok || m.u != (usage.Usage{Prompt: 2, Completion: 3}) || m.chunks != 1 {
			t.Fatalf("cut at %d: %+v %v, %d chunks", cut, m.u, m.ok, m.chunks)
		}
	}
	big := frame(`{"usage":{"inputTokens":1000000,"outputTokens":1}}`)
	m := &nativeMeter{read: (*nativeMeter).bedrock}
	f := &eventFrames{limit: 40, m: m}
	f.feed(big[:20])
	f.feed(big[20:])
	f.feed(append(big, frame(`{}`)...)) // whole, and followed by another
	if m.ok || m.chunks != 1 {
		t.Fatalf("an oversized frame was read, or the next lost: %+v, %d chunks", m.u, m.chunks)
	}
	bad := frame(`{"usage":{"inputTokens":7,"outputTokens":1}}`)
	bad[len(bad)-1] ^= 0xff
	m = &nativeMeter{read: (*nativeMeter).bedrock}
	(&eventFrames{limit: 1 << 10, m: m}).feed(bad)
	if m.ok {
		t.Fatalf("a frame with a bad checksum was read: %+v", m.u)
	}
}

// FuzzNativeMeter: no answer, whole or cut anywhere into a stream, makes a
// provider's usage reader or the stream splitters panic.
func FuzzNativeMeter(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":1,"completion_tokens":2}}`), 3)
	f.Add([]byte("data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n"), 7)
	f.Add([]byte(`[{"usageMetadata":{"promptTokenCount":1}}]`), 1)
	f.Add([]byte("\x00\x00\x00\x20\x00\x00\x00\x04\x00\x00\x00\x00abcd{\"usage\":{}}\x00\x00\x00\x00"), 9)
	readers := []func(*nativeMeter, []byte){(*nativeMeter).openAI, (*nativeMeter).anthropic, (*nativeMeter).gemini, (*nativeMeter).cohere, (*nativeMeter).bedrock}
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		cut = min(max(cut, 0), len(data))
		for _, read := range readers {
			m := &nativeMeter{read: read}
			m.read(m, data)
			lines := &sseLines{limit: 1 << 10, m: m}
			lines.feed(data[:cut])
			lines.feed(data[cut:])
			frames := &eventFrames{limit: 1 << 10, m: m}
			frames.feed(data[:cut])
			frames.feed(data[cut:])
			var res result
			m.into(&res)
		}
	})
}
