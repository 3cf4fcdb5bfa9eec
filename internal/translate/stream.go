package translate

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/usage"
)

// Stream turns one upstream server-sent event into the events the client
// gets, and keeps the usage it saw.
type Stream interface {
	// Event appends to out what the client is sent for the upstream event
	// ev (its whole text: "event: ...\ndata: ...\n\n").
	Event(ev, out []byte) []byte
	// End appends what is still owed when the upstream stream ended.
	End(out []byte) []byte
	// Usage is the usage the stream reported, if it did.
	Usage() (usage.Usage, bool)
	// Chunks counts content-bearing events (text or tool-call fragments);
	// a Responses stream counts one as soon as the upstream answered.
	Chunks() int
}

// parseEvent splits an SSE event into its name and data.
func parseEvent(ev []byte) (name string, data []byte) {
	for rest := ev; len(rest) > 0; {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte{'\n'})
		line = bytes.TrimRight(line, "\r")
		if v, ok := bytes.CutPrefix(line, []byte("event:")); ok {
			name = string(bytes.TrimSpace(v))
		} else if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, bytes.TrimSpace(v)...)
		}
	}
	return name, data
}

func appendData(out []byte, v any) []byte {
	b, _ := json.Marshal(v)
	out = append(out, "data: "...)
	out = append(out, b...)
	return append(out, "\n\n"...)
}

func appendEvent(out []byte, name string, v any) []byte {
	b, _ := json.Marshal(v)
	out = append(out, "event: "...)
	out = append(out, name...)
	out = append(out, "\ndata: "...)
	out = append(out, b...)
	return append(out, "\n\n"...)
}

type anEvent struct {
	Type         string           `json:"type"`
	Index        int              `json:"index"`
	Message      *anResponse      `json:"message"`
	ContentBlock *anBlock         `json:"content_block"`
	Delta        json.RawMessage  `json:"delta"`
	Usage        *usage.Anthropic `json:"usage"`
	Error        json.RawMessage  `json:"error"`
}

// ---- Anthropic upstream, OpenAI client ----

type messagesToChat struct {
	includeUsage bool
	id, model    string
	created      int64
	usage        usage.Anthropic
	hasUsage     bool
	tools        map[int]int // Anthropic block index -> OpenAI tool_call index
	chunks       int
	done         bool
}

// MessagesToChatStream translates an Anthropic event stream into OpenAI
// chat.completion.chunk events; with includeUsage the last chunk carries the
// usage, as stream_options.include_usage asks.
func MessagesToChatStream(includeUsage bool) Stream {
	return &messagesToChat{includeUsage: includeUsage, created: time.Now().Unix(), tools: map[int]int{}}
}

