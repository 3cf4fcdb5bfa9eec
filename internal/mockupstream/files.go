package mockupstream

import (
	"bufio"
	"bytes"
	"encoding/json"
	"mime"
	"mime/multipart"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// The mock's Files and Batches APIs, in memory. They are scoped by the
// credential a request presents (Authorization or api-key), as an upstream
// scopes them by account, and refuse a request without one. A batch is
// "validating" when created and completes at its first retrieval, with an
// output file holding one chat completion per input line, each with the
// usage the mock's chat endpoint would report for it.

type mockFile struct {
	obj     map[string]any
	content []byte
}

type filesState struct {
	mu      sync.Mutex
	files   map[string]map[string]*mockFile      // credential → id → file
	batches map[string]map[string]map[string]any // credential → id → batch object
}

func (s *Server) registerFiles() {
	for _, p := range []string{"/v1", "", "/openai"} {
		wrap := s.credential
		if p == "/openai" {
			wrap = func(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
				return s.azure(s.credential(h))
			}
		}
		s.mux.HandleFunc("POST "+p+"/files", wrap(s.fileUpload))
		s.mux.HandleFunc("GET "+p+"/files", wrap(s.fileList))
		s.mux.HandleFunc("GET "+p+"/files/{id}", wrap(s.fileGet))
		s.mux.HandleFunc("GET "+p+"/files/{id}/content", wrap(s.fileContent))
		s.mux.HandleFunc("DELETE "+p+"/files/{id}", wrap(s.fileDelete))
		s.mux.HandleFunc("POST "+p+"/batches", wrap(s.batchCreate))
		s.mux.HandleFunc("GET "+p+"/batches", wrap(s.batchList))
		s.mux.HandleFunc("GET "+p+"/batches/{id}", wrap(s.batchGet))
		s.mux.HandleFunc("POST "+p+"/batches/{id}/cancel", wrap(s.batchCancel))
	}
}

// credential passes the request's credential to h, or answers 401.
func (s *Server) credential(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := r.Header.Get("Authorization")
		if c == "" {
			c = r.Header.Get("api-key")
		}
		if c == "" {
			openAIError(w, http.StatusUnauthorized, "authentication_error", "no API key: send Authorization: Bearer or api-key")
			return
		}
		h(w, r, c)
	}
}

func (s *Server) fileUpload(w http.ResponseWriter, r *http.Request, cred string) {
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "the body must be multipart/form-data")
		return
	}
	form, err := multipart.NewReader(bytes.NewReader(body(r)), params["boundary"]).ReadForm(32 << 20)
	if err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "malformed multipart body: "+err.Error())
		return
	}
	defer form.RemoveAll()
	fh := form.File["file"]
	purpose := form.Value["purpose"]
	if len(fh) == 0 || len(purpose) == 0 {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "file and purpose are required")
		return
	}
	f, err := fh[0].Open()
	if err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	defer f.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(f)
	obj := s.putFile(cred, fh[0].Filename, purpose[0], buf.Bytes())
	writeJSON(w, http.StatusOK, obj)
}

func (s *Server) putFile(cred, name, purpose string, content []byte) map[string]any {
	id := newID("file-")
	obj := map[string]any{"id": id, "object": "file", "bytes": len(content), "created_at": time.Now().Unix(),
		"filename": name, "purpose": purpose, "status": "processed"}
	s.files.mu.Lock()
	defer s.files.mu.Unlock()
	if s.files.files[cred] == nil {
		s.files.files[cred] = map[string]*mockFile{}
	}
	s.files.files[cred][id] = &mockFile{obj: obj, content: content}
	return obj
}

func (s *Server) file(w http.ResponseWriter, r *http.Request, cred string) (*mockFile, bool) {
	s.files.mu.Lock()
	f := s.files.files[cred][r.PathValue("id")]
	s.files.mu.Unlock()
	if f == nil {
		openAIError(w, http.StatusNotFound, "invalid_request_error", "No such File object: "+r.PathValue("id"))
	}
	return f, f != nil
}

func (s *Server) fileGet(w http.ResponseWriter, r *http.Request, cred string) {
	if f, ok := s.file(w, r, cred); ok {
		writeJSON(w, http.StatusOK, f.obj)
	}
}

func (s *Server) fileContent(w http.ResponseWriter, r *http.Request, cred string) {
	if f, ok := s.file(w, r, cred); ok {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(f.content)
	}
}

func (s *Server) fileDelete(w http.ResponseWriter, r *http.Request, cred string) {
	if _, ok := s.file(w, r, cred); ok {
		s.files.mu.Lock()
		delete(s.files.files[cred], r.PathValue("id"))
		s.files.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"id": r.PathValue("id"), "object": "file", "deleted": true})
	}
}

func (s *Server) fileList(w http.ResponseWriter, _ *http.Request, cred string) {
	s.files.mu.Lock()
	var data []map[string]any
	for _, f := range s.files.files[cred] {
		data = append(data, f.obj)
	}
	s.files.mu.Unlock()
	writeList(w, data)
}

