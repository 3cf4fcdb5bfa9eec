package mockupstream

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

// registerBedrock adds Amazon Bedrock's Converse API: POST
// /model/{modelId}/converse and /converse-stream (an AWS event stream, each
// frame with its checksums, as AWS's decoder checks them), and InvokeModel
// (/model/{modelId}/invoke) for Titan and Cohere embeddings. A request must
// carry a SigV4 Authorization header; the mock checks its shape, not the
// signature (tests verify that against their own keys).
func (s *Server) registerBedrock() {
	s.mux.HandleFunc("POST /model/{model}/converse", s.converse)
	s.mux.HandleFunc("POST /model/{model}/converse-stream", s.converse)
	s.mux.HandleFunc("POST /model/{model}/invoke", s.bedrockEmbed)
}

// signed reports whether r carries a SigV4 Authorization header, and
// answers as Bedrock does when it does not.
func signed(w http.ResponseWriter, r *http.Request) bool {
	if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "AWS4-HMAC-SHA256 Credential=") && r.Header.Get("X-Amz-Date") != "" {
		return true
	}
	w.Header().Set("x-amzn-ErrorType", "MissingAuthenticationTokenException")
	writeJSON(w, http.StatusForbidden, map[string]string{"message": "Missing Authentication Token"})
	return false
}