func (s *messagesToChat) chunk(out []byte, delta map[string]any, finish any) []byte {
	return appendData(out, map[string]any{"id": s.id, "object": "chat.completion.chunk", "created": s.created, "model": s.model,
		"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}})
}

func (s *messagesToChat) Event(ev, out []byte) []byte {
	_, data := parseEvent(ev)
	var e anEvent
	if len(data) == 0 || json.Unmarshal(data, &e) != nil {
		return out
	}
	switch e.Type {
	case "message_start":
		if e.Message != nil {
			s.id, s.model = "chatcmpl-"+strings.TrimPrefix(e.Message.ID, "msg_"), e.Message.Model
			s.usage = e.Message.Usage // final once message_delta confirms it
		}
		return s.chunk(out, map[string]any{"role": "assistant", "content": ""}, nil)
	case "content_block_start":
		if b := e.ContentBlock; b != nil && b.Type == "tool_use" {
			i := len(s.tools)
			s.tools[e.Index] = i
			s.chunks++
			return s.chunk(out, map[string]any{"tool_calls": []any{map[string]any{"index": i, "id": b.ID, "type": "function",
				"function": map[string]string{"name": b.Name, "arguments": ""}}}}, nil)
		}
	case "content_block_delta":
		var d struct {
			Type        string `json:"type"`
			Text        string `json:"text"`
			PartialJSON string `json:"partial_json"`
		}
		if json.Unmarshal(e.Delta, &d) != nil {
			return out
		}
		switch d.Type {
		case "text_delta":
			s.chunks++
			return s.chunk(out, map[string]any{"content": d.Text}, nil)
		case "input_json_delta":
			s.chunks++
			return s.chunk(out, map[string]any{"tool_calls": []any{map[string]any{"index": s.tools[e.Index], "function": map[string]string{"arguments": d.PartialJSON}}}}, nil)
		}
	case "message_delta":
		if e.Usage != nil {
			s.usage.OutputTokens = e.Usage.OutputTokens
			if e.Usage.InputTokens > 0 {
				s.usage.InputTokens = e.Usage.InputTokens
			}
			s.hasUsage = true
		}
		var d struct {
			StopReason string `json:"stop_reason"`
		}
		if json.Unmarshal(e.Delta, &d) == nil && d.StopReason != "" {
			return s.chunk(out, map[string]any{}, mapStop(anToOAStop, d.StopReason, "stop"))
		}
	case "message_stop":
		s.done = true
		if s.includeUsage && s.hasUsage {
			out = appendData(out, map[string]any{"id": s.id, "object": "chat.completion.chunk", "created": s.created, "model": s.model,
				"choices": []any{}, "usage": s.usage.Usage().OpenAI()})
		}
		return append(out, "data: [DONE]\n\n"...)
	case "error":
		s.done = true
		var er struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(e.Error, &er)
		return appendData(out, map[string]any{"error": map[string]any{"message": er.Message, "type": er.Type, "code": er.Type}})
	}
	return out
}

func (s *messagesToChat) End(out []byte) []byte      { return out }
func (s *messagesToChat) Usage() (usage.Usage, bool) { return s.usage.Usage(), s.hasUsage }
func (s *messagesToChat) Chunks() int                { return s.chunks }

// ---- OpenAI upstream, Anthropic client ----

type chatToMessages struct {
	model     string
	id        string
	started   bool
	open      int    // index of the open content block; -1 when none
	openKind  string // text or tool_use
	next      int    // next content block index
	toolBlock map[int]int
	openTool  string // id of the tool call whose block is open
	stop      string
	usage     usage.Usage
	hasUsage  bool
	chunks    int
	done      bool // the stream is closed: finished, or ended by an error
}

// ChatToMessagesStream translates OpenAI chat.completion.chunk events into
// Anthropic's event sequence (message_start, content_block_start/delta/stop,
// message_delta with the usage, message_stop). The upstream must have been
// asked for its usage chunk (stream_options.include_usage). An error event
// ({"error":{...}}) becomes Anthropic's error event and ends the stream.
func ChatToMessagesStream(model string) Stream {
	return &chatToMessages{model: model, open: -1, toolBlock: map[int]int{}}
}

func (s *chatToMessages) start(out []byte) []byte {
	if s.started {
		return out
	}
	s.started = true
	if s.id == "" {
		s.id = newID("msg_")
	}
	return appendEvent(out, "message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": s.id, "type": "message", "role": "assistant", "model": s.model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil, "usage": usage.Anthropic{}}})
}

func (s *chatToMessages) closeBlock(out []byte) []byte {
	if s.open < 0 {
		return out
	}
	out = appendEvent(out, "content_block_stop", map[string]any{"type": "content_block_stop", "index": s.open})
	s.open, s.openKind = -1, ""
	return out
}

func (s *chatToMessages) openBlock(out []byte, kind string, block map[string]any) []byte {
	out = s.closeBlock(out)
	s.open, s.openKind = s.next, kind
	s.next++
	return appendEvent(out, "content_block_start", map[string]any{"type": "content_block_start", "index": s.open, "content_block": block})
}

