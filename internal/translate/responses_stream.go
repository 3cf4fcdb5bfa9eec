package translate

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/usage"
)

// chatToResponses translates chat.completion.chunk events into the
// Responses API's event sequence: response.created and in_progress, then
// for each output item output_item.added, its content part or argument
// deltas, their done events and output_item.done, and last
// response.completed (response.incomplete when the output was cut at
// max_output_tokens) carrying the usage. Every event has its
// sequence_number.
type chatToResponses struct {
	resp    *rsResponse
	seq     int
	started bool
	done    bool
	finish  string
	usage   usage.Usage
	hasUse  bool
	chunks  int
	// The output items in order; text is the open message item, if any.
	items []*rsItemState
	text  *rsItemState
	calls map[int]*rsItemState // chat tool_call index -> its item
}

type rsItemState struct {
	index            int
	id, callID, name string
	buf              strings.Builder
	call             bool
	closed           bool
}

// ChatToResponsesStream translates a chat stream for a Responses client;
// req is the client's Responses request, whose settings the Response
// objects in the events repeat.
func ChatToResponsesStream(req []byte) Stream {
	return &chatToResponses{resp: newResponse(echoOf(req), "", "", time.Now().Unix()), calls: map[int]*rsItemState{}}
}

// emit appends one event of type typ; fields are its other members.
func (s *chatToResponses) emit(out []byte, typ string, fields map[string]any) []byte {
	fields["type"] = typ
	fields["sequence_number"] = s.seq
	s.seq++
	return appendEvent(out, typ, fields)
}

