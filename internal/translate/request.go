package translate

import (
	"encoding/json"
	"fmt"
	"strings"
)

// DefaultMaxTokens is sent to Anthropic, which requires max_tokens, when an
// OpenAI request sets none.
const DefaultMaxTokens = 4096

// ChatToMessages turns an OpenAI chat request into an Anthropic Messages
// request for model. System messages become the system prompt, tool
// messages become tool_result blocks, consecutive messages of one role are
// merged (Anthropic requires alternation).
func ChatToMessages(body []byte, model string) ([]byte, error) {
	var in oaRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	out := anRequest{Model: model, Temperature: in.Temperature, TopP: in.TopP, Stream: in.Stream, MaxTokens: DefaultMaxTokens}
	switch {
	case in.MaxCompletionTokens != nil:
		out.MaxTokens = *in.MaxCompletionTokens
	case in.MaxTokens != nil:
		out.MaxTokens = *in.MaxTokens
	}
	stop, err := oaStop(in.Stop)
	if err != nil {
		return nil, err
	}
	out.StopSequences = stop
	if in.User != "" {
		out.Metadata = &struct {
			UserID string `json:"user_id,omitempty"`
		}{in.User}
	}
	for _, t := range in.Tools {
		schema := t.Function.Parameters
		if len(schema) == 0 || string(schema) == "null" {
			schema = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		out.Tools = append(out.Tools, anTool{Name: t.Function.Name, Description: t.Function.Description, InputSchema: schema})
	}
	if tc := in.ToolChoice; len(tc) > 0 && string(tc) != "null" {
		var s string
		if json.Unmarshal(tc, &s) == nil {
			switch s {
			case "auto":
				out.ToolChoice = &anToolChoice{Type: "auto"}
			case "required":
				out.ToolChoice = &anToolChoice{Type: "any"}
			case "none":
				out.ToolChoice = &anToolChoice{Type: "none"}
			}
		} else {
			var obj struct {
				Function struct{ Name string } `json:"function"`
			}
			if json.Unmarshal(tc, &obj) == nil && obj.Function.Name != "" {
				out.ToolChoice = &anToolChoice{Type: "tool", Name: obj.Function.Name}
			}
		}
	}
	var system []string
	var msgs []anMessage
	var blocks []anBlock
	role := ""
	flush := func() {
		if role != "" && len(blocks) > 0 {
			raw, _ := json.Marshal(blocks)
			msgs = append(msgs, anMessage{Role: role, Content: raw})
		}
		blocks, role = nil, ""
	}
	add := func(r string, bs ...anBlock) {
		if r != role {
			flush()
			role = r
		}
		blocks = append(blocks, bs...)
	}
	for i, m := range in.Messages {
		switch m.Role {
		case "system", "developer":
			text, err := plainText(m.Content)
			if err != nil {
				return nil, fmt.Errorf("messages[%d]: %w", i, err)
			}
			system = append(system, text)
		case "user":
			bs, err := userBlocks(m.Content)
			if err != nil {
				return nil, fmt.Errorf("messages[%d]: %w", i, err)
			}
			add("user", bs...)
		case "assistant":
			var bs []anBlock
			if text, err := plainText(m.Content); err == nil && text != "" {
				bs = append(bs, anBlock{Type: "text", Text: text})
			}
			for _, tc := range m.ToolCalls {
				input := json.RawMessage(tc.Function.Arguments)
				if !json.Valid(input) || len(input) == 0 {
					input = json.RawMessage(`{}`)
				}
				bs = append(bs, anBlock{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: input})
			}
			if len(bs) > 0 {
				add("assistant", bs...)
			}
		case "tool", "function":
			text, _ := plainText(m.Content)
			content, _ := json.Marshal(text)
			add("user", anBlock{Type: "tool_result", ToolUseID: m.ToolCallID, Content: content})
		default:
			return nil, fmt.Errorf("messages[%d]: unknown role %q", i, m.Role)
		}
	}
	flush()
	if len(system) > 0 {
		out.System, _ = json.Marshal(strings.Join(system, "\n\n"))
	}
	out.Messages = msgs
	if out.Messages == nil {
		out.Messages = []anMessage{}
	}
	return json.Marshal(out)
}

// plainText reads an OpenAI content that must be text: a string or text parts.
func plainText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []oaPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("content must be a string or a list of parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String(), nil
}

// userBlocks turns OpenAI user content into Anthropic blocks: text and
// images (data: URLs become base64 sources, others url sources).
func userBlocks(raw json.RawMessage) ([]anBlock, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []anBlock{{Type: "text", Text: s}}, nil
	}
	var parts []oaPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return nil, fmt.Errorf("content must be a string or a list of parts")
	}
	var out []anBlock
	for _, p := range parts {
		switch p.Type {
		case "text":
			out = append(out, anBlock{Type: "text", Text: p.Text})
		case "image_url":
			if p.ImageURL == nil {
				return nil, fmt.Errorf("image_url part without a url")
			}
			out = append(out, anBlock{Type: "image", Source: imageSource(p.ImageURL.URL)})
		}
	}
	return out, nil
}

