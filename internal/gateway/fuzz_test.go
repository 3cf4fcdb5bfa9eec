package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/translate"
)

// FuzzDecode: any request body is refused with an API error or decoded
// into a request whose upstream body is still one valid JSON object.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":false},"max_tokens":5,"user":"u"}`))
	f.Add([]byte("{\"model\": \"gpt-4\", # comment\n \"max_budget\": 10,}"))
	f.Add([]byte(`{"model":"claude","max_tokens":10,"metadata":{"user_id":"me"},"messages":[]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decode(body, "")
		if err != nil {
			return
		}
		req.anthropicUser()
		for _, ask := range []bool{false, true} {
			up := req.upstreamBody("upstream-model", ask)
			var o map[string]json.RawMessage
			if err := json.Unmarshal(up, &o); err != nil {
				t.Fatalf("upstream body of %q is not a JSON object: %q: %v", body, up, err)
			}
			if string(o["model"]) != `"upstream-model"` {
				t.Fatalf("upstream body of %q names model %s", body, o["model"])
			}
		}
	})
}

// FuzzUsage: usage is read from any whole body or stream event without
// panicking, and never comes out negative from non-negative input.
func FuzzUsage(f *testing.F) {
	for _, ev := range sseStream(2) {
		f.Add(ev)
	}
	f.Add([]byte(`{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":1},"completion_tokens_details":{"reasoning_tokens":2}}}`))
	f.Add([]byte("data: {\"usage\":null}\n\ndata: [DONE]\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = usageFromBody(b)
		_, _, _ = usageFromChunk(b)
		var res result
		_ = observeEvent(b, false, &res)
		_ = observeEvent(b, true, &res)
		if res.chunks < 0 {
			t.Fatalf("negative chunk count from %q", b)
		}
	})
}

// FuzzStreamEvents: the SSE framing reads any upstream byte stream, through
// each event sink (OpenAI passthrough and both translations), without
// panicking, and never passes on an event over its bound.
func FuzzStreamEvents(f *testing.F) {
	var openai bytes.Buffer
	for _, ev := range sseStream(3) {
		openai.Write(ev)
	}
	f.Add(openai.Bytes(), uint8(0))
	f.Add([]byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":3}}}\n\n"+
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n"+
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\nevent: message_stop\ndata: {}\n\n"), uint8(1))
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"t\",\"function\":{\"name\":\"f\",\"arguments\":\"{\"}}]}}]}\r\n\r\n: keep-alive\n\ndata: [DONE]"), uint8(2))
	f.Fuzz(func(t *testing.T, upstream []byte, kind uint8) {
		const maxEvent = 4096
		var res result
		var sink eventSink
		switch kind % 4 {
		case 0:
			sink = openAIEvents{clientUsage: kind&4 != 0, res: &res}
		case 1:
			sink = translated{s: translate.MessagesToChatStream(kind&4 != 0), res: &res}
		case 2:
			sink = translated{s: translate.ChatToMessagesStream("m"), res: &res}
		default:
			sink = translated{s: translate.MessagesPassthrough(), res: &res}
		}
		w := httptest.NewRecorder()
		resp := &http.Response{StatusCode: 200, Body: io.NopCloser(bytes.NewReader(upstream))}
		wd := newWatchdog(time.Hour, func() {})
		defer wd.stop()
		err := streamEvents(w, resp, wd, sink, &res, maxEvent, kind&8 != 0)
		if err != nil && !strings.Contains(err.Error(), "stream event over") {
			t.Fatalf("streamEvents(%q): %v", upstream, err)
		}
		if kind%4 == 0 || kind%4 == 3 {
			// Passed through: no event out is longer than the bound.
			for _, ev := range bytes.Split(w.Body.Bytes(), []byte("\n\n")) {
				if len(ev) > maxEvent+2 {
					t.Fatalf("an event of %d bytes was passed on", len(ev))
				}
			}
		}
	})
}