func (s *chatToResponses) Event(ev, out []byte) []byte {
	_, data := parseEvent(ev)
	if s.done || len(data) == 0 {
		return out
	}
	if bytes.Equal(data, []byte("[DONE]")) {
		return s.complete(out)
	}
	var c struct {
		ID      string `json:"id"`
		Model   string `json:"model"`
		Created int64  `json:"created"`
		Choices []struct {
			Delta struct {
				Content   *string      `json:"content"`
				ToolCalls []oaToolCall `json:"tool_calls"`
			} `json:"delta"`
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
		Usage *usage.OpenAI   `json:"usage"`
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(data, &c) != nil {
		return out
	}
	if len(c.Error) > 0 && string(c.Error) != "null" {
		return s.fail(out, c.Error)
	}
	if !s.started {
		s.started = true
		s.resp.ID, s.resp.Model = responseID(c.ID), c.Model
		if c.Created > 0 {
			s.resp.CreatedAt = c.Created
		}
		out = s.emit(out, "response.created", map[string]any{"response": s.resp})
		out = s.emit(out, "response.in_progress", map[string]any{"response": s.resp})
	}
	if c.Usage != nil {
		s.usage, s.hasUse = c.Usage.Usage(), true
	}
	for _, ch := range c.Choices {
		if d := ch.Delta.Content; d != nil && *d != "" {
			out = s.textDelta(out, *d)
		}
		for _, tc := range ch.Delta.ToolCalls {
			out = s.callDelta(out, tc)
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			s.finish = *ch.FinishReason
		}
	}
	return out
}

func (s *chatToResponses) open(out []byte, it *rsItemState, item map[string]any) []byte {
	it.index = len(s.items)
	s.items = append(s.items, it)
	return s.emit(out, "response.output_item.added", map[string]any{"output_index": it.index, "item": item})
}

func (s *chatToResponses) textDelta(out []byte, d string) []byte {
	s.chunks++
	if s.text == nil {
		s.text = &rsItemState{id: newID("msg_")}
		out = s.open(out, s.text, messageItem(s.text.id, "in_progress", ""))
		out = s.emit(out, "response.content_part.added", map[string]any{"item_id": s.text.id, "output_index": s.text.index,
			"content_index": 0, "part": outputTextPart("")})
	}
	s.text.buf.WriteString(d)
	return s.emit(out, "response.output_text.delta", map[string]any{"item_id": s.text.id, "output_index": s.text.index,
		"content_index": 0, "delta": d, "logprobs": []any{}})
}

func (s *chatToResponses) callDelta(out []byte, tc oaToolCall) []byte {
	s.chunks++
	idx := 0
	if tc.Index != nil {
		idx = *tc.Index
	}
	it, ok := s.calls[idx]
	if !ok {
		if s.text != nil {
			out = s.closeItem(out, s.text) // items follow each other: the text ends where a call starts
			s.text = nil
		}
		it = &rsItemState{id: newID("fc_"), callID: tc.ID, name: tc.Function.Name, call: true}
		s.calls[idx] = it
		out = s.open(out, it, functionCallItem(it.id, it.callID, it.name, "", "in_progress"))
	}
	if a := tc.Function.Arguments; a != "" {
		it.buf.WriteString(a)
		out = s.emit(out, "response.function_call_arguments.delta", map[string]any{"item_id": it.id, "output_index": it.index, "delta": a})
	}
	return out
}

// closeItem sends the done events of one item.
func (s *chatToResponses) closeItem(out []byte, it *rsItemState) []byte {
	if it.closed {
		return out
	}
	it.closed = true
	text := it.buf.String()
	if it.call {
		out = s.emit(out, "response.function_call_arguments.done", map[string]any{"item_id": it.id, "output_index": it.index, "name": it.name, "arguments": text})
		return s.emit(out, "response.output_item.done", map[string]any{"output_index": it.index, "item": functionCallItem(it.id, it.callID, it.name, text, "completed")})
	}
	out = s.emit(out, "response.output_text.done", map[string]any{"item_id": it.id, "output_index": it.index, "content_index": 0, "text": text, "logprobs": []any{}})
	out = s.emit(out, "response.content_part.done", map[string]any{"item_id": it.id, "output_index": it.index, "content_index": 0, "part": outputTextPart(text)})
	return s.emit(out, "response.output_item.done", map[string]any{"output_index": it.index, "item": messageItem(it.id, "completed", text)})
}

// complete closes the open items and sends response.completed (or
// response.incomplete) with the whole output and the usage.
func (s *chatToResponses) complete(out []byte) []byte {
	if !s.started {
		return out
	}
	s.done = true
	for _, it := range s.items {
		out = s.closeItem(out, it)
		text := it.buf.String()
		if it.call {
			s.resp.Output = append(s.resp.Output, functionCallItem(it.id, it.callID, it.name, text, "completed"))
		} else {
			s.resp.Output = append(s.resp.Output, messageItem(it.id, "completed", text))
		}
	}
	var u *usage.Usage
	if s.hasUse {
		u = &s.usage
	}
	s.resp.finish(s.finish, u)
	typ := "response.completed"
	if s.resp.Status == "incomplete" {
		typ = "response.incomplete"
	}
	return s.emit(out, typ, map[string]any{"response": s.resp})
}

// fail ends the stream with the error event an upstream error chunk becomes.
func (s *chatToResponses) fail(out []byte, raw json.RawMessage) []byte {
	s.done = true
	var e struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Code    json.RawMessage `json:"code"`
		Param   json.RawMessage `json:"param"`
	}
	_ = json.Unmarshal(raw, &e)
	code := any(e.Type)
	var sc string
	if json.Unmarshal(e.Code, &sc) == nil && sc != "" {
		code = sc
	}
	return s.emit(out, "error", map[string]any{"code": code, "message": e.Message, "param": nil})
}

// End completes a stream whose upstream finished without [DONE] (a finish
// reason was seen); a stream cut short before that ends as it is.
func (s *chatToResponses) End(out []byte) []byte {
	if s.done || s.finish == "" {
		return out
	}
	return s.complete(out)
}

func (s *chatToResponses) Usage() (usage.Usage, bool) { return s.usage, s.hasUse }

// Chunks counts the deltas, and at least one once the upstream answered
// (response.created went out): a client that leaves before the first delta
// has had its prompt billed upstream, and the call is booked.
func (s *chatToResponses) Chunks() int { return max(s.chunks, boolInt(s.started)) }

// ---- Anthropic upstream, Responses client ----

// MessagesToResponsesStream translates an Anthropic event stream for a
// Responses client (req is the client's request): to chat, then to
// Responses events.
func MessagesToResponsesStream(req []byte) Stream {
	return Chain(MessagesToChatStream(true), ChatToResponsesStream(req))
}

// ---- Responses upstream, Responses client ----

// responsesPassthrough forwards Responses events unchanged, reading the
// usage from the final response event.
type responsesPassthrough struct {
	usage  usage.Usage
	hasUse bool
	chunks int
	events int
}

// ResponsesPassthrough passes a Responses API stream through, reading its
// usage from response.completed (or response.incomplete / failed).
func ResponsesPassthrough() Stream { return &responsesPassthrough{} }

func (s *responsesPassthrough) Event(ev, out []byte) []byte {
	s.events++
	if u, ok, content := ResponsesEventUsage(ev); ok {
		s.usage, s.hasUse = u, true
	} else if content {
		s.chunks++
	}
	return append(out, ev...)
}

// ResponsesEventUsage reads one Responses API event: the usage of the
// response a final event carries, or whether it is a content delta.
func ResponsesEventUsage(ev []byte) (u usage.Usage, ok, content bool) {
	_, data := parseEvent(ev)
	if len(data) == 0 || data[0] != '{' {
		return usage.Usage{}, false, false
	}
	var e struct {
		Type     string `json:"type"`
		Response *struct {
			Usage json.RawMessage `json:"usage"`
		} `json:"response"`
	}
	if json.Unmarshal(data, &e) != nil {
		return usage.Usage{}, false, false
	}
	switch e.Type {
	case "response.completed", "response.incomplete", "response.failed":
		if e.Response != nil {
			u, ok = usage.ParseResponses(e.Response.Usage)
		}
		return u, ok, false
	}
	return usage.Usage{}, false, strings.HasSuffix(e.Type, ".delta")
}

func (s *responsesPassthrough) End(out []byte) []byte      { return out }
func (s *responsesPassthrough) Usage() (usage.Usage, bool) { return s.usage, s.hasUse }

// Chunks counts the deltas, and at least one once any event came (the
// upstream answered): the prompt of a stream left before its first delta
// is booked.
func (s *responsesPassthrough) Chunks() int { return max(s.chunks, boolInt(s.events > 0)) }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
