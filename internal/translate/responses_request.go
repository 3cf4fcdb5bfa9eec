package translate

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// The Responses API (POST /v1/responses) reaches deployments that speak
// only chat completions through this translation: the request becomes a
// chat request, the chat answer a Response object, and the chat stream
// the Responses event sequence. Responses-only features that need state or
// built-in tools (previous_response_id, item references, web and file
// search, ...) are refused with a 400 rather than silently dropped;
// settings chat has no place for (store, metadata, truncation, include)
// are dropped. docs/endpoints.md lists the mapping.

// rsRequest is the part of a Responses request the translation reads.
type rsRequest struct {
	Model             string          `json:"model"`
	Input             json.RawMessage `json:"input"`
	Instructions      *string         `json:"instructions"`
	MaxOutputTokens   *int64          `json:"max_output_tokens"`
	Temperature       *float64        `json:"temperature"`
	TopP              *float64        `json:"top_p"`
	Tools             []rsTool        `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	Text              *struct {
		Format *rsFormat `json:"format"`
	} `json:"text"`
	Reasoning *struct {
		Effort *string `json:"effort"`
	} `json:"reasoning"`
	Stream bool   `json:"stream"`
	User   string `json:"user"`
}

type rsTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

type rsFormat struct {
	Type        string          `json:"type"`
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// rsItem is one input item: a message (type "message", or none with a
// role), a function call the model made, or its output.
type rsItem struct {
	Type      string          `json:"type"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments string          `json:"arguments"`
	Output    json.RawMessage `json:"output"`
}

// rsPart is one content part of an input message.
type rsPart struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	ImageURL string `json:"image_url"`
	FileID   string `json:"file_id"`
	Detail   string `json:"detail"`
	FileData string `json:"file_data"`
	Filename string `json:"filename"`
}

// chatOut is the chat request the translation writes: oaRequest's members
// plus those only the Responses translation sets.
type chatOut struct {
	Model             string          `json:"model"`
	Messages          []chatMessage   `json:"messages"`
	MaxTokens         *int64          `json:"max_tokens,omitempty"`
	Temperature       *float64        `json:"temperature,omitempty"`
	TopP              *float64        `json:"top_p,omitempty"`
	Tools             []chatTool      `json:"tools,omitempty"`
	ToolChoice        any             `json:"tool_choice,omitempty"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls,omitempty"`
	ResponseFormat    any             `json:"response_format,omitempty"`
	ReasoningEffort   *string         `json:"reasoning_effort,omitempty"`
	Stream            bool            `json:"stream,omitempty"`
	User              string          `json:"user,omitempty"`
	StreamOptions     json.RawMessage `json:"stream_options,omitempty"`
}

type chatMessage struct {
	Role       string       `json:"role"`
	Content    any          `json:"content"`
	ToolCalls  []oaToolCall `json:"tool_calls,omitempty"`
	ToolCallID string       `json:"tool_call_id,omitempty"`
}

type chatTool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
		Strict      *bool           `json:"strict,omitempty"`
	} `json:"function"`
}

// ResponsesToChat turns a Responses API request into a chat completions
// request for model. A stream asks for the usage chunk, which the
// Responses events report in response.completed.
func ResponsesToChat(body []byte, model string) ([]byte, error) {
	var in rsRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("request body: %w", err)
	}
	out := chatOut{Model: model, MaxTokens: in.MaxOutputTokens, Temperature: in.Temperature, TopP: in.TopP,
		ParallelToolCalls: in.ParallelToolCalls, Stream: in.Stream, User: in.User}
	if in.Stream {
		out.StreamOptions = json.RawMessage(`{"include_usage":true}`)
	}
	if in.Reasoning != nil {
		out.ReasoningEffort = in.Reasoning.Effort
	}
	if in.Instructions != nil && *in.Instructions != "" {
		out.Messages = append(out.Messages, chatMessage{Role: "system", Content: *in.Instructions})
	}
	msgs, err := inputMessages(in.Input)
	if err != nil {
		return nil, onField("input", err)
	}
	out.Messages = append(out.Messages, msgs...)
	if len(out.Messages) == 0 {
		return nil, onField("input", errors.New("input must not be empty"))
	}
	for _, t := range in.Tools {
		if t.Type != "function" {
			return nil, onField("tools", fmt.Errorf("tools: the %q tool needs a deployment that serves the Responses API itself; this one is reached through chat completions, which has only function tools", t.Type))
		}
		var ct chatTool
		ct.Type = "function"
		ct.Function.Name, ct.Function.Description, ct.Function.Parameters, ct.Function.Strict = t.Name, t.Description, t.Parameters, t.Strict
		out.Tools = append(out.Tools, ct)
	}
	if out.ToolChoice, err = chatToolChoice(in.ToolChoice); err != nil {
		return nil, onField("tool_choice", err)
	}
	if in.Text != nil && in.Text.Format != nil {
		if out.ResponseFormat, err = chatResponseFormat(in.Text.Format); err != nil {
			return nil, onField("text", err)
		}
	}
	return json.Marshal(out)
}

