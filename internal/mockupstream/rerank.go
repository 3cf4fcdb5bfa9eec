package mockupstream

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
)

// registerRerank adds moderations (OpenAI's shape) and rerank (Cohere's v2
// shape, which vLLM and Jina share) to the mock.
func (s *Server) registerRerank() {
	for _, p := range []string{"/v1", "/v2", ""} {
		s.mux.HandleFunc("POST "+p+"/rerank", s.rerank)
	}
	s.mux.HandleFunc("POST /v1/moderations", s.moderations)
	s.mux.HandleFunc("POST /moderations", s.moderations)
}

// rerank scores each document by the words it shares with the query,
// answers the top_n best (all without it), and bills one search unit per
// hundred documents in Cohere's meta.billed_units, with the prompt tokens
// (query and documents at four bytes a token) in usage as vLLM reports them.
func (s *Server) rerank(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model           string            `json:"model"`
		Query           string            `json:"query"`
		Documents       []json.RawMessage `json:"documents"`
		TopN            int               `json:"top_n"`
		ReturnDocuments bool              `json:"return_documents"`
	}
	if err := json.Unmarshal(body(r), &req); err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "malformed JSON: "+err.Error())
		return
	}
	if req.Query == "" || len(req.Documents) == 0 {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "query and documents are required")
		return
	}
	words := strings.Fields(strings.ToLower(req.Query))
	type result struct {
		Index          int            `json:"index"`
		RelevanceScore float64        `json:"relevance_score"`
		Document       map[string]any `json:"document,omitempty"`
	}
	results := make([]result, len(req.Documents))
	size := len(req.Query)
	for i, raw := range req.Documents {
		var text string
		if json.Unmarshal(raw, &text) != nil {
			var d struct {
				Text string `json:"text"`
			}
			_ = json.Unmarshal(raw, &d)
			text = d.Text
		}
		size += len(text)
		shared := 0
		lower := strings.ToLower(text)
		for _, wd := range words {
			if strings.Contains(lower, wd) {
				shared++
			}
		}
		results[i] = result{Index: i, RelevanceScore: float64(shared+1) / float64(len(words)+1)}
		if req.ReturnDocuments {
			results[i].Document = map[string]any{"text": text}
		}
	}
	sort.SliceStable(results, func(a, b int) bool { return results[a].RelevanceScore > results[b].RelevanceScore })
	if req.TopN > 0 && req.TopN < len(results) {
		results = results[:req.TopN]
	}
	tokens := int64(max(size/4, 1)) // reported, not counted: Cohere bills search units
	units := (len(req.Documents) + 99) / 100
	writeJSON(w, http.StatusOK, map[string]any{
		"id": newID("rerank-"), "model": req.Model, "results": results,
		"meta":  map[string]any{"api_version": map[string]string{"version": "2"}, "billed_units": map[string]int{"search_units": units}},
		"usage": map[string]int64{"prompt_tokens": tokens, "total_tokens": tokens},
	})
}

// moderations flags an input that mentions violence, one result per input.
func (s *Server) moderations(w http.ResponseWriter, r *http.Request) {
	req, ok := s.decode(w, r, false)
	if !ok {
		return
	}
	var inputs []string
	if json.Unmarshal(req.Input, &inputs) != nil {
		var one string
		if json.Unmarshal(req.Input, &one) != nil {
			openAIError(w, http.StatusBadRequest, "invalid_request_error", "input must be a string or an array of strings")
			return
		}
		inputs = []string{one}
	}
	model := req.Model
	if model == "" {
		model = "omni-moderation-latest"
	}
	results := make([]map[string]any, len(inputs))
	for i, in := range inputs {
		violent := strings.Contains(strings.ToLower(in), "violence")
		score := 0.001
		if violent {
			score = 0.97
		}
		results[i] = map[string]any{
			"flagged":         violent,
			"categories":      map[string]bool{"violence": violent, "hate": false, "harassment": false, "self-harm": false, "sexual": false},
			"category_scores": map[string]float64{"violence": score, "hate": 0.0001, "harassment": 0.0001, "self-harm": 0.0001, "sexual": 0.0001},
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": newID("modr-"), "model": model, "results": results})
}
