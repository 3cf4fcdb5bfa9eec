package translate

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/usage"
)

// Amazon Bedrock's Converse API (one body for every model family on
// Bedrock): an OpenAI chat request becomes a Converse request (the model
// goes in the URL, /model/{modelId}/converse), a Converse answer becomes a
// chat completion, and ConverseStream's events become chunks. The gateway
// hands the stream's events over as SSE text, each named by its
// :event-type header (messageStart, contentBlockDelta, ...), the JSON
// payload as its data.

type cvRequest struct {
	Messages        []cvMessage     `json:"messages"`
	System          []cvBlock       `json:"system,omitempty"`
	InferenceConfig *cvInference    `json:"inferenceConfig,omitempty"`
	ToolConfig      *cvToolConfig   `json:"toolConfig,omitempty"`
	OutputConfig    *cvOutputConfig `json:"outputConfig,omitempty"`
}

type cvMessage struct {
	Role    string    `json:"role"`
	Content []cvBlock `json:"content"`
}

type cvBlock struct {
	Text             string        `json:"text,omitempty"`
	Image            *cvImage      `json:"image,omitempty"`
	ToolUse          *cvToolUse    `json:"toolUse,omitempty"`
	ToolResult       *cvToolResult `json:"toolResult,omitempty"`
	ReasoningContent *cvReasoning  `json:"reasoningContent,omitempty"`
}

type cvImage struct {
	Format string `json:"format"` // png, jpeg, gif, webp
	Source struct {
		Bytes string `json:"bytes"` // base64 in JSON
	} `json:"source"`
}

