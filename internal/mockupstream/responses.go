package mockupstream

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/echo"
)

// The Responses API, as OpenAI serves it (/v1/responses) and as Azure does
// (/openai/responses?api-version=...): answers echo the last user text like
// chat's, streams send the API's event sequence with the usage in
// response.completed, and responses are kept (up to maxStored) for GET,
// DELETE and input_items. A previous_response_id the mock does not hold is
// refused as OpenAI refuses it.

// maxStored bounds the responses kept; past it the oldest are dropped.
const maxStored = 10000

type storedResponse struct {
	response []byte
	input    []map[string]any
}

type responseStore struct {
	mu    sync.Mutex
	m     map[string]storedResponse
	order []string
}

func (rs *responseStore) put(id string, v storedResponse) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.m == nil {
		rs.m = map[string]storedResponse{}
	}
	if len(rs.order) >= maxStored {
		delete(rs.m, rs.order[0])
		rs.order = rs.order[1:]
	}
	rs.m[id] = v
	rs.order = append(rs.order, id)
}

func (rs *responseStore) get(id string) (storedResponse, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	v, ok := rs.m[id]
	return v, ok
}

func (rs *responseStore) remove(id string) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	_, ok := rs.m[id]
	delete(rs.m, id)
	return ok
}

// registerResponses mounts the Responses routes.
func (s *Server) registerResponses() {
	for _, p := range []string{"/v1", ""} {
		s.mux.HandleFunc("POST "+p+"/responses", s.responses)
		s.mux.HandleFunc("GET "+p+"/responses/{id}", s.getResponse)
		s.mux.HandleFunc("DELETE "+p+"/responses/{id}", s.deleteResponse)
		s.mux.HandleFunc("GET "+p+"/responses/{id}/input_items", s.inputItems)
	}
	s.mux.HandleFunc("POST /openai/responses", s.azure(s.responses))
	s.mux.HandleFunc("GET /openai/responses/{id}", s.azure(s.getResponse))
	s.mux.HandleFunc("DELETE /openai/responses/{id}", s.azure(s.deleteResponse))
	s.mux.HandleFunc("GET /openai/responses/{id}/input_items", s.azure(s.inputItems))
}

type responsesRequest struct {
	Model              string          `json:"model"`
	Input              json.RawMessage `json:"input"`
	Instructions       string          `json:"instructions"`
	Stream             bool            `json:"stream"`
	MaxOutputTokens    *int64          `json:"max_output_tokens"`
	PreviousResponseID string          `json:"previous_response_id"`
	Store              *bool           `json:"store"`
}

// inputItems is the input as a list of message items.
func (r *responsesRequest) items() []map[string]any {
	var s string
	if json.Unmarshal(r.Input, &s) == nil {
		return []map[string]any{{"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": s}}}}
	}
	var items []map[string]any
	_ = json.Unmarshal(r.Input, &items)
	return items
}

// lastUserText is the text of the last user message of the input.
func (r *responsesRequest) lastUserText() string {
	var s string
	if json.Unmarshal(r.Input, &s) == nil {
		return s
	}
	var items []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(r.Input, &items)
	for i := len(items) - 1; i >= 0; i-- {
		if items[i].Role == "user" {
			return echo.Text(items[i].Content)
		}
	}
	return ""
}

func (s *Server) responses(w http.ResponseWriter, r *http.Request) {
	var req responsesRequest
	if err := json.Unmarshal(body(r), &req); err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "malformed JSON: "+err.Error())
		return
	}
	if s.opts.Model != "" {
		req.Model = s.opts.Model
	}
	if p := req.PreviousResponseID; p != "" {
		if _, ok := s.stored.get(p); !ok {
			openAIError(w, http.StatusBadRequest, "invalid_request_error", "Previous response with id '"+p+"' not found.")
			return
		}
	}
	text := req.lastUserText()
	words := echo.Words(text)
	if n := s.intHeader(r, "x-mock-completion-tokens", 0); n > 0 {
		for len(words) < n {
			words = append(words, "lorem")
		}
		words = words[:n]
	}
	status := "completed"
	var incomplete any
	if m := req.MaxOutputTokens; m != nil && *m > 0 && int64(len(words)) > *m {
		words, status, incomplete = words[:*m], "incomplete", map[string]string{"reason": "max_output_tokens"}
	}
	prompt := max(1, int64((len(text)+len(req.Instructions))/4))
	completion := int64(len(words))
	s.prompt.Add(prompt)
	s.completion.Add(completion)
	id, msgID, created := newID("resp_mock"), newID("msg_mock"), time.Now().Unix()
	content := strings.Join(words, " ")
	resp := map[string]any{
		"id": id, "object": "response", "created_at": created, "status": "in_progress", "error": nil,
		"incomplete_details": nil, "instructions": nilIfEmpty(req.Instructions), "max_output_tokens": req.MaxOutputTokens,
		"model": req.Model, "output": []any{}, "parallel_tool_calls": true, "previous_response_id": nilIfEmpty(req.PreviousResponseID),
		"store": req.Store == nil || *req.Store, "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": []any{},
		"text": map[string]any{"format": map[string]string{"type": "text"}}, "truncation": "disabled", "usage": nil, "metadata": map[string]any{},
	}
	part := map[string]any{"type": "output_text", "text": content, "annotations": []any{}}
	item := map[string]any{"id": msgID, "type": "message", "status": "completed", "role": "assistant", "content": []any{part}}
	usage := json.RawMessage(`{"input_tokens":` + itoa(prompt) + `,"input_tokens_details":{"cached_tokens":0},"output_tokens":` +
		itoa(completion) + `,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":` + itoa(prompt+completion) + `}`)
	if u := r.Header.Get("x-mock-usage"); u != "" {
		usage = json.RawMessage(u)
	}
	final := func() map[string]any {
		f := make(map[string]any, len(resp))
		for k, v := range resp {
			f[k] = v
		}
		f["status"], f["incomplete_details"], f["output"] = status, incomplete, []any{item}
		if r.Header.Get("x-mock-no-usage") == "" {
			f["usage"] = usage
		}
		return f
	}
	whole, _ := json.Marshal(final())
	if resp["store"] == true {
		s.stored.put(id, storedResponse{response: whole, input: req.items()})
	}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(whole)
		return
	}
	s.streamResponse(w, r, resp, final(), item, words, status)
}