// inputMessages turns the input (a string, or a list of items) into chat
// messages. Consecutive function_call items become one assistant message
// with several tool calls, joined to the assistant text before them.
func inputMessages(raw json.RawMessage) ([]chatMessage, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []chatMessage{{Role: "user", Content: s}}, nil
	}
	var items []rsItem
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, errors.New("input must be a string or a list of input items")
	}
	var out []chatMessage
	for i, it := range items {
		typ := it.Type
		if typ == "" && it.Role != "" {
			typ = "message"
		}
		switch typ {
		case "message":
			m, err := inputMessage(it)
			if err != nil {
				return nil, fmt.Errorf("input[%d]: %w", i, err)
			}
			out = append(out, m)
		case "function_call":
			tc := oaToolCall{ID: it.CallID, Type: "function"}
			tc.Function.Name, tc.Function.Arguments = it.Name, it.Arguments
			if n := len(out); n > 0 && out[n-1].Role == "assistant" && out[n-1].ToolCallID == "" {
				out[n-1].ToolCalls = append(out[n-1].ToolCalls, tc)
			} else {
				out = append(out, chatMessage{Role: "assistant", ToolCalls: []oaToolCall{tc}})
			}
		case "function_call_output":
			text, err := outputText(it.Output)
			if err != nil {
				return nil, fmt.Errorf("input[%d].output: %w", i, err)
			}
			out = append(out, chatMessage{Role: "tool", ToolCallID: it.CallID, Content: text})
		case "reasoning":
			// A reasoning model's own notes: chat has no place for them.
		default:
			return nil, fmt.Errorf("input[%d]: items of type %q need a deployment that serves the Responses API itself", i, typ)
		}
	}
	return out, nil
}

// inputMessage is one message item as a chat message. The developer role
// becomes system, which every chat server knows.
func inputMessage(it rsItem) (chatMessage, error) {
	role := it.Role
	switch role {
	case "developer":
		role = "system"
	case "user", "system", "assistant":
	default:
		return chatMessage{}, fmt.Errorf("role %q is not one of user, assistant, system, developer", role)
	}
	var s string
	if json.Unmarshal(it.Content, &s) == nil {
		return chatMessage{Role: role, Content: s}, nil
	}
	var parts []rsPart
	if err := json.Unmarshal(it.Content, &parts); err != nil {
		return chatMessage{}, errors.New("content must be a string or a list of content parts")
	}
	if role != "user" {
		// System and assistant content is text in chat.
		var b strings.Builder
		for _, p := range parts {
			b.WriteString(p.Text)
		}
		return chatMessage{Role: role, Content: b.String()}, nil
	}
	var out []map[string]any
	for _, p := range parts {
		switch p.Type {
		case "input_text", "output_text", "text":
			out = append(out, map[string]any{"type": "text", "text": p.Text})
		case "input_image":
			if p.ImageURL == "" {
				return chatMessage{}, errors.New("an input_image by file_id needs a deployment that serves the Responses API itself")
			}
			img := map[string]any{"url": p.ImageURL}
			if p.Detail != "" {
				img["detail"] = p.Detail
			}
			out = append(out, map[string]any{"type": "image_url", "image_url": img})
		case "input_file":
			f := map[string]any{}
			for k, v := range map[string]string{"file_id": p.FileID, "file_data": p.FileData, "filename": p.Filename} {
				if v != "" {
					f[k] = v
				}
			}
			out = append(out, map[string]any{"type": "file", "file": f})
		default:
			return chatMessage{}, fmt.Errorf("content part type %q is not supported through chat completions", p.Type)
		}
	}
	return chatMessage{Role: role, Content: out}, nil
}

// outputText is a function_call_output's output: a string, or parts whose
// text is joined.
func outputText(raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []rsPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("must be a string or a list of content parts")
	}
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// chatToolChoice maps tool_choice: the modes are the same words; a named
// function moves under "function".
func chatToolChoice(raw json.RawMessage) (any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var mode string
	if json.Unmarshal(raw, &mode) == nil {
		return mode, nil
	}
	var c struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	if json.Unmarshal(raw, &c) != nil || c.Type != "function" || c.Name == "" {
		return nil, errors.New(`tool_choice must be "none", "auto", "required" or {"type":"function","name":...} through chat completions`)
	}
	return map[string]any{"type": "function", "function": map[string]string{"name": c.Name}}, nil
}

// chatResponseFormat maps text.format to response_format.
func chatResponseFormat(f *rsFormat) (any, error) {
	switch f.Type {
	case "", "text":
		return nil, nil
	case "json_object":
		return map[string]string{"type": "json_object"}, nil
	case "json_schema":
		js := map[string]any{"name": f.Name, "schema": f.Schema}
		if f.Description != "" {
			js["description"] = f.Description
		}
		if f.Strict != nil {
			js["strict"] = *f.Strict
		}
		return map[string]any{"type": "json_schema", "json_schema": js}, nil
	}
	return nil, fmt.Errorf("text.format type %q is not one of text, json_object, json_schema", f.Type)
}