type cvToolUse struct {
	ToolUseID string          `json:"toolUseId"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
}

type cvToolResult struct {
	ToolUseID string         `json:"toolUseId"`
	Content   []cvResultPart `json:"content"`
	Status    string         `json:"status,omitempty"`
}

type cvResultPart struct {
	Text string `json:"text"`
}

type cvReasoning struct {
	ReasoningText *struct {
		Text string `json:"text"`
	} `json:"reasoningText,omitempty"`
	Text string `json:"text,omitempty"` // a stream delta's
}

type cvInference struct {
	MaxTokens     *int64   `json:"maxTokens,omitempty"`
	Temperature   *float64 `json:"temperature,omitempty"`
	TopP          *float64 `json:"topP,omitempty"`
	StopSequences []string `json:"stopSequences,omitempty"`
}

type cvToolConfig struct {
	Tools      []cvTool       `json:"tools"`
	ToolChoice map[string]any `json:"toolChoice,omitempty"`
}

type cvTool struct {
	ToolSpec struct {
		Name        string `json:"name"`
		Description string `json:"description,omitempty"`
		InputSchema struct {
			JSON json.RawMessage `json:"json"`
		} `json:"inputSchema"`
	} `json:"toolSpec"`
}

// cvOutputConfig is Converse's structured output: the JSON schema goes as
// a string.
type cvOutputConfig struct {
	TextFormat struct {
		Type      string `json:"type"` // json_schema
		Structure struct {
			JSONSchema struct {
				Schema      string `json:"schema"`
				Name        string `json:"name,omitempty"`
				Description string `json:"description,omitempty"`
			} `json:"jsonSchema"`
		} `json:"structure"`
	} `json:"textFormat"`
}

// cvChatRequest is what of an OpenAI chat request reaches Converse.
type cvChatRequest struct {
	oaRequest
	ResponseFormat json.RawMessage `json:"response_format,omitempty"`
}

// ChatToConverse turns an OpenAI chat request into a Converse request:
// system (and developer) messages become system blocks, tool calls toolUse
// blocks and tool messages toolResult blocks (in a user turn), images
// (data: URLs only: Converse takes image bytes, not URLs) image blocks,
// tools toolSpecs, tool_choice the toolChoice ("none" has no Converse
// equivalent: the tools are still declared and the model may call them),
// response_format's json_schema the outputConfig, and max_tokens,
// temperature, top_p and stop the inferenceConfig. Consecutive turns of one
// role are merged, as Converse wants them alternating.
//
// A request that sets no max_tokens gets maxTokens = maxOut: Bedrock would
// otherwise answer up to the model's own limit, which may be longer than
// the output the gateway's budget hold was sized on (and can book).
func ChatToConverse(body []byte, maxOut int64) ([]byte, error) {
	var in cvChatRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	out := cvRequest{}
	ic := cvInference{Temperature: in.Temperature, TopP: in.TopP, MaxTokens: in.MaxTokens}
	if in.MaxCompletionTokens != nil {
		ic.MaxTokens = in.MaxCompletionTokens
	}
	if (ic.MaxTokens == nil || *ic.MaxTokens <= 0) && maxOut > 0 {
		ic.MaxTokens = &maxOut
	}
	stop, err := oaStop(in.Stop)
	if err != nil {
		return nil, err
	}
	ic.StopSequences = stop
	if ic.MaxTokens != nil || ic.Temperature != nil || ic.TopP != nil || ic.StopSequences != nil {
		out.InferenceConfig = &ic
	}
	oc, err := cvOutput(in.ResponseFormat)
	if err != nil {
		return nil, err
	}
	out.OutputConfig = oc
	if out.ToolConfig, err = cvTools(in.Tools, in.ToolChoice); err != nil {
		return nil, err
	}

	add := func(role string, blocks ...cvBlock) {
		if len(blocks) == 0 {
			return
		}
		if n := len(out.Messages); n > 0 && out.Messages[n-1].Role == role {
			out.Messages[n-1].Content = append(out.Messages[n-1].Content, blocks...)
			return
		}
		out.Messages = append(out.Messages, cvMessage{Role: role, Content: blocks})
	}
	for i, m := range in.Messages {
		blocks, err := cvBlocks(m.Content)
		if err != nil {
			return nil, fmt.Errorf("messages[%d]: %w", i, err)
		}
		switch m.Role {
		case "system", "developer":
			out.System = append(out.System, blocks...)
		case "user":
			add("user", blocks...)
		case "assistant":
			for _, tc := range m.ToolCalls {
				args := json.RawMessage(tc.Function.Arguments)
				if !json.Valid(args) || !bytes.HasPrefix(bytes.TrimSpace(args), []byte("{")) {
					args = json.RawMessage(`{}`)
				}
				blocks = append(blocks, cvBlock{ToolUse: &cvToolUse{ToolUseID: tc.ID, Name: tc.Function.Name, Input: args}})
			}
			add("assistant", blocks...)
		case "tool", "function":
			if m.ToolCallID == "" {
				// Converse pairs a toolResult with its toolUse by id: one
				// without an id is an answer to nothing, which OpenAI refuses.
				return nil, fmt.Errorf("messages[%d]: a %s message needs the tool_call_id of the assistant tool call it answers", i, m.Role)
			}
			var text strings.Builder
			for _, b := range blocks {
				text.WriteString(b.Text)
			}
			add("user", cvBlock{ToolResult: &cvToolResult{ToolUseID: m.ToolCallID, Content: []cvResultPart{{Text: text.String()}}}})
		default:
			return nil, fmt.Errorf("messages[%d]: unknown role %q", i, m.Role)
		}
	}
	if len(out.Messages) == 0 {
		return nil, fmt.Errorf("messages must hold at least one user or assistant message")
	}
	return json.Marshal(out)
}

// cvOutput is response_format as Converse's outputConfig: a json_schema
// format carries its schema (as a JSON string, which is how Converse takes
// it). json_object has no Converse equivalent and is dropped.
func cvOutput(rf json.RawMessage) (*cvOutputConfig, error) {
	if len(rf) == 0 || string(rf) == "null" {
		return nil, nil
	}
	var f struct {
		Type       string `json:"type"`
		JSONSchema struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Schema      json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	}
	if err := json.Unmarshal(rf, &f); err != nil {
		return nil, fmt.Errorf("response_format must be an object")
	}
	if f.Type != "json_schema" {
		return nil, nil
	}
	if len(f.JSONSchema.Schema) == 0 {
		return nil, fmt.Errorf("response_format.json_schema needs a schema")
	}
	oc := &cvOutputConfig{}
	oc.TextFormat.Type = "json_schema"
	js := &oc.TextFormat.Structure.JSONSchema
	js.Schema, js.Name, js.Description = string(f.JSONSchema.Schema), f.JSONSchema.Name, f.JSONSchema.Description
	return oc, nil
}

// cvTools is tools and tool_choice as Converse's toolConfig.
func cvTools(tools []oaTool, choice json.RawMessage) (*cvToolConfig, error) {
	if len(tools) == 0 {
		return nil, nil
	}
	tc := &cvToolConfig{}
	for _, t := range tools {
		var ct cvTool
		ct.ToolSpec.Name, ct.ToolSpec.Description = t.Function.Name, t.Function.Description
		ct.ToolSpec.InputSchema.JSON = t.Function.Parameters
		if len(ct.ToolSpec.InputSchema.JSON) == 0 || string(ct.ToolSpec.InputSchema.JSON) == "null" {
			ct.ToolSpec.InputSchema.JSON = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		tc.Tools = append(tc.Tools, ct)
	}
	if len(choice) == 0 || string(choice) == "null" {
		return tc, nil
	}
	var s string
	if json.Unmarshal(choice, &s) == nil {
		switch s {
		case "auto":
			tc.ToolChoice = map[string]any{"auto": map[string]any{}}
		case "required":
			tc.ToolChoice = map[string]any{"any": map[string]any{}}
		}
		return tc, nil
	}
	var obj struct {
		Function struct{ Name string } `json:"function"`
	}
	if json.Unmarshal(choice, &obj) != nil || obj.Function.Name == "" {
		return nil, fmt.Errorf("tool_choice must be a string or name a function")
	}
	tc.ToolChoice = map[string]any{"tool": map[string]any{"name": obj.Function.Name}}
	return tc, nil
}

// cvBlocks turns an OpenAI message content (a string or parts) into
// Converse content blocks.
func cvBlocks(content json.RawMessage) ([]cvBlock, error) {
	parts, err := oaParts(content)
	if err != nil {
		return nil, err
	}
	var out []cvBlock
	for _, p := range parts {
		switch p.Type {
		case "text":
			if p.Text != "" {
				out = append(out, cvBlock{Text: p.Text})
			}
		case "image_url":
			if p.ImageURL == nil || p.ImageURL.URL == "" {
				return nil, fmt.Errorf("image_url part without a url")
			}
			img, err := cvImageOf(p.ImageURL.URL)
			if err != nil {
				return nil, err
			}
			out = append(out, cvBlock{Image: img})
		}
	}
	return out, nil
}

// cvImageOf is a data: URL as a Converse image block.
func cvImageOf(u string) (*cvImage, error) {
	rest, ok := strings.CutPrefix(u, "data:")
	meta, data, ok2 := strings.Cut(rest, ",")
	if !ok || !ok2 || !strings.HasSuffix(meta, ";base64") {
		return nil, fmt.Errorf("bedrock takes images as base64 data: URLs (data:image/png;base64,...), not by URL")
	}
	mt, _, _ := strings.Cut(meta, ";")
	format, _ := strings.CutPrefix(mt, "image/")
	switch format {
	case "png", "jpeg", "gif", "webp":
	case "jpg":
		format = "jpeg"
	default:
		return nil, fmt.Errorf("image type %q: bedrock takes png, jpeg, gif or webp", mt)
	}
	// Converse carries the bytes as base64 too: read them here, so that a
	// payload that is not base64 is refused before it reaches Bedrock.
	if _, err := io.Copy(io.Discard, base64.NewDecoder(base64.StdEncoding, strings.NewReader(data))); err != nil || data == "" {
		return nil, fmt.Errorf("image data: URL is not base64 image bytes")
	}
	img := &cvImage{Format: format}
	img.Source.Bytes = data
	return img, nil
}

// ---- answers ----

type cvResponse struct {
	Output struct {
		Message *cvMessage `json:"message"`
	} `json:"output"`
	StopReason string   `json:"stopReason"`
	Usage      *cvUsage `json:"usage"`
}

// cvUsage is a Converse answer's usage. inputTokens leaves out the tokens
// read from and written to the prompt cache, as Anthropic's input_tokens
// does.
type cvUsage struct {
	InputTokens           int64 `json:"inputTokens"`
	OutputTokens          int64 `json:"outputTokens"`
	CacheReadInputTokens  int64 `json:"cacheReadInputTokens"`
	CacheWriteInputTokens int64 `json:"cacheWriteInputTokens"`
}

func (u cvUsage) usage() usage.Usage {
	return usage.Usage{Prompt: u.InputTokens + u.CacheReadInputTokens + u.CacheWriteInputTokens, Completion: u.OutputTokens,
		Cached: u.CacheReadInputTokens, CacheCreation: u.CacheWriteInputTokens}
}

// cvFinish maps Converse's stop reasons to OpenAI's finish reasons.
func cvFinish(reason string) string {
	switch reason {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "guardrail_intervened", "content_filtered":
		return "content_filter"
	}
	return "stop"
}

// ConverseToCompletion turns a Converse answer into an OpenAI chat
// completion for model, with its usage: text blocks the content,
// reasoning blocks reasoning_content, toolUse blocks tool calls.
func ConverseToCompletion(body []byte, model string) ([]byte, usage.Usage, error) {
	var in cvResponse
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, usage.Usage{}, fmt.Errorf("upstream answer: %w", err)
	}
	if in.Output.Message == nil {
		return nil, usage.Usage{}, fmt.Errorf("upstream answer has no output.message")
	}
	var u usage.Usage
	if in.Usage != nil {
		u = in.Usage.usage()
	}
	var text, reasoning strings.Builder
	var calls []oaToolCall
	for _, b := range in.Output.Message.Content {
		switch {
		case b.ToolUse != nil:
			var tc oaToolCall
			tc.ID, tc.Type, tc.Function.Name = b.ToolUse.ToolUseID, "function", b.ToolUse.Name
			tc.Function.Arguments = gmArgs(b.ToolUse.Input)
			calls = append(calls, tc)
		case b.ReasoningContent != nil && b.ReasoningContent.ReasoningText != nil:
			reasoning.WriteString(b.ReasoningContent.ReasoningText.Text)
		default:
			text.WriteString(b.Text)
		}
	}
	msg := map[string]any{"role": "assistant", "content": text.String()}
	if reasoning.Len() > 0 {
		msg["reasoning_content"] = reasoning.String()
	}
	if len(calls) > 0 {
		msg["tool_calls"] = calls
		if text.Len() == 0 {
			msg["content"] = nil
		}
	}
	out := map[string]any{"id": newID("chatcmpl-"), "object": "chat.completion", "created": time.Now().Unix(), "model": model,
		"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": cvFinish(in.StopReason)}}, "usage": u.OpenAI()}
	b, err := json.Marshal(out)
	return b, u, err
}

// ---- streams ----

type converseToChat struct {
	chunkOut
	tools  map[int]int // contentBlockIndex -> tool_call index
	failed bool        // an exception ended the stream
}

// ConverseToChatStream translates ConverseStream's events into
// chat.completion.chunk events for model; with includeUsage the last chunk
// carries the usage (from the metadata event). An exception event ends
// the stream with an error in OpenAI's shape.
func ConverseToChatStream(model string, includeUsage bool) Stream {
	s := &converseToChat{chunkOut: newChunkOut(model, includeUsage), tools: map[int]int{}}
	s.id = newID("chatcmpl-") // Converse's answers carry none
	return s
}

// cvEvent is the payload of every ConverseStream event, as far as read.
type cvEvent struct {
	ContentBlockIndex int `json:"contentBlockIndex"`
	Start             *struct {
		ToolUse *cvToolUse `json:"toolUse"`
	} `json:"start"`
	Delta *struct {
		Text    *string `json:"text"`
		ToolUse *struct {
			Input string `json:"input"`
		} `json:"toolUse"`
		ReasoningContent *cvReasoning `json:"reasoningContent"`
	} `json:"delta"`
	StopReason string   `json:"stopReason"`
	Usage      *cvUsage `json:"usage"`
	Message    string   `json:"message"`
}

func (s *converseToChat) Event(ev, out []byte) []byte {
	name, data := parseEvent(ev)
	var e cvEvent
	if s.failed || len(data) == 0 || json.Unmarshal(data, &e) != nil {
		return out
	}
	if !s.started && name != "metadata" {
		s.started = true
		out = s.chunk(out, map[string]any{"role": "assistant", "content": ""}, nil)
	}
	switch name {
	case "messageStart", "contentBlockStop":
	case "contentBlockStart":
		if e.Start == nil || e.Start.ToolUse == nil {
			return out
		}
		n := s.calls
		s.tools[e.ContentBlockIndex] = n
		s.calls++
		s.chunks++
		return s.chunk(out, map[string]any{"tool_calls": []any{map[string]any{"index": n, "id": e.Start.ToolUse.ToolUseID, "type": "function",
			"function": map[string]string{"name": e.Start.ToolUse.Name, "arguments": ""}}}}, nil)
	case "contentBlockDelta":
		d := e.Delta
		switch {
		case d == nil:
		case d.Text != nil:
			s.chunks++
			return s.chunk(out, map[string]any{"content": *d.Text}, nil)
		case d.ToolUse != nil:
			s.chunks++
			return s.chunk(out, map[string]any{"tool_calls": []any{map[string]any{"index": s.tools[e.ContentBlockIndex],
				"function": map[string]string{"arguments": d.ToolUse.Input}}}}, nil)
		case d.ReasoningContent != nil && d.ReasoningContent.Text != "":
			s.chunks++
			return s.chunk(out, map[string]any{"reasoning_content": d.ReasoningContent.Text}, nil)
		}
	case "messageStop":
		s.finish = e.StopReason
	case "metadata":
		if e.Usage != nil {
			s.usage, s.hasUsage = e.Usage.usage(), true
		}
	default: // an exception (throttlingException, validationException, ...)
		s.failed = true
		return appendData(out, map[string]any{"error": map[string]any{"message": e.Message, "type": bedrockErrorType(name), "param": nil, "code": name}})
	}
	return out
}

func (s *converseToChat) End(out []byte) []byte {
	if s.failed {
		return out
	}
	return s.end(out, cvFinish(s.finish))
}

// ---- errors ----

// bedrockErrorType is the OpenAI error type of a Bedrock exception name
// (ThrottlingException, or throttlingException in a stream).
func bedrockErrorType(name string) string {
	switch strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(name, "Exception"), "exception")) {
	case "throttling", "servicequotaexceeded", "toomanyrequests":
		return "rate_limit_error"
	case "accessdenied", "unrecognizedclient", "invalidsignature", "expiredtoken":
		return "authentication_error"
	case "resourcenotfound":
		return "not_found_error"
	case "validation", "modelerror":
		return "invalid_request_error"
	}
	return "api_error"
}

// BedrockErrorToOpenAI turns a Bedrock error ({"message": ...}, its name
// in the x-amzn-ErrorType header as errType, such as
// "ThrottlingException:http://internal.amazon.com/...") into OpenAI's
// error shape, the exception's name as the code and its type from the
// name, else from the status.
func BedrockErrorToOpenAI(status int, errType string, body []byte) []byte {
	var in struct {
		Message  *string `json:"message"`
		Message2 *string `json:"Message"`
		Type     string  `json:"__type"`
	}
	if json.Unmarshal(body, &in) != nil || (in.Message == nil && in.Message2 == nil) {
		return ErrorToOpenAI(status, body)
	}
	msg := in.Message
	if msg == nil {
		msg = in.Message2
	}
	name, _, _ := strings.Cut(errType, ":")
	if name == "" {
		name = in.Type
		if i := strings.LastIndexByte(name, '#'); i >= 0 {
			name = name[i+1:]
		}
	}
	typ := bedrockErrorType(name)
	if name == "" || typ == "api_error" {
		typ = oaErrorType(status)
	}
	var code any = name
	if name == "" {
		code = nil
	}
	out, _ := json.Marshal(map[string]any{"error": map[string]any{"message": *msg, "type": typ, "param": nil, "code": code}})
	return out
}
