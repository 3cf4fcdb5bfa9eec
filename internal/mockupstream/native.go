package mockupstream

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/echo"
)

// registerNative adds the providers' own APIs that the gateway's
// pass-through routes forward to: Gemini's generateContent and
// streamGenerateContent, and Cohere's v2 chat and embed (cohere.go; its v2
// rerank is rerank.go's),
// each with its usage in the provider's own fields.
func (s *Server) registerNative() {
	for _, v := range []string{"/v1beta", "/v1"} {
		s.mux.HandleFunc("POST "+v+"/models/{call}", s.gemini)
	}
	// Vertex AI's path for Google's models: the same body and answers.
	s.mux.HandleFunc("POST /v1/projects/{project}/locations/{location}/publishers/google/models/{call}", s.gemini)
	s.mux.HandleFunc("POST /v1/projects/{project}/locations/{location}/publishers/anthropic/models/{call}", s.vertexAnthropic)
	s.mux.HandleFunc("POST /v2/chat", s.cohereChat)
	s.mux.HandleFunc("POST /v2/embed", s.cohereEmbed)
}

// nativeReply is the words of an answer to said, at most limit of them
// (0: no limit), and the prompt's token count.
func (s *Server) nativeReply(r *http.Request, said string, limit int64) (words []string, prompt int64) {
	words = echo.Words(said)
	if n := s.intHeader(r, "x-mock-completion-tokens", 0); n > 0 {
		for len(words) < n {
			words = append(words, "lorem")
		}
		words = words[:n]
	}
	if limit > 0 && int64(len(words)) > limit {
		words = words[:limit]
	}
	prompt = max(1, int64(len(said)/4))
	s.prompt.Add(prompt)
	s.completion.Add(int64(len(words)))
	return words, prompt
}

// events streams chunks (built by event for each piece of text, and the
// text so far), paced by x-mock-chunk-delay-ms; it reports whether the
// client took them all.
func (s *Server) events(w http.ResponseWriter, r *http.Request, words []string, event func(piece string, sofar int) []byte) bool {
	flusher, _ := w.(http.Flusher)
	delay := s.duration(r, "x-mock-chunk-delay-ms", s.opts.ChunkDelay)
	sofar := 0
	for _, c := range split(words, s.intHeader(r, "x-mock-chunks", s.opts.Chunks)) {
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return false
			}
		}
		sofar += len(strings.Fields(c))
		if !s.write(w, flusher, event(c, sofar)) {
			return false
		}
	}
	return true
}

// gemini answers POST /v1beta/models/{model}:generateContent (and Vertex
// AI's publishers/google/models/{model}:generateContent) and
// :streamGenerateContent (server-sent events with ?alt=sse, else a JSON
// array of chunks); every chunk carries usageMetadata so far.
func (s *Server) gemini(w http.ResponseWriter, r *http.Request) {
	// AI Studio takes a key (x-goog-api-key or ?key=), Vertex AI a bearer
	// token: a request with neither is refused as Google refuses it.
	if r.Header.Get("x-goog-api-key") == "" && r.URL.Query().Get("key") == "" && !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]any{"code": 401,
			"message": "Method doesn't allow unregistered callers. Please use API Key or other form of API consumer identity to call this API.", "status": "UNAUTHENTICATED"}})
		return
	}
	model, action, _ := strings.Cut(r.PathValue("call"), ":")
	if action == "batchEmbedContents" {
		s.geminiEmbed(w, r, model)
		return
	}
	if action != "generateContent" && action != "streamGenerateContent" {
		openAIError(w, http.StatusNotFound, "invalid_request_error", "unknown Gemini method "+action)
		return
	}
	var req struct {
		Contents []struct {
			Parts []struct {
				Text string `json:"text"`
			} `json:"parts"`
		} `json:"contents"`
		GenerationConfig struct {
			MaxOutputTokens int64 `json:"maxOutputTokens"`
		} `json:"generationConfig"`
	}
	if err := json.Unmarshal(body(r), &req); err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "malformed JSON: "+err.Error())
		return
	}
	var said []string
	for _, c := range req.Contents {
		for _, p := range c.Parts {
			said = append(said, p.Text)
		}
	}
	words, prompt := s.nativeReply(r, strings.Join(said, " "), req.GenerationConfig.MaxOutputTokens)
	chunk := func(text string, out int) map[string]any {
		return map[string]any{
			"candidates":    []any{map[string]any{"content": map[string]any{"role": "model", "parts": []any{map[string]any{"text": text}}}, "index": 0}},
			"usageMetadata": map[string]int64{"promptTokenCount": prompt, "candidatesTokenCount": int64(out), "totalTokenCount": prompt + int64(out)},
			"modelVersion":  model,
		}
	}
	switch {
	case action == "generateContent":
		c := chunk(strings.Join(words, " "), len(words))
		c["candidates"].([]any)[0].(map[string]any)["finishReason"] = "STOP"
		writeJSON(w, http.StatusOK, c)
	case r.URL.Query().Get("alt") == "sse":
		w.Header().Set("Content-Type", "text/event-stream")
		s.count(s.events(w, r, words, func(piece string, sofar int) []byte {
			return append(append([]byte("data: "), mustJSON(chunk(piece, sofar))...), "\n\n"...)
		}))
	default:
		var all []any
		sofar := 0
		for _, c := range split(words, s.intHeader(r, "x-mock-chunks", s.opts.Chunks)) {
			sofar += len(strings.Fields(c))
			all = append(all, chunk(c, sofar))
		}
		writeJSON(w, http.StatusOK, all)
	}
}

// count records a stream as completed or aborted.
func (s *Server) count(completed bool) {
	if completed {
		s.completed.Add(1)
	} else {
		s.aborted.Add(1)
	}
}
