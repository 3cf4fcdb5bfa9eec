package gateway

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/tollgate/tollgate/internal/provider"
)

// streamAnswer assembles the events a client received into one answer in
// the client's format: OpenAI chat (text, reasoning, tool calls), OpenAI
// completions (text), Anthropic Messages (text and tool-use blocks) or the
// Responses API (the response.completed event's response, else the text
// deltas). It keeps at most limit bytes of text; the rest is counted.
type streamAnswer struct {
	op      provider.Op
	limit   int
	kept    int // bytes of text kept
	dropped int // bytes of text past the limit

	id, model, stop string
	choices         []*streamChoice // chat and completions, by index
	blocks          []*streamBlock  // Anthropic content blocks, by index
	completed       []byte          // Responses API: the final response object
}

type streamChoice struct {
	text, reasoning strings.Builder
	tools           []*streamTool
	finish          string
}

type streamTool struct {
	id, name string
	args     strings.Builder
}

type streamBlock struct {
	typ, id, name string
	text          strings.Builder
}

// teeSink passes events on as the inner sink makes them and records what
// the client is sent.
type teeSink struct {
	inner eventSink
	a     *streamAnswer
}

func (t teeSink) event(ev, out []byte) []byte {
	n := len(out)
	out = t.inner.event(ev, out)
	t.a.observe(out[n:])
	return out
}

func (t teeSink) end(out []byte) []byte {
	n := len(out)
	out = t.inner.end(out)
	t.a.observe(out[n:])
	return out
}

func (t teeSink) release(out []byte) []byte {
	r, ok := t.inner.(releaser)
	if !ok {
		return out
	}
	n := len(out)
	out = r.release(out)
	t.a.observe(out[n:])
	return out
}

// add keeps s in b within the limit.
func (a *streamAnswer) add(b *strings.Builder, s string) {
	room := a.limit - a.kept
	if len(s) > room {
		a.dropped += len(s) - max(room, 0)
		s = clipBytes(s, max(room, 0))
	}
	a.kept += len(s)
	b.WriteString(s)
}

// streamEvent holds the members of any of the client formats' events.
type streamEvent struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Type    string `json:"type"`
	Choices []struct {
		Index        int     `json:"index"`
		Text         string  `json:"text"`
		FinishReason *string `json:"finish_reason"`
		Delta        struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
			ToolCalls        []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
	} `json:"choices"`
	// Anthropic
	Index   int             `json:"index"`
	Delta   json.RawMessage `json:"delta"` // an object; a string in the Responses API
	Message struct {
		ID    string `json:"id"`
		Model string `json:"model"`
	} `json:"message"`
	ContentBlock struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		Name string `json:"name"`
		Text string `json:"text"`
	} `json:"content_block"`
	// Responses API
	Response json.RawMessage `json:"response"`
}

type anthropicDelta struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Thinking    string `json:"thinking"`
	PartialJSON string `json:"partial_json"`
	StopReason  string `json:"stop_reason"`
}

const maxStreamSlots = 16 // choices, tool calls or blocks kept per answer

func (a *streamAnswer) observe(sse []byte) {
	for data, rest, ok := nextData(sse); ok; data, rest, ok = nextData(rest) {
		var ev streamEvent
		if json.Unmarshal(data, &ev) != nil {
			continue
		}
		a.take(&ev)
	}
}

func (a *streamAnswer) take(ev *streamEvent) {
	if a.id == "" && ev.ID != "" {
		a.id = ev.ID
	}
	if a.model == "" && ev.Model != "" {
		a.model = ev.Model
	}
	switch a.op {
	case provider.OpMessages:
		a.takeAnthropic(ev)
		return
	case provider.OpResponses:
		switch ev.Type {
		case "response.completed", "response.incomplete", "response.failed":
			if len(ev.Response) > 0 && len(ev.Response) <= 4*a.limit {
				a.completed = bytes.Clone(ev.Response)
			}
		case "response.output_text.delta":
			var s string
			if json.Unmarshal(ev.Delta, &s) == nil {
				a.add(&a.choice(0).text, s)
			}
		}
		return
	}
	for _, ch := range ev.Choices {
		c := a.choice(ch.Index)
		if c == nil {
			continue
		}
		a.add(&c.text, ch.Text)
		a.add(&c.text, ch.Delta.Content)
		a.add(&c.reasoning, ch.Delta.ReasoningContent)
		for _, tc := range ch.Delta.ToolCalls {
			if tc.Index < 0 || tc.Index >= maxStreamSlots {
				continue
			}
			for len(c.tools) <= tc.Index {
				c.tools = append(c.tools, &streamTool{})
			}
			t := c.tools[tc.Index]
			if tc.ID != "" {
				t.id = tc.ID
			}
			if tc.Function.Name != "" {
				t.name = tc.Function.Name
			}
			a.add(&t.args, tc.Function.Arguments)
		}
		if ch.FinishReason != nil {
			c.finish = *ch.FinishReason
		}
	}
}