func (s *Server) batchCreate(w http.ResponseWriter, r *http.Request, cred string) {
	var req struct {
		InputFileID      string         `json:"input_file_id"`
		Endpoint         string         `json:"endpoint"`
		CompletionWindow string         `json:"completion_window"`
		Metadata         map[string]any `json:"metadata"`
	}
	if err := json.Unmarshal(body(r), &req); err != nil || req.InputFileID == "" || req.Endpoint == "" {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "input_file_id, endpoint and completion_window are required")
		return
	}
	s.files.mu.Lock()
	defer s.files.mu.Unlock()
	if s.files.files[cred][req.InputFileID] == nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "No such File object: "+req.InputFileID)
		return
	}
	b := map[string]any{"id": newID("batch_"), "object": "batch", "endpoint": req.Endpoint, "input_file_id": req.InputFileID,
		"completion_window": req.CompletionWindow, "status": "validating", "output_file_id": nil, "error_file_id": nil,
		"created_at": time.Now().Unix(), "metadata": req.Metadata, "errors": nil,
		"request_counts": map[string]int{"total": 0, "completed": 0, "failed": 0}}
	if s.files.batches[cred] == nil {
		s.files.batches[cred] = map[string]map[string]any{}
	}
	s.files.batches[cred][b["id"].(string)] = b
	writeJSON(w, http.StatusOK, b)
}

func (s *Server) batch(w http.ResponseWriter, r *http.Request, cred string) (map[string]any, bool) {
	b := s.files.batches[cred][r.PathValue("id")]
	if b == nil {
		openAIError(w, http.StatusNotFound, "invalid_request_error", "No such Batch object: "+r.PathValue("id"))
	}
	return b, b != nil
}

// batchGet completes a batch that was still running: its output file
// answers every line of the input file.
func (s *Server) batchGet(w http.ResponseWriter, r *http.Request, cred string) {
	s.files.mu.Lock()
	defer s.files.mu.Unlock()
	b, ok := s.batch(w, r, cred)
	if !ok {
		return
	}
	if b["status"] == "validating" {
		in := s.files.files[cred][b["input_file_id"].(string)]
		out, n := s.batchOutput(r, in)
		id := newID("file-")
		s.files.files[cred][id] = &mockFile{content: out, obj: map[string]any{"id": id, "object": "file", "bytes": len(out),
			"created_at": time.Now().Unix(), "filename": "batch_output.jsonl", "purpose": "batch_output", "status": "processed"}}
		b["status"], b["output_file_id"], b["completed_at"] = "completed", id, time.Now().Unix()
		b["request_counts"] = map[string]int{"total": n, "completed": n, "failed": 0}
	}
	writeJSON(w, http.StatusOK, b)
}

// batchOutput answers each request line of in as the chat endpoint would.
func (s *Server) batchOutput(r *http.Request, in *mockFile) ([]byte, int) {
	if in == nil {
		return nil, 0
	}
	var out bytes.Buffer
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(in.content))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var line struct {
			CustomID string  `json:"custom_id"`
			Body     request `json:"body"`
		}
		if strings.TrimSpace(sc.Text()) == "" || json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		words, finish := s.reply(r, &line.Body)
		prompt, completion := line.Body.promptTokens(), int64(len(words))
		resp := map[string]any{"id": newID("chatcmpl-"), "object": "chat.completion", "model": line.Body.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": finish,
				"message": map[string]any{"role": "assistant", "content": strings.Join(words, " ")}}},
			"usage": map[string]any{"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}
		b, _ := json.Marshal(map[string]any{"id": newID("batch_req_"), "custom_id": line.CustomID, "error": nil,
			"response": map[string]any{"status_code": 200, "request_id": newID("req_"), "body": resp}})
		out.Write(b)
		out.WriteByte('\n')
		n++
	}
	return out.Bytes(), n
}

func (s *Server) batchCancel(w http.ResponseWriter, r *http.Request, cred string) {
	s.files.mu.Lock()
	defer s.files.mu.Unlock()
	if b, ok := s.batch(w, r, cred); ok {
		if b["status"] == "validating" {
			b["status"], b["cancelled_at"] = "cancelled", time.Now().Unix()
		}
		writeJSON(w, http.StatusOK, b)
	}
}

func (s *Server) batchList(w http.ResponseWriter, _ *http.Request, cred string) {
	s.files.mu.Lock()
	var data []map[string]any
	for _, b := range s.files.batches[cred] {
		data = append(data, b)
	}
	s.files.mu.Unlock()
	writeList(w, data)
}

// writeList answers OpenAI's list shape, newest first.
func writeList(w http.ResponseWriter, data []map[string]any) {
	sort.Slice(data, func(i, j int) bool { // ids end in a sequence number in base 36
		a, b := data[i]["id"].(string), data[j]["id"].(string)
		return len(a) > len(b) || len(a) == len(b) && a > b
	})
	if data == nil {
		data = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data, "has_more": false})
}
