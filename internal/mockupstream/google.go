package mockupstream

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// vertexAnthropic answers Vertex AI's rawPredict and streamRawPredict for
// Anthropic's models: the Messages API, with a bearer token, the model in
// the path and anthropic_version (vertex-2023-10-16) in the body, which
// must not name a model.
func (s *Server) vertexAnthropic(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		anthropicError(w, http.StatusUnauthorized, "authentication_error", "request is missing a valid access token")
		return
	}
	model, action, _ := strings.Cut(r.PathValue("call"), ":")
	if action != "rawPredict" && action != "streamRawPredict" {
		anthropicError(w, http.StatusNotFound, "not_found_error", "unknown Vertex AI method "+action)
		return
	}
	var b struct {
		Version string          `json:"anthropic_version"`
		Model   json.RawMessage `json:"model"`
	}
	if err := json.Unmarshal(body(r), &b); err != nil || b.Version != "vertex-2023-10-16" || b.Model != nil {
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", "the body needs anthropic_version vertex-2023-10-16 and no model")
		return
	}
	r.Header.Set("anthropic-version", b.Version)
	r.SetPathValue("deployment", model)
	s.messages(w, r)
}

// geminiEmbed answers the Gemini API's batchEmbedContents for model: a
// vector per request (from its text's bytes), and, as the Gemini API, no
// usage. Each request must name the model of the path.
func (s *Server) geminiEmbed(w http.ResponseWriter, r *http.Request, model string) {
	var req struct {
		Requests []struct {
			Model   string `json:"model"`
			Content struct {
				Parts []struct {
					Text string `json:"text"`
				} `json:"parts"`
			} `json:"content"`
		} `json:"requests"`
	}
	if err := json.Unmarshal(body(r), &req); err != nil || len(req.Requests) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{"code": 400, "message": "requests must be a non-empty list", "status": "INVALID_ARGUMENT"}})
		return
	}
	out := make([]any, len(req.Requests))
	for i, q := range req.Requests {
		if q.Model != "models/"+model {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{"code": 400,
				"message": "Model names must match: " + q.Model + " in request " + strconv.Itoa(i) + ", models/" + model + " in the path", "status": "INVALID_ARGUMENT"}})
			return
		}
		v := make([]float64, 4)
		for _, p := range q.Content.Parts {
			for j := range p.Text {
				v[j%4] += float64(p.Text[j]) / 1000
			}
			s.prompt.Add(max(1, int64(len(p.Text)/4)))
		}
		out[i] = map[string]any{"values": v}
	}
	writeJSON(w, http.StatusOK, map[string]any{"embeddings": out})
}