// streamResponse sends the event sequence of one text answer.
func (s *Server) streamResponse(w http.ResponseWriter, r *http.Request, resp, final, item map[string]any, words []string, status string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher, _ := w.(http.Flusher)
	chunkDelay := s.duration(r, "x-mock-chunk-delay-ms", s.opts.ChunkDelay)
	seq := 0
	send := func(typ string, fields map[string]any) bool {
		fields["type"], fields["sequence_number"] = typ, seq
		seq++
		b, _ := json.Marshal(fields)
		return s.write(w, flusher, []byte("event: "+typ+"\ndata: "+string(b)+"\n\n"))
	}
	id := item["id"]
	content := strings.Join(words, " ")
	open := map[string]any{"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []any{}}
	ok := send("response.created", map[string]any{"response": resp}) &&
		send("response.in_progress", map[string]any{"response": resp}) &&
		send("response.output_item.added", map[string]any{"output_index": 0, "item": open}) &&
		send("response.content_part.added", map[string]any{"item_id": id, "output_index": 0, "content_index": 0,
			"part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}}})
	for _, c := range split(words, s.intHeader(r, "x-mock-chunks", s.opts.Chunks)) {
		if !ok {
			break
		}
		if chunkDelay > 0 {
			select {
			case <-time.After(chunkDelay):
			case <-r.Context().Done():
				s.aborted.Add(1)
				return
			}
		}
		ok = send("response.output_text.delta", map[string]any{"item_id": id, "output_index": 0, "content_index": 0, "delta": c, "logprobs": []any{}})
	}
	done := "response.completed"
	if status == "incomplete" {
		done = "response.incomplete"
	}
	ok = ok && send("response.output_text.done", map[string]any{"item_id": id, "output_index": 0, "content_index": 0, "text": content, "logprobs": []any{}}) &&
		send("response.content_part.done", map[string]any{"item_id": id, "output_index": 0, "content_index": 0,
			"part": map[string]any{"type": "output_text", "text": content, "annotations": []any{}}}) &&
		send("response.output_item.done", map[string]any{"output_index": 0, "item": item}) &&
		send(done, map[string]any{"response": final})
	if !ok {
		s.aborted.Add(1)
		return
	}
	s.completed.Add(1)
}

func (s *Server) getResponse(w http.ResponseWriter, r *http.Request) {
	v, ok := s.stored.get(r.PathValue("id"))
	if !ok {
		openAIError(w, http.StatusNotFound, "invalid_request_error", "No response found with id '"+r.PathValue("id")+"'.")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(v.response)
}

func (s *Server) deleteResponse(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !s.stored.remove(id) {
		openAIError(w, http.StatusNotFound, "invalid_request_error", "No response found with id '"+id+"'.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "response", "deleted": true})
}

func (s *Server) inputItems(w http.ResponseWriter, r *http.Request) {
	v, ok := s.stored.get(r.PathValue("id"))
	if !ok {
		openAIError(w, http.StatusNotFound, "invalid_request_error", "No response found with id '"+r.PathValue("id")+"'.")
		return
	}
	data := make([]any, 0, len(v.input))
	for i, it := range v.input {
		c := make(map[string]any, len(it)+1)
		for k, x := range it {
			c[k] = x
		}
		if _, ok := c["id"]; !ok {
			c["id"] = "msg_input" + itoa(int64(i))
		}
		data = append(data, c)
	}
	var first, last any
	if n := len(data); n > 0 {
		first, last = data[0].(map[string]any)["id"], data[n-1].(map[string]any)["id"]
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": false})
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
