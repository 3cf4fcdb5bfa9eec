package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/tokens"
	"github.com/tollgate/tollgate/internal/usage"
)

// usageFromBody reads the usage member of a JSON response; an error means
// the body is not a JSON object.
func usageFromBody(body []byte) (usage.Usage, bool, error) {
	u, _, ok, err := answerOf(body)
	return u, ok, err
}

// answerOf reads the usage and the id of a JSON response in one scan; an
// error means the body is not a JSON object.
//
// It validates the body as jsonbody.Object.Reset does and then walks its
// top-level members with a jsonbody.Cursor, allocating nothing but the id:
// the last "usage", "id" and "message" win, as Object.Get has it
// (TestAnswerOfMatchesObject, FuzzAnswerOfMatchesObject).
func answerOf(body []byte) (u usage.Usage, id string, ok bool, err error) {
	var (
		c                jsonbody.Cursor
		uv, idv, message []byte
	)
	if err := c.Start(body); err != nil {
		return usage.Usage{}, "", false, err
	}
	for {
		k, v, more := c.Next()
		if !more {
			break
		}
		switch {
		case jsonbody.KeyIs(k, "usage"):
			uv = v
		case jsonbody.KeyIs(k, "id"):
			idv = v
		case jsonbody.KeyIs(k, "message"):
			message = v
		}
	}
	u, ok = usage.ParseValid(uv)
	return u, answerIDOf(idv, message), ok, nil
}

// answerIDOf is idOf over the raw "id" and "message" members of a
// validated answer: "id" when it is a string, else the id of the
// "message" object (an Anthropic message_start event's shape).
func answerIDOf(idv, message []byte) string {
	if id, ok := jsonbody.StringOf(idv); ok {
		return id
	}
	var c jsonbody.Cursor
	if len(message) == 0 || !c.StartValid(message) {
		return ""
	}
	var inner []byte
	for {
		k, v, more := c.Next()
		if !more {
			break
		}
		if jsonbody.KeyIs(k, "id") {
			inner = v
		}
	}
	id, _ := jsonbody.StringOf(inner)
	return id
}

// estimateUsage is what a request without reported usage is charged: its
// prompt counted with the model's tokenizer, and the text of the answer
// (OpenAI choices, Anthropic content blocks or Responses output items, tool
// calls included) as its completion. It runs only for upstreams that report
// no usage.
func estimateUsage(req *request, model string, answer []byte) usage.Usage {
	u := usage.Usage{Prompt: countPrompt(req, model), SearchUnits: req.searchUnits}
	var a struct {
		Choices []struct {
			Message *struct {
				Content   json.RawMessage `json:"content"`
				ToolCalls json.RawMessage `json:"tool_calls"`
			} `json:"message"`
			Text string `json:"text"`
		} `json:"choices"`
		Content []struct {
			Text  string          `json:"text"`
			Input json.RawMessage `json:"input"`
		} `json:"content"`
		Output []struct { // a Responses API answer's items
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
			Arguments string `json:"arguments"`
		} `json:"output"`
	}
	if json.Unmarshal(answer, &a) != nil {
		return u
	}
	var b strings.Builder
	for _, c := range a.Choices {
		b.WriteString(c.Text)
		if m := c.Message; m != nil {
			var s string
			if json.Unmarshal(m.Content, &s) == nil {
				b.WriteString(s)
			} else if len(m.Content) > 0 && string(m.Content) != "null" {
				b.Write(m.Content)
			}
			if len(m.ToolCalls) > 0 && string(m.ToolCalls) != "null" {
				b.Write(m.ToolCalls)
			}
		}
	}
	for _, c := range a.Content {
		b.WriteString(c.Text)
		if len(c.Input) > 0 {
			b.Write(c.Input)
		}
	}
	for _, o := range a.Output {
		for _, c := range o.Content {
			b.WriteString(c.Text)
		}
		b.WriteString(o.Arguments)
	}
	if b.Len() > 0 {
		u.Completion = tokens.Text(model, b.String())
	}
	return u
}

// usageFromChunk reads usage from one stream chunk and reports whether the
// chunk carries nothing else (OpenAI's final chunk has "choices": []).
func usageFromChunk(data []byte) (u usage.Usage, onlyUsage, ok bool) {
	var (
		c           jsonbody.Cursor
		uv, choices []byte
	)
	if c.Start(data) != nil {
		return usage.Usage{}, false, false
	}
	for {
		k, v, more := c.Next()
		if !more {
			break
		}
		switch {
		case jsonbody.KeyIs(k, "usage"):
			uv = v
		case jsonbody.KeyIs(k, "choices"):
			choices = v
		}
	}
	u, ok = usage.ParseValid(uv)
	onlyUsage = ok && (choices == nil || string(choices) == "[]")
	return u, onlyUsage, ok
}

// modelOf is the "model" member of a JSON answer or chunk: the model the
// upstream says it served.
func modelOf(body []byte) string {
	var o jsonbody.Object
	if o.Reset(body) != nil {
		return ""
	}
	m, _ := o.String("model")
	return m
}

// newCallID returns a request id unique across replicas: 32 hex digits,
// the first 12 the milliseconds since 1970 and the other 20 random (the
// layout of a UUIDv7 without its version bits). Ids made later sort later,
// so the spend writer's rows land at the end of spend_logs' primary-key
// index instead of on random pages of it: a batch dirties a few pages, not
// one per row, which is what its commit and the WAL checkpoint write
// (BenchmarkApplySpend, random against ordered). 80 random bits keep ids
// made in the same millisecond apart.
func newCallID() string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[6:])
	return hex.EncodeToString(b[:])
}
