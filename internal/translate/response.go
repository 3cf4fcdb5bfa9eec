package translate

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/usage"
)

// MessageToCompletion turns an Anthropic message into an OpenAI chat
// completion, with its usage.
func MessageToCompletion(body []byte) ([]byte, usage.Usage, error) {
	var in anResponse
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, usage.Usage{}, fmt.Errorf("upstream message: %w", err)
	}
	u := in.Usage.Usage()
	var text strings.Builder
	var calls []oaToolCall
	for _, b := range in.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "tool_use":
			var tc oaToolCall
			tc.ID, tc.Type, tc.Function.Name = b.ID, "function", b.Name
			tc.Function.Arguments = string(b.Input)
			calls = append(calls, tc)
		}
	}
	stop := ""
	if in.StopReason != nil {
		stop = *in.StopReason
	}
	msg := map[string]any{"role": "assistant", "content": text.String()}
	if len(calls) > 0 {
		msg["tool_calls"] = calls
		if text.Len() == 0 {
			msg["content"] = nil
		}
	}
	out := map[string]any{
		"id": "chatcmpl-" + strings.TrimPrefix(in.ID, "msg_"), "object": "chat.completion", "created": time.Now().Unix(), "model": in.Model,
		"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": mapStop(anToOAStop, stop, "stop")}},
		"usage":   u.OpenAI(),
	}
	b, err := json.Marshal(out)
	return b, u, err
}

// CompletionToMessage turns an OpenAI chat completion into an Anthropic
// message, with its usage.
func CompletionToMessage(body []byte) ([]byte, usage.Usage, error) {
	var in oaResponse
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, usage.Usage{}, fmt.Errorf("upstream completion: %w", err)
	}
	var u usage.Usage
	if in.Usage != nil {
		u = in.Usage.Usage()
	}
	content := []anBlock{}
	stop := "end_turn"
	if len(in.Choices) > 0 {
		c := in.Choices[0]
		if c.Message.Content != nil && *c.Message.Content != "" {
			content = append(content, anBlock{Type: "text", Text: *c.Message.Content})
		}
		for _, tc := range c.Message.ToolCalls {
			input := json.RawMessage(tc.Function.Arguments)
			if !json.Valid(input) {
				input = json.RawMessage(`{}`)
			}
			content = append(content, anBlock{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: input})
		}
		stop = mapStop(oaToANStop, c.FinishReason, "end_turn")
	}
	id := in.ID
	if !strings.HasPrefix(id, "msg_") {
		id = "msg_" + strings.TrimPrefix(id, "chatcmpl-")
	}
	out := anResponse{ID: id, Type: "message", Role: "assistant", Model: in.Model, Content: content, StopReason: &stop, Usage: u.Anthropic()}
	b, err := json.Marshal(out)
	return b, u, err
}

// MessageUsage reads the usage of an Anthropic message (a passed-through answer).
func MessageUsage(body []byte) (usage.Usage, bool) {
	var in struct {
		Usage *usage.Anthropic `json:"usage"`
	}
	if json.Unmarshal(body, &in) != nil || in.Usage == nil {
		return usage.Usage{}, false
	}
	return in.Usage.Usage(), true
}

// errorTypes maps between the two APIs' error types.
var anErrorType = map[int]string{400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
	413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 502: "api_error", 503: "overloaded_error", 504: "api_error", 529: "overloaded_error"}

// AnthropicErrorType is the Anthropic error type for an HTTP status.
func AnthropicErrorType(status int) string {
	if t, ok := anErrorType[status]; ok {
		return t
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

// ErrorToAnthropic rewrites an OpenAI-shaped error body in Anthropic's
// shape; a body that is neither is wrapped as its message.
func ErrorToAnthropic(status int, body []byte) []byte {
	var in struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
		Type string `json:"type"`
	}
	if json.Unmarshal(body, &in) == nil && in.Type == "error" {
		return body // already Anthropic's
	}
	msg := in.Error.Message
	if msg == "" {
		msg = strings.TrimSpace(string(body))
	}
	out, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": AnthropicErrorType(status), "message": msg}})
	return out
}

// ErrorToOpenAI rewrites an Anthropic error body in OpenAI's shape; a body
// that is neither (a proxy's HTML page, plain text) is wrapped as its message.
func ErrorToOpenAI(status int, body []byte) []byte {
	var in struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &in) != nil || in.Type != "error" {
		var oa struct {
			Error *struct{} `json:"error"`
		}
		if json.Unmarshal(body, &oa) == nil && oa.Error != nil {
			return body // already OpenAI's
		}
		typ := "invalid_request_error"
		if status >= 500 || status < 400 {
			typ = "api_error"
		}
		out, _ := json.Marshal(map[string]any{"error": map[string]any{"message": strings.TrimSpace(string(body)), "type": typ, "param": nil, "code": strconv.Itoa(status)}})
		return out
	}
	typ := in.Error.Type
	switch typ {
	case "api_error", "overloaded_error":
		typ = "api_error"
	case "not_found_error":
		typ = "not_found_error"
	}
	out, _ := json.Marshal(map[string]any{"error": map[string]any{"message": in.Error.Message, "type": typ, "param": nil, "code": in.Error.Type}})
	return out
}

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
