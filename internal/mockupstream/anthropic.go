package mockupstream

import (
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// messages answers Anthropic's Messages API, streaming its event sequence:
// message_start, content_block_start, ping, content_block_delta…,
// content_block_stop, message_delta, message_stop.
func (s *Server) messages(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("anthropic-version") == "" {
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", "anthropic-version header is required")
		return
	}
	req, ok := s.decode(w, r, true)
	if !ok {
		return
	}
	words, finish := s.reply(r, req)
	stop := "end_turn"
	if finish == "length" {
		stop = "max_tokens"
	}
	input, output := req.promptTokens(), int64(len(words))
	s.prompt.Add(input)
	s.completion.Add(output)
	id := newID("msg_mock")
	usage := map[string]int64{"input_tokens": input, "output_tokens": output, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
	if !req.Stream {
		writeJSON(w, http.StatusOK, map[string]any{
			"id": id, "type": "message", "role": "assistant", "model": req.Model,
			"content":     []map[string]any{{"type": "text", "text": strings.Join(words, " ")}},
			"stop_reason": stop, "stop_sequence": nil, "usage": usage,
		})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher, _ := w.(http.Flusher)
	event := func(name string, v any) bool {
		b := append([]byte("event: "+name+"\ndata: "), mustJSON(v)...)
		return s.write(w, flusher, append(b, "\n\n"...))
	}
	ok = event("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": id, "type": "message", "role": "assistant", "model": req.Model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil,
		"usage": map[string]int64{"input_tokens": input, "output_tokens": 1, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
	}}) &&
		event("content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}}) &&
		event("ping", map[string]any{"type": "ping"})
	chunkDelay := s.duration(r, "x-mock-chunk-delay-ms", s.opts.ChunkDelay)
	for _, c := range split(words, s.intHeader(r, "x-mock-chunks", s.opts.Chunks)) {
		if !ok {
			break
		}
		if chunkDelay > 0 {
			select {
			case <-time.After(chunkDelay):
			case <-r.Context().Done():
				ok = false
				continue
			}
		}
		ok = event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": c}})
	}
	ok = ok && event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0}) &&
		event("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": stop, "stop_sequence": nil}, "usage": map[string]int64{"output_tokens": output}}) &&
		event("message_stop", map[string]any{"type": "message_stop"})
	if ok {
		s.completed.Add(1)
	} else {
		s.aborted.Add(1)
	}
}

func (s *Server) countTokens(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("anthropic-version") == "" {
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", "anthropic-version header is required")
		return
	}
	req, ok := s.decode(w, r, true)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"input_tokens": req.promptTokens()})
}

func anthropicError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}})
}

func mustJSON(v any) []byte {
	var b strings.Builder
	_ = jsonEncoder(&b).Encode(v)
	return []byte(strings.TrimSuffix(b.String(), "\n"))
}

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) next() int64 { return c.n.Add(1) }