func (a *streamAnswer) choice(i int) *streamChoice {
	if i < 0 || i >= maxStreamSlots {
		return nil
	}
	for len(a.choices) <= i {
		a.choices = append(a.choices, &streamChoice{})
	}
	return a.choices[i]
}

func (a *streamAnswer) takeAnthropic(ev *streamEvent) {
	switch ev.Type {
	case "message_start":
		a.id, a.model = ev.Message.ID, ev.Message.Model
	case "content_block_start":
		if ev.Index < 0 || ev.Index >= maxStreamSlots {
			return
		}
		for len(a.blocks) <= ev.Index {
			a.blocks = append(a.blocks, &streamBlock{typ: "text"})
		}
		b := a.blocks[ev.Index]
		b.typ, b.id, b.name = ev.ContentBlock.Type, ev.ContentBlock.ID, ev.ContentBlock.Name
		a.add(&b.text, ev.ContentBlock.Text)
	case "content_block_delta":
		if ev.Index < 0 || ev.Index >= len(a.blocks) {
			return
		}
		var d anthropicDelta
		if json.Unmarshal(ev.Delta, &d) != nil {
			return
		}
		b := a.blocks[ev.Index]
		a.add(&b.text, d.Text)
		a.add(&b.text, d.Thinking)
		a.add(&b.text, d.PartialJSON)
	case "message_delta":
		var d anthropicDelta
		if json.Unmarshal(ev.Delta, &d) == nil && d.StopReason != "" {
			a.stop = d.StopReason
		}
	}
}

// json is the assembled answer.
func (a *streamAnswer) json() []byte {
	var v any
	switch a.op {
	case provider.OpMessages:
		content := []map[string]any{}
		for _, b := range a.blocks {
			switch b.typ {
			case "tool_use", "server_tool_use":
				var input any = b.text.String()
				if json.Valid([]byte(b.text.String())) {
					input = json.RawMessage(b.text.String())
				}
				content = append(content, map[string]any{"type": b.typ, "id": b.id, "name": b.name, "input": input})
			case "thinking":
				content = append(content, map[string]any{"type": "thinking", "thinking": b.text.String()})
			default:
				content = append(content, map[string]any{"type": "text", "text": b.text.String()})
			}
		}
		v = map[string]any{"id": a.id, "type": "message", "role": "assistant", "model": a.model, "content": content, "stop_reason": a.stop}
	case provider.OpResponses:
		if a.completed != nil && a.dropped == 0 {
			return a.completed
		}
		text := ""
		if len(a.choices) > 0 {
			text = a.choices[0].text.String()
		}
		v = map[string]any{"id": a.id, "object": "response", "model": a.model, "output_text": text}
	case provider.OpCompletions:
		choices := []map[string]any{}
		for i, c := range a.choices {
			choices = append(choices, map[string]any{"index": i, "text": c.text.String(), "finish_reason": c.finish})
		}
		v = map[string]any{"id": a.id, "object": "text_completion", "model": a.model, "choices": choices}
	default:
		choices := []map[string]any{}
		for i, c := range a.choices {
			msg := map[string]any{"role": "assistant", "content": c.text.String()}
			if c.reasoning.Len() > 0 {
				msg["reasoning_content"] = c.reasoning.String()
			}
			if len(c.tools) > 0 {
				var calls []map[string]any
				for _, t := range c.tools {
					calls = append(calls, map[string]any{"id": t.id, "type": "function",
						"function": map[string]any{"name": t.name, "arguments": t.args.String()}})
				}
				msg["tool_calls"] = calls
			}
			choices = append(choices, map[string]any{"index": i, "message": msg, "finish_reason": c.finish})
		}
		v = map[string]any{"id": a.id, "object": "chat.completion", "model": a.model, "choices": choices}
	}
	if a.dropped > 0 {
		v.(map[string]any)["tollgate_truncated_bytes"] = a.dropped
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) != nil {
		return nil
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
