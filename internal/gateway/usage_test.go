package gateway

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/usage"
)

// sseStream is an OpenAI chat stream as the gateway reads it: n content
// events, the usage-only event that stream_options.include_usage adds, and
// [DONE].
func sseStream(n int) [][]byte {
	var events [][]byte
	for i := range n {
		events = append(events, fmt.Appendf(nil, `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"word%d "},"finish_reason":null}]}`+"\n\n", i))
	}
	events = append(events,
		[]byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":20,"total_tokens":32,"prompt_tokens_details":{"cached_tokens":4}}}`+"\n\n"),
		[]byte("data: [DONE]\n\n"))
	return events
}

func TestObserveEventReadsStreamUsage(t *testing.T) {
	for _, clientAsked := range []bool{false, true} {
		var res result
		passed := 0
		for _, ev := range sseStream(20) {
			if observeEvent(ev, clientAsked, &res) {
				passed++
			}
		}
		if !res.hasUsage || res.usage != (usage.Usage{Prompt: 12, Completion: 20, Cached: 4}) || res.chunks != 20 {
			t.Fatalf("client asked %v: usage %+v (found %v), chunks %d", clientAsked, res.usage, res.hasUsage, res.chunks)
		}
		// The usage-only event reaches only a client that asked for it.
		if want := 21 + map[bool]int{false: 0, true: 1}[clientAsked]; passed != want {
			t.Fatalf("client asked %v: %d events passed on, want %d", clientAsked, passed, want)
		}
	}
}

func TestUsageFromBody(t *testing.T) {
	body := []byte(`{"id":"x","choices":[{"message":{"content":"usage"}}],"usage":{"prompt_tokens":7,"completion_tokens":3,"completion_tokens_details":{"reasoning_tokens":2}}}`)
	u, ok, err := usageFromBody(body)
	if !ok || err != nil || u != (usage.Usage{Prompt: 7, Completion: 3, Reasoning: 2}) {
		t.Fatalf("got %+v %v %v", u, ok, err)
	}
	if _, ok, err := usageFromBody(bytes.TrimSuffix(body, []byte("}"))); ok || err == nil {
		t.Fatal("usage read from a truncated body")
	}
}

// BenchmarkStreamUsage is the per-stream cost of counting chunks and
// reading usage from a 20-chunk stream.
func BenchmarkStreamUsage(b *testing.B) {
	events := sseStream(20)
	b.ReportAllocs()
	for b.Loop() {
		var res result
		for _, ev := range events {
			observeEvent(ev, false, &res)
		}
		if !res.hasUsage {
			b.Fatal("no usage")
		}
	}
}

// BenchmarkUsageFromBody reads usage from a non-streaming response.
func BenchmarkUsageFromBody(b *testing.B) {
	body := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, _ := usageFromBody(body); !ok {
			b.Fatal("no usage")
		}
	}
}

// BenchmarkAnswerOf is reading the usage and id of every whole answer.
func BenchmarkAnswerOf(b *testing.B) {
	body := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, id, ok, err := answerOf(body); !ok || err != nil || id != "chatcmpl-1" {
			b.Fatal("no usage or id")
		}
	}
}

func TestGeneratedBytes(t *testing.T) {
	tests := []struct {
		name, chunk string
		want        int64
	}{
		{"content", `{"choices":[{"index":0,"delta":{"content":"Hello there"}}]}`, 11},
		{"escaped quote", `{"choices":[{"delta":{"content":"say \"hi\""}}]}`, 10},
		{"completion text", `{"choices":[{"text":"abc","index":0}]}`, 3},
		{"tool call arguments", `{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}`, 10},
		{"reasoning and content", `{"choices":[{"delta":{"reasoning_content":"think","content":"ok"}}]}`, 7},
		{"role only", `{"choices":[{"delta":{"role":"assistant","content":""}}]}`, 0},
		{"truncated", `{"choices":[{"delta":{"content":"abc`, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := generatedBytes([]byte(tt.chunk)); got != tt.want {
				t.Fatalf("generatedBytes = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestPromptBound(t *testing.T) {
	tests := []struct {
		name, body, model string
		maxInput          int64
		want              int64
	}{
		{"text", `{"messages":[{"role":"user","content":"hi"}]}`, "gpt-4o", 128000, 45},
		{"openai image", `{"messages":[{"content":[{"type":"image_url","image_url":{"url":"u"}}]}]}`, "gpt-4o", 128000, 73 + imageTokenCeiling},
		{"mini image", `{"image_url":{"url":"u"}}`, "gpt-4o-mini", 128000, 25 + miniImageTokenCeiling},
		{"spaced anthropic image", `{"type": "image", "source": {}}`, "claude", 200000, 31 + imageTokenCeiling},
		{"tools", `{"tools":[]}`, "gpt-4o", 128000, 12 + toolPromptCeiling},
		{"file by id", `{"file":{"file_id":"f"}}`, "gpt-4o", 128000, 128000},
		{"document, context unknown", `{"type" : "document"}`, "x", 0, referenceCeiling},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := promptBound([]byte(tt.body), tt.model, tt.maxInput); got != tt.want {
				t.Fatalf("promptBound = %d, want %d", got, tt.want)
			}
		})
	}
}

// BenchmarkPromptBound is the hold's prompt bound on a 4 KB chat body.
func BenchmarkPromptBound(b *testing.B) {
	body := []byte(`{"model":"gpt-4o","messages":[` + strings.Repeat(`{"role":"user","content":[{"type":"text","text":"`+strings.Repeat("lorem ipsum ", 8)+`"}]},`, 30) + `{"role":"user","content":"hi"}]}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		promptBound(body, "gpt-4o", 128000)
	}
}

// TestReadLimited: whole upstream bodies are read up to the limit, with or
// without a declared length, and refused past it.
func TestReadLimited(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 10<<20)
	tests := []struct {
		name            string
		n               int
		declared, limit int64
		tooLarge        bool
	}{
		{"empty", 0, 0, 100, false},
		{"declared, at the limit", 100, 100, 100, false},
		{"declared, over the limit", 101, 101, 100, true},
		{"undeclared, at the limit", 100, -1, 100, false},
		{"undeclared, over the limit", 101, -1, 100, true},
		{"undeclared, many chunks", 9 << 20, -1, 10 << 20, false},
		{"undeclared, many chunks, over", 10 << 20, -1, 9 << 20, true},
		{"declared large", 6 << 20, 6 << 20, 10 << 20, false},
		{"no limit", 10 << 20, -1, 0, false},
	}
	for _, tt := range tests {
		got, err := readLimited(bytes.NewReader(big[:tt.n]), tt.declared, tt.limit)
		switch {
		case tt.tooLarge && err != errTooLarge:
			t.Errorf("%s: err %v, want errTooLarge", tt.name, err)
		case !tt.tooLarge && (err != nil || !bytes.Equal(got, big[:tt.n])):
			t.Errorf("%s: %d bytes, err %v; want the %d bytes", tt.name, len(got), err, tt.n)
		}
	}
}
