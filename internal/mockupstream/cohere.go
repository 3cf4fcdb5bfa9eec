package mockupstream

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/tollgate/tollgate/internal/echo"
)

// cohereAuthorized refuses, as Cohere does, a request without a bearer key.
func cohereAuthorized(w http.ResponseWriter, r *http.Request) bool {
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "no api key supplied"})
		return false
	}
	return true
}

// cohereChat answers Cohere's v2 chat, whole or streamed, with
// usage.billed_units. A request with tools whose last message is the
// user's gets a call of its first tool (tool_plan, tool_calls; streamed as
// tool-call-start, tool-call-delta, tool-call-end); else the user's words
// come back (content-start, content-delta…, content-end). A stream opens
// with message-start and closes with message-end, which holds the usage.
func (s *Server) cohereChat(w http.ResponseWriter, r *http.Request) {
	if !cohereAuthorized(w, r) {
		return
	}
	var req struct {
		Model    string `json:"model"`
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		Tools []struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		} `json:"tools"`
		Stream    bool  `json:"stream"`
		MaxTokens int64 `json:"max_tokens"`
	}
	if err := json.Unmarshal(body(r), &req); err != nil || len(req.Messages) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "invalid request: messages must be a non-empty list"})
		return
	}
	said := ""
	for _, m := range req.Messages {
		if m.Role == "user" {
			said = echo.Text(m.Content)
		}
	}
	words, prompt := s.nativeReply(r, said, req.MaxTokens)
	tool := ""
	if len(req.Tools) > 0 && req.Messages[len(req.Messages)-1].Role == "user" {
		tool = req.Tools[0].Function.Name
	}
	id := newID("co_mock")
	billed := func(out int) map[string]any {
		u := map[string]int64{"input_tokens": prompt, "output_tokens": int64(out)}
		return map[string]any{"billed_units": u, "tokens": u}
	}
	finish := "COMPLETE"
	if tool != "" {
		finish = "TOOL_CALL"
	}
	callID := id + "_call"
	args := string(mustJSON(map[string]string{"q": said}))
	if !req.Stream {
		msg := map[string]any{"role": "assistant", "content": []any{map[string]any{"type": "text", "text": strings.Join(words, " ")}}}
		if tool != "" {
			msg = map[string]any{"role": "assistant", "tool_plan": "I will call " + tool + ".",
				"tool_calls": []any{map[string]any{"id": callID, "type": "function", "function": map[string]string{"name": tool, "arguments": args}}}}
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "finish_reason": finish, "message": msg, "usage": billed(len(words))})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	flusher, _ := w.(http.Flusher)
	event := func(name string, v map[string]any) []byte {
		v["type"] = name
		return append(append([]byte("event: "+name+"\ndata: "), mustJSON(v)...), "\n\n"...)
	}
	delta := func(m map[string]any) map[string]any { return map[string]any{"message": m} }
	argsDelta := func(piece string) []byte {
		return event("tool-call-delta", map[string]any{"index": 0, "delta": delta(map[string]any{"tool_calls": map[string]any{"function": map[string]string{"arguments": piece}}})})
	}
	ok := s.write(w, flusher, event("message-start", map[string]any{"id": id, "delta": delta(map[string]any{"role": "assistant"})}))
	if tool != "" {
		ok = ok && s.write(w, flusher, event("tool-call-start", map[string]any{"index": 0, "delta": delta(map[string]any{"tool_calls": map[string]any{
			"id": callID, "type": "function", "function": map[string]string{"name": tool, "arguments": ""}}})})) &&
			s.write(w, flusher, argsDelta(args[:len(args)/2])) && s.write(w, flusher, argsDelta(args[len(args)/2:])) &&
			s.write(w, flusher, event("tool-call-end", map[string]any{"index": 0}))
	} else {
		ok = ok && s.write(w, flusher, event("content-start", map[string]any{"index": 0, "delta": delta(map[string]any{"content": map[string]string{"type": "text", "text": ""}})})) &&
			s.events(w, r, words, func(piece string, _ int) []byte {
				return event("content-delta", map[string]any{"index": 0, "delta": delta(map[string]any{"content": map[string]string{"text": piece}})})
			}) &&
			s.write(w, flusher, event("content-end", map[string]any{"index": 0}))
	}
	ok = ok && s.write(w, flusher, event("message-end", map[string]any{"delta": map[string]any{"finish_reason": finish, "usage": billed(len(words))}}))
	s.count(ok)
}

// cohereEmbed answers Cohere's v2 embed: a float vector per text (from the
// text's bytes, so equal texts embed equally) and the texts' tokens as
// meta.billed_units.input_tokens. Embed v3 models need an input_type.
func (s *Server) cohereEmbed(w http.ResponseWriter, r *http.Request) {
	if !cohereAuthorized(w, r) {
		return
	}
	var req struct {
		Model          string   `json:"model"`
		Texts          []string `json:"texts"`
		InputType      string   `json:"input_type"`
		EmbeddingTypes []string `json:"embedding_types"`
	}
	if err := json.Unmarshal(body(r), &req); err != nil || len(req.Texts) == 0 || req.InputType == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "invalid request: texts and input_type are required"})
		return
	}
	var tokens int64
	vectors := make([][]float64, len(req.Texts))
	for i, t := range req.Texts {
		tokens += max(1, int64(len(t)/4))
		v := make([]float64, 4)
		for j := range t {
			v[j%4] += float64(t[j]) / 1000
		}
		vectors[i] = v
	}
	s.prompt.Add(tokens)
	writeJSON(w, http.StatusOK, map[string]any{"id": newID("co_embed"), "texts": req.Texts, "response_type": "embeddings_by_type",
		"embeddings": map[string]any{"float": vectors},
		"meta":       map[string]any{"api_version": map[string]string{"version": "2"}, "billed_units": map[string]int64{"input_tokens": tokens}}})
}
