package translate

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/usage"
)

// rsEcho is what a Response object repeats of its request.
type rsEcho struct {
	Instructions      json.RawMessage `json:"instructions"`
	MaxOutputTokens   json.RawMessage `json:"max_output_tokens"`
	Temperature       json.RawMessage `json:"temperature"`
	TopP              json.RawMessage `json:"top_p"`
	Tools             json.RawMessage `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls json.RawMessage `json:"parallel_tool_calls"`
	Text              json.RawMessage `json:"text"`
	Reasoning         json.RawMessage `json:"reasoning"`
	Metadata          json.RawMessage `json:"metadata"`
	User              json.RawMessage `json:"user"`
}

// echoOf reads the members a Response repeats from the request body; a
// member the request left out gets the API's default.
func echoOf(req []byte) rsEcho {
	var e rsEcho
	_ = json.Unmarshal(req, &e) // the gateway decoded it already
	def := func(v *json.RawMessage, d string) {
		if len(*v) == 0 {
			*v = json.RawMessage(d)
		}
	}
	def(&e.Instructions, "null")
	def(&e.MaxOutputTokens, "null")
	def(&e.Temperature, "1")
	def(&e.TopP, "1")
	def(&e.Tools, "[]")
	def(&e.ToolChoice, `"auto"`)
	def(&e.ParallelToolCalls, "true")
	def(&e.Text, `{"format":{"type":"text"}}`)
	def(&e.Reasoning, `{"effort":null,"summary":null}`)
	def(&e.Metadata, "{}")
	def(&e.User, "null")
	return e
}

// rsResponse is a Response object as the translation writes it.
type rsResponse struct {
	ID                 string           `json:"id"`
	Object             string           `json:"object"`
	CreatedAt          int64            `json:"created_at"`
	Status             string           `json:"status"`
	Error              json.RawMessage  `json:"error"`
	IncompleteDetails  any              `json:"incomplete_details"`
	Model              string           `json:"model"`
	Output             []any            `json:"output"`
	PreviousResponseID json.RawMessage  `json:"previous_response_id"`
	Store              bool             `json:"store"`
	Truncation         string           `json:"truncation"`
	Usage              *usage.Responses `json:"usage"`
	rsEcho
}

func newResponse(e rsEcho, id, model string, created int64) *rsResponse {
	return &rsResponse{ID: id, Object: "response", CreatedAt: created, Status: "in_progress", Error: json.RawMessage("null"),
		Model: model, Output: []any{}, PreviousResponseID: json.RawMessage("null"), Truncation: "disabled", rsEcho: e}
}

// finish sets the final status from chat's finish_reason and the usage.
func (r *rsResponse) finish(finishReason string, u *usage.Usage) {
	r.Status = "completed"
	switch finishReason {
	case "length":
		r.Status, r.IncompleteDetails = "incomplete", map[string]string{"reason": "max_output_tokens"}
	case "content_filter":
		r.Status, r.IncompleteDetails = "incomplete", map[string]string{"reason": "content_filter"}
	}
	if u != nil {
		ru := u.Responses()
		r.Usage = &ru
	}
}

// responseID is the Response id for a chat completion's id.
func responseID(chatID string) string {
	if rest, ok := strings.CutPrefix(chatID, "chatcmpl-"); ok && rest != "" {
		return "resp_" + rest
	}
	return newID("resp_")
}

// messageItem is an output message item with its text.
func messageItem(id, status, text string) map[string]any {
	content := []any{}
	if status == "completed" {
		content = append(content, outputTextPart(text))
	}
	return map[string]any{"type": "message", "id": id, "status": status, "role": "assistant", "content": content}
}

func outputTextPart(text string) map[string]any {
	return map[string]any{"type": "output_text", "text": text, "annotations": []any{}}
}

// functionCallItem is an output function_call item.
func functionCallItem(id, callID, name, args, status string) map[string]any {
	return map[string]any{"type": "function_call", "id": id, "call_id": callID, "name": name, "arguments": args, "status": status}
}

// ChatToResponse turns a chat completion into the Response object a
// Responses API client expects, with its usage; req is the client's
// Responses request, whose settings the Response repeats.
func ChatToResponse(chat, req []byte) ([]byte, usage.Usage, error) {
	var in oaResponse
	if err := json.Unmarshal(chat, &in); err != nil {
		return nil, usage.Usage{}, fmt.Errorf("upstream completion: %w", err)
	}
	var u usage.Usage
	if in.Usage != nil {
		u = in.Usage.Usage()
	}
	created := in.Created
	if created == 0 {
		created = time.Now().Unix()
	}
	r := newResponse(echoOf(req), responseID(in.ID), in.Model, created)
	finish := ""
	if len(in.Choices) > 0 {
		c := in.Choices[0]
		finish = c.FinishReason
		if c.Message.Content != nil && *c.Message.Content != "" {
			r.Output = append(r.Output, messageItem(newID("msg_"), "completed", *c.Message.Content))
		}
		for _, tc := range c.Message.ToolCalls {
			r.Output = append(r.Output, functionCallItem(newID("fc_"), tc.ID, tc.Function.Name, tc.Function.Arguments, "completed"))
		}
	}
	var up *usage.Usage
	if in.Usage != nil {
		up = &u
	}
	r.finish(finish, up)
	b, err := json.Marshal(r)
	return b, u, err
}