// bedrockEmbed answers InvokeModel for the embedding models: Amazon
// Titan's body (one inputText; the embedding and inputTextTokenCount) and
// Cohere's (texts; embeddings, no token count), with deterministic
// vectors.
func (s *Server) bedrockEmbed(w http.ResponseWriter, r *http.Request) {
	if !signed(w, r) {
		return
	}
	var req struct {
		InputText  *string  `json:"inputText"`
		Dimensions int      `json:"dimensions"`
		Texts      []string `json:"texts"`
		InputType  string   `json:"input_type"`
	}
	model := r.PathValue("model")
	if err := json.Unmarshal(body(r), &req); err != nil {
		bedrockError(w, http.StatusBadRequest, "Malformed input request, please reformat your input and try again.")
		return
	}
	vector := func(text string, dims int) []float32 {
		v := make([]float32, dims)
		for j := range v {
			v[j] = float32(math.Sin(float64(len(text)*(j+1)))) / 2
		}
		return v
	}
	switch {
	case strings.Contains(model, "titan-embed") && req.InputText != nil:
		dims := req.Dimensions
		if dims <= 0 {
			dims = 8
		}
		tokens := max(1, int64(len(*req.InputText)/4))
		s.prompt.Add(tokens)
		writeJSON(w, http.StatusOK, map[string]any{"embedding": vector(*req.InputText, dims), "inputTextTokenCount": tokens})
	case strings.Contains(model, "cohere.embed") && len(req.Texts) > 0 && req.InputType != "":
		vecs := make([][]float32, len(req.Texts))
		for i, t := range req.Texts {
			vecs[i] = vector(t, 8)
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": newID("emb_mock"), "embeddings": vecs, "response_type": "embeddings_floats", "texts": req.Texts})
	default:
		bedrockError(w, http.StatusBadRequest, "Malformed input request: the body does not match "+model+"'s schema")
	}
}

func isBedrock(path string) bool {
	return strings.HasPrefix(path, "/model/") && (strings.HasSuffix(path, "/converse") || strings.HasSuffix(path, "/converse-stream") || strings.HasSuffix(path, "/invoke"))
}

// bedrockError answers as Bedrock fails: {"message"} with the exception's
// name in x-amzn-ErrorType.
func bedrockError(w http.ResponseWriter, status int, msg string) {
	name := map[int]string{400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
		408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException", 503: "ServiceUnavailableException"}[status]
	if name == "" {
		name = "InternalServerException"
	}
	w.Header().Set("x-amzn-ErrorType", name+":http://internal.amazon.com/coral/com.amazon.bedrock/")
	writeJSON(w, status, map[string]string{"message": msg})
}

// cvMockRequest is what the mock reads of a Converse request.
type cvMockRequest struct {
	Messages []struct {
		Role    string `json:"role"`
		Content []struct {
			Text       string `json:"text"`
			ToolResult *struct {
				Content []struct {
					Text string `json:"text"`
				} `json:"content"`
			} `json:"toolResult"`
		} `json:"content"`
	} `json:"messages"`
	InferenceConfig struct {
		MaxTokens int64 `json:"maxTokens"`
	} `json:"inferenceConfig"`
	ToolConfig *struct {
		Tools []struct {
			ToolSpec struct {
				Name string `json:"name"`
			} `json:"toolSpec"`
		} `json:"tools"`
	} `json:"toolConfig"`
}

// converse answers Converse and ConverseStream. With tools declared and a
// last turn that is not a tool result, the model calls the first tool with
// {"said": <the user's text>}; otherwise it echoes the last user turn (or
// tool result). Usage is in Converse's fields. x-mock-stream-exception:
// <name> ends a stream after its text with that exception frame.
func (s *Server) converse(w http.ResponseWriter, r *http.Request) {
	if !signed(w, r) {
		return
	}
	var req cvMockRequest
	if err := json.Unmarshal(body(r), &req); err != nil || len(req.Messages) == 0 {
		bedrockError(w, http.StatusBadRequest, "Malformed input request, please reformat your input and try again.")
		return
	}
	said, fromTool := "", false
	last := req.Messages[len(req.Messages)-1]
	for _, c := range last.Content {
		said += c.Text
		if c.ToolResult != nil {
			fromTool = true
			for _, p := range c.ToolResult.Content {
				said += p.Text
			}
		}
	}
	var tool string
	if req.ToolConfig != nil && len(req.ToolConfig.Tools) > 0 && !fromTool {
		tool = req.ToolConfig.Tools[0].ToolSpec.Name
	}
	words, prompt := s.nativeReply(r, said, req.InferenceConfig.MaxTokens)
	stop := "end_turn"
	if m := req.InferenceConfig.MaxTokens; m > 0 && int64(len(words)) >= m {
		stop = "max_tokens"
	}
	toolID := newID("tooluse_mock")
	input := mustJSON(map[string]string{"said": said})
	if tool != "" {
		stop = "tool_use"
	}
	usage := map[string]int64{"inputTokens": prompt, "outputTokens": int64(len(words)), "totalTokens": prompt + int64(len(words))}
	if !strings.HasSuffix(r.URL.Path, "-stream") {
		content := []any{map[string]any{"text": strings.Join(words, " ")}}
		if tool != "" {
			content = []any{map[string]any{"toolUse": map[string]any{"toolUseId": toolID, "name": tool, "input": json.RawMessage(input)}}}
		}
		writeJSON(w, http.StatusOK, map[string]any{"output": map[string]any{"message": map[string]any{"role": "assistant", "content": content}},
			"stopReason": stop, "usage": usage, "metrics": map[string]int64{"latencyMs": 1}})
		return
	}
	w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
	flusher, _ := w.(http.Flusher)
	enc := eventstream.NewEncoder()
	frame := func(name string, v any) []byte {
		var b bytes.Buffer
		var h eventstream.Headers
		h.Set(":message-type", eventstream.StringValue("event"))
		h.Set(":event-type", eventstream.StringValue(name))
		h.Set(":content-type", eventstream.StringValue("application/json"))
		_ = enc.Encode(&b, eventstream.Message{Headers: h, Payload: mustJSON(v)})
		return b.Bytes()
	}
	ok := s.write(w, flusher, frame("messageStart", map[string]string{"role": "assistant"}))
	if ok && tool != "" {
		half := len(input) / 2
		ok = s.write(w, flusher, frame("contentBlockStart", map[string]any{"contentBlockIndex": 0, "start": map[string]any{"toolUse": map[string]string{"toolUseId": toolID, "name": tool}}})) &&
			s.write(w, flusher, frame("contentBlockDelta", map[string]any{"contentBlockIndex": 0, "delta": map[string]any{"toolUse": map[string]string{"input": string(input[:half])}}})) &&
			s.write(w, flusher, frame("contentBlockDelta", map[string]any{"contentBlockIndex": 0, "delta": map[string]any{"toolUse": map[string]string{"input": string(input[half:])}}}))
	} else if ok {
		ok = s.events(w, r, words, func(piece string, _ int) []byte {
			return frame("contentBlockDelta", map[string]any{"contentBlockIndex": 0, "delta": map[string]string{"text": piece}})
		})
	}
	if name := r.Header.Get("x-mock-stream-exception"); ok && name != "" {
		// The stream breaks off with an exception frame, as Bedrock's do
		// when throttled or failing mid-answer.
		var b bytes.Buffer
		var h eventstream.Headers
		h.Set(":message-type", eventstream.StringValue("exception"))
		h.Set(":exception-type", eventstream.StringValue(name))
		h.Set(":content-type", eventstream.StringValue("application/json"))
		_ = enc.Encode(&b, eventstream.Message{Headers: h, Payload: mustJSON(map[string]string{"message": "mock " + name})})
		s.count(s.write(w, flusher, b.Bytes()))
		return
	}
	ok = ok && s.write(w, flusher, frame("contentBlockStop", map[string]any{"contentBlockIndex": 0})) &&
		s.write(w, flusher, frame("messageStop", map[string]any{"stopReason": stop})) &&
		s.write(w, flusher, frame("metadata", map[string]any{"usage": usage, "metrics": map[string]int64{"latencyMs": 1}}))
	s.count(ok)
}