func (s *chatToMessages) Event(ev, out []byte) []byte {
	_, data := parseEvent(ev)
	if len(data) == 0 {
		return out
	}
	if string(data) == "[DONE]" {
		return s.finish(out)
	}
	var c struct {
		ID      string `json:"id"`
		Model   string `json:"model"`
		Choices []struct {
			Delta struct {
				Content   *string      `json:"content"`
				ToolCalls []oaToolCall `json:"tool_calls"`
			} `json:"delta"`
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
		Usage *usage.OpenAI `json:"usage"`
		Error *struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	if s.done || json.Unmarshal(data, &c) != nil {
		return out
	}
	if c.Error != nil {
		// Cut short: no message_stop, which would tell the client the
		// answer is whole.
		s.done = true
		return appendEvent(out, "error", map[string]any{"type": "error",
			"error": map[string]string{"type": anthropicStreamErrorType(c.Error.Type), "message": c.Error.Message}})
	}
	if s.id == "" && c.ID != "" {
		s.id = "msg_" + strings.TrimPrefix(c.ID, "chatcmpl-")
	}
	out = s.start(out)
	if c.Usage != nil {
		s.usage, s.hasUsage = c.Usage.Usage(), true
	}
	for _, ch := range c.Choices {
		if t := ch.Delta.Content; t != nil && *t != "" {
			if s.openKind != "text" {
				out = s.openBlock(out, "text", map[string]any{"type": "text", "text": ""})
			}
			s.chunks++
			out = appendEvent(out, "content_block_delta", map[string]any{"type": "content_block_delta", "index": s.open,
				"delta": map[string]string{"type": "text_delta", "text": *t}})
		}
		for _, tc := range ch.Delta.ToolCalls {
			i := 0
			if tc.Index != nil {
				i = *tc.Index
			}
			if _, seen := s.toolBlock[i]; !seen || (tc.ID != "" && tc.ID != s.openTool) {
				// A new call: a new index, or (from upstreams that omit the
				// index) a new id.
				out = s.openBlock(out, "tool_use", map[string]any{"type": "tool_use", "id": tc.ID, "name": tc.Function.Name, "input": map[string]any{}})
				s.toolBlock[i] = s.open
				s.openTool = tc.ID
			}
			if tc.Function.Arguments != "" {
				s.chunks++
				out = appendEvent(out, "content_block_delta", map[string]any{"type": "content_block_delta", "index": s.toolBlock[i],
					"delta": map[string]string{"type": "input_json_delta", "partial_json": tc.Function.Arguments}})
			}
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			s.stop = mapStop(oaToANStop, *ch.FinishReason, "end_turn")
			out = s.closeBlock(out)
		}
	}
	return out
}

// finish sends the closing events once.
func (s *chatToMessages) finish(out []byte) []byte {
	if s.done {
		return out
	}
	s.done = true
	out = s.start(out)
	out = s.closeBlock(out)
	stop := s.stop
	if stop == "" {
		stop = "end_turn"
	}
	out = appendEvent(out, "message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": stop, "stop_sequence": nil}, "usage": s.usage.Anthropic()})
	return appendEvent(out, "message_stop", map[string]any{"type": "message_stop"})
}

// End closes a stream whose upstream finished (a finish_reason was seen)
// without sending [DONE]; a stream cut short is left unterminated.
func (s *chatToMessages) End(out []byte) []byte {
	if s.stop == "" {
		return out
	}
	return s.finish(out)
}

// anthropicStreamErrorType is an OpenAI error type as Anthropic's: the
// types both APIs name alike are kept, any other is an api_error.
func anthropicStreamErrorType(t string) string {
	switch t {
	case "invalid_request_error", "authentication_error", "permission_error", "not_found_error", "rate_limit_error", "overloaded_error":
		return t
	}
	return "api_error"
}

func (s *chatToMessages) Usage() (usage.Usage, bool) { return s.usage, s.hasUsage }
func (s *chatToMessages) Chunks() int                { return s.chunks }

// ---- Anthropic upstream, Anthropic client ----

type messagesPassthrough struct {
	usage    usage.Anthropic
	hasUsage bool
	chunks   int
}

// MessagesPassthrough forwards Anthropic events unchanged, reading usage
// from message_start and message_delta.
func MessagesPassthrough() Stream { return &messagesPassthrough{} }

func (s *messagesPassthrough) Event(ev, out []byte) []byte {
	_, data := parseEvent(ev)
	if bytes.Contains(data, []byte(`"usage"`)) || bytes.Contains(data, []byte(`"content_block_delta"`)) {
		var e anEvent
		if json.Unmarshal(data, &e) == nil {
			switch e.Type {
			case "message_start":
				if e.Message != nil {
					s.usage = e.Message.Usage // final once message_delta confirms it
				}
			case "message_delta":
				if e.Usage != nil {
					s.usage.OutputTokens = e.Usage.OutputTokens
					if e.Usage.InputTokens > 0 {
						s.usage.InputTokens = e.Usage.InputTokens
					}
					s.hasUsage = true
				}
			case "content_block_delta":
				s.chunks++
			}
		}
	}
	return append(out, ev...)
}

func (s *messagesPassthrough) End(out []byte) []byte      { return out }
func (s *messagesPassthrough) Usage() (usage.Usage, bool) { return s.usage.Usage(), s.hasUsage }
func (s *messagesPassthrough) Chunks() int                { return s.chunks }
