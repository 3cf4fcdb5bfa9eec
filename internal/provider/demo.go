package provider

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/echo"
	"github.com/tollgate/tollgate/internal/usage"
)

// The built-in demo model answers inside the process, so a fresh install can
// be tried with no network and no provider key. Its "upstream" is
// demoTransport, which answers OpenAI chat and text completions with
// "Hello! You said: " and the last user message's first twelve words, and a
// usage of one prompt token per four bytes of message text (at least one)
// and one completion token per word. The gateway forwards, translates (an
// Anthropic Messages request becomes a chat completion) and meters it with
// exactly the code it uses for a real provider.
func init() {
	register([]string{"demo"}, dialect{defaultBase: "http://demo.tollgate.internal/v1", build: func(t *Target, base *url.URL) error {
		t.urls[OpChat] = joinV1(base, "/chat/completions")
		t.urls[OpCompletions] = joinV1(base, "/completions")
		return nil
	}})
}

// demoChunks is how many content chunks a demo stream is cut into.
const demoChunks = 5

// demoTransport is the demo model's upstream: an http.RoundTripper that
// builds the whole answer in memory.
type demoTransport struct{ seq atomic.Int64 }

type demoRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        bool            `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           *int64 `json:"max_tokens"`
	MaxCompletionTokens *int64 `json:"max_completion_tokens"`
}

func (d *demoTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var raw []byte
	if req.Body != nil {
		var err error
		raw, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	var chat bool
	switch {
	case strings.HasSuffix(req.URL.Path, "/chat/completions"):
		chat = true
	case strings.HasSuffix(req.URL.Path, "/completions"):
	default:
		return demoResponse(req, http.StatusNotFound, "application/json", demoError(http.StatusNotFound, "unknown path "+req.URL.Path)), nil
	}
	var in demoRequest
	if err := json.Unmarshal(raw, &in); err != nil {
		return demoResponse(req, http.StatusBadRequest, "application/json", demoError(http.StatusBadRequest, "malformed JSON: "+err.Error())), nil
	}
	words, finish, prompt := in.reply()
	id := "chatcmpl-demo" + strconv.FormatInt(d.seq.Add(1), 36)
	created := time.Now().Unix()
	if !in.Stream {
		return demoResponse(req, http.StatusOK, "application/json", in.whole(chat, id, created, words, finish, prompt)), nil
	}
	resp := demoResponse(req, http.StatusOK, "text/event-stream", in.stream(chat, id, created, words, finish, prompt))
	resp.Header.Set("Cache-Control", "no-cache")
	return resp, nil
}

func demoResponse(req *http.Request, status int, contentType string, body []byte) *http.Response {
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {contentType}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

func demoError(status int, msg string) []byte {
	b := append([]byte(`{"error":{"message":`), demoJSON(msg)...)
	b = append(b, `,"type":"invalid_request_error","param":null,"code":"`...)
	b = strconv.AppendInt(b, int64(status), 10)
	return append(b, `"}}`...)
}

// reply is the answer's words, why it stopped, and the prompt's tokens.
func (in *demoRequest) reply() (words []string, finish string, prompt int64) {
	n, last := len(echo.Text(in.Prompt)), ""
	for _, m := range in.Messages {
		s := echo.Text(m.Content)
		n += len(s)
		if m.Role == "user" {
			last = s
		}
	}
	if last == "" {
		last = echo.Text(in.Prompt)
	}
	words = echo.Words(last)
	finish = "stop"
	limit := in.MaxCompletionTokens
	if limit == nil {
		limit = in.MaxTokens
	}
	if limit != nil && *limit > 0 && int64(len(words)) > *limit {
		words, finish = words[:*limit], "length"
	}
	return words, finish, max(1, int64(n/4))
}

// head is the members every answer and chunk starts with.
func (in *demoRequest) head(b []byte, id, object string, created int64) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	return append(b, demoJSON(in.Model)...)
}

func (in *demoRequest) whole(chat bool, id string, created int64, words []string, finish string, prompt int64) []byte {
	content := demoJSON(strings.Join(words, " "))
	object, member := "text_completion", `,"text":`
	if chat {
		object, member = "chat.completion", `,"message":{"role":"assistant","content":`
	}
	b := in.head(make([]byte, 0, 512), id, object, created)
	b = append(b, `,"choices":[{"index":0`...)
	b = append(b, member...)
	b = append(b, content...)
	if chat {
		b = append(b, '}')
	}
	b = append(b, `,"finish_reason":"`...)
	b = append(b, finish...)
	b = append(b, `"}],`...)
	b = usage.AppendOpenAI(b, prompt, int64(len(words)))
	return append(b, '}')
}

func (in *demoRequest) stream(chat bool, id string, created int64, words []string, finish string, prompt int64) []byte {
	object := "text_completion"
	if chat {
		object = "chat.completion.chunk"
	}
	var b []byte
	event := func(delta, finishReason string) {
		b = append(b, "data: "...)
		b = in.head(b, id, object, created)
		b = append(b, `,"choices":[{"index":0,`...)
		b = append(b, delta...)
		b = append(b, `,"finish_reason":`...)
		if finishReason == "" {
			b = append(b, `null`...)
		} else {
			b = append(b, demoJSON(finishReason)...)
		}
		b = append(b, "}]}\n\n"...)
	}
	if chat {
		event(`"delta":{"role":"assistant","content":""}`, "")
	}
	// The words in at most demoChunks chunks, each but the first with its
	// leading space.
	per := max(1, (len(words)+demoChunks-1)/demoChunks)
	for i := 0; i < len(words); i += per {
		c := strings.Join(words[i:min(i+per, len(words))], " ")
		if i > 0 {
			c = " " + c
		}
		if chat {
			event(`"delta":{"content":`+string(demoJSON(c))+`}`, "")
		} else {
			event(`"text":`+string(demoJSON(c)), "")
		}
	}
	if chat {
		event(`"delta":{}`, finish)
	} else {
		event(`"text":""`, finish)
	}
	if in.StreamOptions != nil && in.StreamOptions.IncludeUsage {
		b = append(b, "data: "...)
		b = in.head(b, id, "chat.completion.chunk", created)
		b = append(b, `,"choices":[],`...)
		b = usage.AppendOpenAI(b, prompt, int64(len(words)))
		b = append(b, "}\n\n"...)
	}
	return append(b, "data: [DONE]\n\n"...)
}

func demoJSON(s string) []byte {
	q, _ := json.Marshal(s)
	return q
}
