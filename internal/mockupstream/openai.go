package mockupstream

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/echo"
	"github.com/tollgate/tollgate/internal/usage"
)

// request holds the fields of OpenAI and Anthropic requests the mock reads.
type request struct {
	Model         string          `json:"model"`
	Messages      []message       `json:"messages"`
	System        json.RawMessage `json:"system"`
	Prompt        json.RawMessage `json:"prompt"`
	Input         json.RawMessage `json:"input"`
	Stream        bool            `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           *int64 `json:"max_tokens"`
	MaxCompletionTokens *int64 `json:"max_completion_tokens"`
	N                   int    `json:"n"`
	BestOf              int    `json:"best_of"`
	Dimensions          int    `json:"dimensions"`
	EncodingFormat      string `json:"encoding_format"`
}

type message struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

func readAll(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	return io.ReadAll(r.Body)
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request, anthropic bool) (*request, bool) {
	var req request
	if err := json.Unmarshal(body(r), &req); err != nil {
		if anthropic {
			anthropicError(w, http.StatusBadRequest, "invalid_request_error", "malformed JSON: "+err.Error())
		} else {
			openAIError(w, http.StatusBadRequest, "invalid_request_error", "malformed JSON: "+err.Error())
		}
		return nil, false
	}
	if s.opts.Model != "" {
		req.Model = s.opts.Model
	} else if d := r.PathValue("deployment"); d != "" {
		req.Model = d
	}
	return &req, true
}

// promptTokens is one token per four bytes of prompt text, at least one.
func (req *request) promptTokens() int64 {
	n := len(echo.Text(req.System)) + len(echo.Text(req.Prompt)) + len(echo.Text(req.Input))
	for _, m := range req.Messages {
		n += len(echo.Text(m.Content))
	}
	return max(1, int64(n/4))
}

// prompts is how many prompts a /completions request carries: each gets
// its own choices.
func (req *request) prompts() int {
	var batch []json.RawMessage
	if len(req.Prompt) > 0 && req.Prompt[0] == '[' && json.Unmarshal(req.Prompt, &batch) == nil &&
		len(batch) > 0 && (batch[0][0] == '"' || batch[0][0] == '[') {
		return len(batch)
	}
	return 1
}

// reply is the answer's words and why it stopped.
func (s *Server) reply(r *http.Request, req *request) (words []string, finish string) {
	last := ""
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			last = echo.Text(req.Messages[i].Content)
			break
		}
	}
	if last == "" {
		last = echo.Text(req.Prompt)
	}
	words = echo.Words(last)
	if n := s.intHeader(r, "x-mock-completion-tokens", 0); n > 0 {
		for len(words) < n {
			words = append(words, "lorem")
		}
		words = words[:n]
	}
	finish = "stop"
	limit := req.MaxCompletionTokens
	if limit == nil {
		limit = req.MaxTokens
	}
	if limit != nil && *limit > 0 && int64(len(words)) > *limit {
		words, finish = words[:*limit], "length"
	}
	return words, finish
}

// split divides words into at most n chunks of text, each with its leading space.
func split(words []string, n int) []string {
	if n > len(words) {
		n = len(words)
	}
	chunks := make([]string, 0, n)
	per := (len(words) + n - 1) / max(n, 1)
	for i := 0; i < len(words); i += per {
		end := min(i+per, len(words))
		c := strings.Join(words[i:end], " ")
		if i > 0 {
			c = " " + c
		}
		chunks = append(chunks, c)
	}
	return chunks
}

var idSeq atomicCounter

func newID(prefix string) string { return prefix + strconv.FormatInt(idSeq.next(), 36) }

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	s.openAI(w, r, true)
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	s.openAI(w, r, false)
}

func (s *Server) openAI(w http.ResponseWriter, r *http.Request, chat bool) {
	req, ok := s.decode(w, r, false)
	if !ok {
		return
	}
	words, finish := s.reply(r, req)
	// Every choice is generated (best_of of them on /completions) and billed.
	choices := max(req.N, 1)
	generated := max(choices, req.BestOf) * req.prompts()
	prompt, completion := req.promptTokens(), int64(len(words)*generated)
	s.prompt.Add(prompt)
	s.completion.Add(completion)
	noUsage := r.Header.Get("x-mock-no-usage") != ""
	if raw := r.Header.Get("x-mock-raw-body"); raw != "" && !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, raw)
		return
	}
	object := "text_completion"
	if chat {
		object = "chat.completion"
	}
	id, created := newID("chatcmpl-mock"), time.Now().Unix()
	if !req.Stream {
		b := make([]byte, 0, 512)
		b = append(b, `{"id":"`...)
		b = append(b, id...)
		b = append(b, `","object":"`...)
		b = append(b, object...)
		b = append(b, `","created":`...)
		b = strconv.AppendInt(b, created, 10)
		b = append(b, `,"model":`...)
		b = appendJSON(b, req.Model)
		b = append(b, `,"choices":[`...)
		content := strings.Join(words, " ")
		for i := range choices {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"index":`...)
			b = strconv.AppendInt(b, int64(i), 10)
			if chat {
				b = append(b, `,"message":{"role":"assistant","content":`...)
				b = appendJSON(b, content)
				b = append(b, `}`...)
			} else {
				b = append(b, `,"text":`...)
				b = appendJSON(b, content)
			}
			b = append(b, `,"finish_reason":"`...)
			b = append(b, finish...)
			b = append(b, `"}`...)
		}
		b = append(b, ']')
		if !noUsage {
			b = s.appendUsage(r, append(b, ','), prompt, completion)
		}
		b = append(b, '}')
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
		return
	}

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher, _ := w.(http.Flusher)
	chunkDelay := s.duration(r, "x-mock-chunk-delay-ms", s.opts.ChunkDelay)
	send := func(delta, finishReason string) bool {
		b := make([]byte, 0, 256)
		b = append(b, `data: {"id":"`...)
		b = append(b, id...)
		b = append(b, `","object":"`...)
		if chat {
			b = append(b, `chat.completion.chunk`...)
		} else {
			b = append(b, `text_completion`...)
		}
		b = append(b, `","created":`...)
		b = strconv.AppendInt(b, created, 10)
		b = append(b, `,"model":`...)
		b = appendJSON(b, req.Model)
		b = append(b, `,"choices":[{"index":0,`...)
		b = append(b, delta...)
		b = append(b, `,"finish_reason":`...)
		if finishReason == "" {
			b = append(b, `null`...)
		} else {
			b = appendJSON(b, finishReason)
		}
		b = append(b, "}]}\n\n"...)
		return s.write(w, flusher, b)
	}
	chunks := s.intHeader(r, "x-mock-chunks", s.opts.Chunks)
	if chat && !send(`"delta":{"role":"assistant","content":""}`, "") {
		s.aborted.Add(1)
		return
	}
	for _, c := range split(words, chunks) {
		if chunkDelay > 0 {
			select {
			case <-time.After(chunkDelay):
			case <-r.Context().Done():
				s.aborted.Add(1)
				return
			}
		}
		delta := `"text":` + string(appendJSON(nil, c))
		if chat {
			delta = `"delta":{"content":` + string(appendJSON(nil, c)) + `}`
		}
		if !send(delta, "") {
			s.aborted.Add(1)
			return
		}
	}
	final := `"text":""`
	if chat {
		final = `"delta":{}`
	}
	if !send(final, finish) {
		s.aborted.Add(1)
		return
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage && !noUsage {
		b := make([]byte, 0, 256)
		b = append(b, `data: {"id":"`...)
		b = append(b, id...)
		b = append(b, `","object":"chat.completion.chunk","created":`...)
		b = strconv.AppendInt(b, created, 10)
		b = append(b, `,"model":`...)
		b = appendJSON(b, req.Model)
		b = append(b, `,"choices":[],`...)
		b = s.appendUsage(r, b, prompt, completion)
		b = append(b, "}\n\n"...)
		if !s.write(w, flusher, b) {
			s.aborted.Add(1)
			return
		}
	}
	if !s.write(w, flusher, []byte("data: [DONE]\n\n")) {
		s.aborted.Add(1)
		return
	}
	s.completed.Add(1)
}

func (s *Server) write(w http.ResponseWriter, f http.Flusher, b []byte) bool {
	if _, err := w.Write(b); err != nil {
		return false
	}
	if f != nil {
		f.Flush()
	}
	return true
}

// appendUsage writes the usage member: the x-mock-usage header's JSON
// object verbatim when the request has one (a misbehaving upstream), else
// the counted tokens.
func (s *Server) appendUsage(r *http.Request, b []byte, prompt, completion int64) []byte {
	if u := r.Header.Get("x-mock-usage"); u != "" {
		b = append(b, `"usage":`...)
		return append(b, u...)
	}
	return usage.AppendOpenAI(b, prompt, completion)
}

func appendJSON(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

func (s *Server) embeddings(w http.ResponseWriter, r *http.Request) {
	req, ok := s.decode(w, r, false)
	if !ok {
		return
	}
	var inputs []json.RawMessage
	if len(req.Input) > 0 && req.Input[0] == '[' {
		var arr []json.RawMessage
		if json.Unmarshal(req.Input, &arr) == nil {
			inputs = arr
		}
		// an array of token ids is one input
		if len(arr) > 0 && arr[0][0] != '"' && arr[0][0] != '[' {
			inputs = []json.RawMessage{req.Input}
		}
	} else if len(req.Input) > 0 {
		inputs = []json.RawMessage{req.Input}
	}
	if len(inputs) == 0 {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "input is required")
		return
	}
	dims := req.Dimensions
	if dims <= 0 {
		dims = 8
	}
	type item struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"`
	}
	items := make([]item, len(inputs))
	for i, in := range inputs {
		vec := make([]float32, dims)
		for j := range vec {
			vec[j] = float32(math.Sin(float64(len(in)*(j+1)+i))) / 2
		}
		var emb any = vec
		if req.EncodingFormat == "base64" {
			buf := make([]byte, 4*dims)
			for j, v := range vec {
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(v))
			}
			emb = base64.StdEncoding.EncodeToString(buf)
		}
		items[i] = item{Object: "embedding", Index: i, Embedding: emb}
	}
	prompt := req.promptTokens()
	s.prompt.Add(prompt)
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list", "data": items, "model": req.Model,
		"usage": map[string]int64{"prompt_tokens": prompt, "total_tokens": prompt},
	})
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	names := []string{"gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "claude-sonnet-4-5", "demo"}
	if s.opts.Model != "" {
		names = []string{s.opts.Model}
	}
	data := make([]map[string]any, len(names))
	for i, n := range names {
		data[i] = map[string]any{"id": n, "object": "model", "created": 1700000000, "owned_by": "mock"}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func openAIError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": strconv.Itoa(status)}})
}

func jsonEncoder(w io.Writer) *json.Encoder {
	e := json.NewEncoder(w)
	e.SetEscapeHTML(false)
	return e
}
