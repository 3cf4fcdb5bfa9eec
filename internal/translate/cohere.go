package translate

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/usage"
)

// Cohere's v2 chat API (POST /v2/chat): its messages are close to
// OpenAI's (roles system, user, assistant and tool; tool_calls and tools in
// OpenAI's function shape), but its sampling settings, JSON mode, answers,
// stream events and usage (usage.billed_units) are its own.

type coRequest struct {
	Model            string          `json:"model"`
	Messages         []coMessage     `json:"messages"`
	Tools            []oaTool        `json:"tools,omitempty"`
	ToolChoice       string          `json:"tool_choice,omitempty"`
	Stream           bool            `json:"stream,omitempty"`
	MaxTokens        *int64          `json:"max_tokens,omitempty"`
	Temperature      *float64        `json:"temperature,omitempty"`
	P                *float64        `json:"p,omitempty"`
	StopSequences    []string        `json:"stop_sequences,omitempty"`
	Seed             *int64          `json:"seed,omitempty"`
	FrequencyPenalty *float64        `json:"frequency_penalty,omitempty"`
	PresencePenalty  *float64        `json:"presence_penalty,omitempty"`
	ResponseFormat   json.RawMessage `json:"response_format,omitempty"`
}

type coMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content,omitempty"`
	ToolCalls  []oaToolCall    `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// ChatToCohere turns an OpenAI chat request into a Cohere v2 chat request
// for model: developer messages become system ones, image parts stay
// image_url parts (Cohere takes OpenAI's), top_p becomes p, stop
// stop_sequences, tool_choice "required"/"none" Cohere's REQUIRED/NONE, and
// response_format json_object or json_schema Cohere's json_object with the
// schema.
func ChatToCohere(body []byte, model string) ([]byte, error) {
	var in gmChatRequest // OpenAI's members, with the penalties and seed
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	out := coRequest{Model: model, Stream: in.Stream, Temperature: in.Temperature, P: in.TopP, Seed: in.Seed,
		FrequencyPenalty: in.FrequencyPenalty, PresencePenalty: in.PresencePenalty, Tools: in.Tools}
	out.MaxTokens = in.MaxTokens
	if in.MaxCompletionTokens != nil {
		out.MaxTokens = in.MaxCompletionTokens
	}
	stop, err := oaStop(in.Stop)
	if err != nil {
		return nil, err
	}
	out.StopSequences = stop
	if tc := in.ToolChoice; len(tc) > 0 && string(tc) != "null" {
		var s string
		if json.Unmarshal(tc, &s) == nil {
			out.ToolChoice = map[string]string{"required": "REQUIRED", "none": "NONE"}[s]
		} else {
			out.ToolChoice = "REQUIRED" // a named function: Cohere can only insist on some tool
		}
	}
	kind, schema, err := oaFormat(in.ResponseFormat)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "json_object":
		out.ResponseFormat = json.RawMessage(`{"type":"json_object"}`)
	case "json_schema":
		out.ResponseFormat, _ = json.Marshal(struct {
			Type   string          `json:"type"`
			Schema json.RawMessage `json:"json_schema,omitempty"`
		}{"json_object", schema})
	}
	for i, m := range in.Messages {
		cm := coMessage{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID}
		switch m.Role {
		case "system", "developer":
			cm.Role = "system"
		case "user":
		case "assistant":
			cm.ToolCalls = m.ToolCalls
			for j := range cm.ToolCalls {
				cm.ToolCalls[j].Index = nil
				if strings.TrimSpace(cm.ToolCalls[j].Function.Arguments) == "" {
					cm.ToolCalls[j].Function.Arguments = "{}"
				}
			}
		case "tool", "function":
			cm.Role = "tool"
		default:
			return nil, fmt.Errorf("messages[%d]: unknown role %q", i, m.Role)
		}
		if string(cm.Content) == "null" {
			cm.Content = nil
		}
		out.Messages = append(out.Messages, cm)
	}
	if len(out.Messages) == 0 {
		return nil, fmt.Errorf("messages must hold at least one message")
	}
	return json.Marshal(out)
}

// ---- answers ----

// coUsage is a Cohere answer's usage: billed_units is what Cohere charges
// for, tokens what the model saw (with its prompt template).
type coUsage struct {
	BilledUnits *struct {
		InputTokens  int64 `json:"input_tokens"`
		OutputTokens int64 `json:"output_tokens"`
	} `json:"billed_units"`
	Tokens *struct {
		InputTokens  int64 `json:"input_tokens"`
		OutputTokens int64 `json:"output_tokens"`
	} `json:"tokens"`
}

// usage is u as the gateway books it: the billed units, else the tokens.
func (u *coUsage) usage() (usage.Usage, bool) {
	switch {
	case u == nil:
		return usage.Usage{}, false
	case u.BilledUnits != nil:
		return usage.Usage{Prompt: u.BilledUnits.InputTokens, Completion: u.BilledUnits.OutputTokens}, true
	case u.Tokens != nil:
		return usage.Usage{Prompt: u.Tokens.InputTokens, Completion: u.Tokens.OutputTokens}, true
	}
	return usage.Usage{}, false
}

type coResponse struct {
	ID           string `json:"id"`
	FinishReason string `json:"finish_reason"`
	Message      struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		ToolPlan  string       `json:"tool_plan"`
		ToolCalls []oaToolCall `json:"tool_calls"`
	} `json:"message"`
	Usage *coUsage `json:"usage"`
}

// coFinish maps Cohere's finish reasons to OpenAI's.
func coFinish(reason string) string {
	switch reason {
	case "MAX_TOKENS":
		return "length"
	case "TOOL_CALL":
		return "tool_calls"
	}
	return "stop" // COMPLETE, STOP_SEQUENCE
}

// CohereToCompletion turns a Cohere v2 chat answer into an OpenAI chat
// completion for model, with its usage (the billed units).
func CohereToCompletion(body []byte, model string) ([]byte, usage.Usage, error) {
	var in coResponse
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, usage.Usage{}, fmt.Errorf("upstream answer: %w", err)
	}
	u, _ := in.Usage.usage()
	var text strings.Builder
	for _, c := range in.Message.Content {
		if c.Type == "text" || c.Type == "" {
			text.WriteString(c.Text)
		}
	}
	msg := map[string]any{"role": "assistant", "content": text.String()}
	if len(in.Message.ToolCalls) > 0 {
		calls := in.Message.ToolCalls
		for i := range calls {
			calls[i].Index, calls[i].Type = nil, "function"
		}
		msg["tool_calls"] = calls
		if text.Len() == 0 {
			msg["content"] = nil
		}
	}
	out := map[string]any{"id": "chatcmpl-" + in.ID, "object": "chat.completion", "created": time.Now().Unix(), "model": model,
		"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": coFinish(in.FinishReason)}}, "usage": u.OpenAI()}
	b, err := json.Marshal(out)
	return b, u, err
}

// ---- streams ----

type cohereToChat struct{ chunkOut }

// CohereToChatStream translates a Cohere v2 chat stream (message-start,
// content-start, content-delta…, content-end, tool-call-start,
// tool-call-delta…, tool-call-end, message-end with the usage) into
// chat.completion.chunk events for model; with includeUsage the last chunk
// carries the usage.
func CohereToChatStream(model string, includeUsage bool) Stream {
	return &cohereToChat{newChunkOut(model, includeUsage)}
}

// coEvent is one event of a Cohere v2 chat stream: its delta's members
// depend on its type.
type coEvent struct {
	Type  string `json:"type"`
	ID    string `json:"id"`
	Delta struct {
		Message struct {
			Content struct {
				Text string `json:"text"`
			} `json:"content"`
			ToolCalls struct {
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"message"`
		FinishReason string   `json:"finish_reason"`
		Usage        *coUsage `json:"usage"`
	} `json:"delta"`
}

