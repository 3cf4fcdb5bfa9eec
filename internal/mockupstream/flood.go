package mockupstream

import (
	"io"
	"net/http"
	"strconv"
	"strings"
)

// flood answers with about n bytes generated as they are written, never
// held whole, to test what a gateway does with answers too large to buffer
// (x-mock-flood-bytes: n). x-mock-flood picks the shape: "length" (the
// default) a chat completion of n bytes with its Content-Length, "chunked"
// the same without one, "event" a stream of one content event and then a
// single event line of n bytes (Anthropic events on /messages paths). It
// stops when the client stops reading.
func (s *Server) flood(w http.ResponseWriter, r *http.Request, n int) {
	filler := strings.Repeat("x", 64<<10)
	fill := func(prefix, suffix string) {
		if _, err := io.WriteString(w, prefix); err != nil {
			return
		}
		for left := n - len(prefix) - len(suffix); left > 0; left -= len(filler) {
			if _, err := io.WriteString(w, filler[:min(left, len(filler))]); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, suffix)
	}
	const (
		chatPrefix = `{"id":"chatcmpl-flood","object":"chat.completion","created":0,"model":"flood","choices":[{"index":0,"message":{"role":"assistant","content":"`
		chatSuffix = `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`
	)
	switch r.Header.Get("x-mock-flood") {
	case "", "length":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(max(n, len(chatPrefix)+len(chatSuffix))))
		fill(chatPrefix, chatSuffix)
	case "chunked":
		w.Header().Set("Content-Type", "application/json")
		fill(chatPrefix, chatSuffix)
	case "event":
		w.Header().Set("Content-Type", "text/event-stream")
		if isAnthropic(r.URL.Path) {
			_, _ = io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_flood\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"flood\",\"content\":[],\"usage\":{\"input_tokens\":1,\"output_tokens\":0}}}\n\n"+
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n")
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			fill(`event: content_block_delta`+"\n"+`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`, "\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
			return
		}
		_, _ = io.WriteString(w, `data: {"id":"chatcmpl-flood","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}`+"\n\n")
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		fill(`data: {"id":"chatcmpl-flood","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"`, "\"}}]}\n\ndata: [DONE]\n\n")
	default:
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "x-mock-flood must be length, chunked or event")
	}
}
