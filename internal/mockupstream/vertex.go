package mockupstream

import (
	"encoding/json"
	"net/http"
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