func (s *cohereToChat) Event(ev, out []byte) []byte {
	name, data := parseEvent(ev)
	var e coEvent
	if len(data) == 0 || json.Unmarshal(data, &e) != nil {
		return out
	}
	if e.Type == "" {
		e.Type = name
	}
	if !s.started {
		s.started = true
		s.id = "chatcmpl-" + e.ID
		out = s.chunk(out, map[string]any{"role": "assistant", "content": ""}, nil)
	}
	msg := e.Delta.Message
	switch e.Type {
	case "content-delta":
		if msg.Content.Text != "" {
			out = s.chunk(out, map[string]any{"content": msg.Content.Text}, nil)
			s.chunks++
		}
	case "tool-call-start":
		tc := msg.ToolCalls
		out = s.chunk(out, map[string]any{"tool_calls": []any{map[string]any{"index": s.calls, "id": tc.ID, "type": "function",
			"function": map[string]string{"name": tc.Function.Name, "arguments": tc.Function.Arguments}}}}, nil)
		s.calls++
		s.chunks++
	case "tool-call-delta":
		if a := msg.ToolCalls.Function.Arguments; a != "" && s.calls > 0 {
			out = s.chunk(out, map[string]any{"tool_calls": []any{map[string]any{"index": s.calls - 1,
				"function": map[string]string{"arguments": a}}}}, nil)
			s.chunks++
		}
	case "message-end":
		s.finish = e.Delta.FinishReason
		if u, ok := e.Delta.Usage.usage(); ok {
			s.usage, s.hasUsage = u, true
		}
	}
	return out
}

func (s *cohereToChat) End(out []byte) []byte { return s.end(out, coFinish(s.finish)) }

// CohereErrorToOpenAI turns a Cohere error ({"message": ...}, the status
// saying what went wrong) into OpenAI's error shape; any other body is
// left to ErrorToOpenAI.
func CohereErrorToOpenAI(status int, body []byte) []byte {
	var in struct {
		Message *string `json:"message"`
	}
	if json.Unmarshal(body, &in) != nil || in.Message == nil {
		return ErrorToOpenAI(status, body)
	}
	typ := oaErrorType(status)
	out, _ := json.Marshal(map[string]any{"error": map[string]any{"message": *in.Message, "type": typ, "param": nil, "code": fmt.Sprint(status)}})
	return out
}