func imageSource(u string) *anSource {
	if rest, ok := strings.CutPrefix(u, "data:"); ok {
		meta, data, _ := strings.Cut(rest, ",")
		media, _, _ := strings.Cut(meta, ";")
		return &anSource{Type: "base64", MediaType: media, Data: data}
	}
	return &anSource{Type: "url", URL: u}
}

// MessagesToChat turns an Anthropic Messages request into an OpenAI chat
// request for model.
func MessagesToChat(body []byte, model string) ([]byte, error) {
	var in anRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	out := oaRequest{Model: model, Temperature: in.Temperature, TopP: in.TopP, Stream: in.Stream}
	if in.MaxTokens > 0 {
		out.MaxTokens = &in.MaxTokens
	}
	if len(in.StopSequences) > 0 {
		out.Stop, _ = json.Marshal(in.StopSequences)
	}
	if in.Metadata != nil {
		out.User = in.Metadata.UserID
	}
	for _, t := range in.Tools {
		var ot oaTool
		ot.Type = "function"
		ot.Function.Name, ot.Function.Description, ot.Function.Parameters = t.Name, t.Description, t.InputSchema
		out.Tools = append(out.Tools, ot)
	}
	if tc := in.ToolChoice; tc != nil {
		switch tc.Type {
		case "auto":
			out.ToolChoice = json.RawMessage(`"auto"`)
		case "any":
			out.ToolChoice = json.RawMessage(`"required"`)
		case "none":
			out.ToolChoice = json.RawMessage(`"none"`)
		case "tool":
			out.ToolChoice, _ = json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": tc.Name}})
		}
	}
	if len(in.System) > 0 && string(in.System) != "null" {
		text, err := blocksText(in.System)
		if err != nil {
			return nil, fmt.Errorf("system: %w", err)
		}
		content, _ := json.Marshal(text)
		out.Messages = append(out.Messages, oaMessage{Role: "system", Content: content})
	}
	for i, m := range in.Messages {
		msgs, err := chatMessages(m)
		if err != nil {
			return nil, fmt.Errorf("messages[%d]: %w", i, err)
		}
		out.Messages = append(out.Messages, msgs...)
	}
	return json.Marshal(out)
}

// blocksText reads a string or text blocks.
func blocksText(raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var bs []anBlock
	if err := json.Unmarshal(raw, &bs); err != nil {
		return "", fmt.Errorf("must be a string or a list of blocks")
	}
	var b strings.Builder
	for _, x := range bs {
		if x.Type == "text" {
			if b.Len() > 0 {
				b.WriteString("\n")
			}
			b.WriteString(x.Text)
		}
	}
	return b.String(), nil
}

// chatMessages turns one Anthropic message into OpenAI messages: tool
// results become tool messages (before the user's other content), tool_use
// blocks become tool_calls.
func chatMessages(m anMessage) ([]oaMessage, error) {
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		c, _ := json.Marshal(s)
		return []oaMessage{{Role: m.Role, Content: c}}, nil
	}
	var bs []anBlock
	if err := json.Unmarshal(m.Content, &bs); err != nil {
		return nil, fmt.Errorf("content must be a string or a list of blocks")
	}
	var out []oaMessage
	var parts []map[string]any
	var calls []oaToolCall
	for _, b := range bs {
		switch b.Type {
		case "text":
			parts = append(parts, map[string]any{"type": "text", "text": b.Text})
		case "image":
			if b.Source == nil {
				return nil, fmt.Errorf("image block without a source")
			}
			u := b.Source.URL
			if b.Source.Type == "base64" {
				u = "data:" + b.Source.MediaType + ";base64," + b.Source.Data
			}
			parts = append(parts, map[string]any{"type": "image_url", "image_url": map[string]string{"url": u}})
		case "tool_use":
			var tc oaToolCall
			tc.ID, tc.Type = b.ID, "function"
			tc.Function.Name = b.Name
			tc.Function.Arguments = string(b.Input)
			if tc.Function.Arguments == "" {
				tc.Function.Arguments = "{}"
			}
			calls = append(calls, tc)
		case "tool_result":
			text := ""
			if len(b.Content) > 0 {
				text, _ = blocksText(b.Content)
			}
			c, _ := json.Marshal(text)
			out = append(out, oaMessage{Role: "tool", ToolCallID: b.ToolUseID, Content: c})
		}
	}
	if len(parts) > 0 || len(calls) > 0 {
		msg := oaMessage{Role: m.Role, ToolCalls: calls}
		switch {
		case len(parts) == 1 && parts[0]["type"] == "text":
			msg.Content, _ = json.Marshal(parts[0]["text"])
		case len(parts) > 0 && m.Role == "assistant":
			var b strings.Builder
			for _, p := range parts {
				if t, ok := p["text"].(string); ok {
					b.WriteString(t)
				}
			}
			msg.Content, _ = json.Marshal(b.String())
		case len(parts) > 0:
			msg.Content, _ = json.Marshal(parts)
		}
		out = append(out, msg)
	}
	return out, nil
}
