package translate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"path"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/usage"
)

// Google's generateContent API (Gemini on AI Studio and on Vertex AI speak
// the same body): an OpenAI chat request becomes a GenerateContentRequest
// (the model goes in the URL, not the body), a GenerateContentResponse
// becomes a chat completion, and a stream of them (alt=sse) becomes chunks.

type gmRequest struct {
	Contents          []gmContent       `json:"contents"`
	SystemInstruction *gmContent        `json:"systemInstruction,omitempty"`
	Tools             []gmTool          `json:"tools,omitempty"`
	ToolConfig        *gmToolConfig     `json:"toolConfig,omitempty"`
	GenerationConfig  *gmGenerationConf `json:"generationConfig,omitempty"`
}

type gmContent struct {
	Role  string   `json:"role,omitempty"`
	Parts []gmPart `json:"parts"`
}

type gmPart struct {
	Text             string          `json:"text,omitempty"`
	Thought          bool            `json:"thought,omitempty"`
	InlineData       *gmBlob         `json:"inlineData,omitempty"`
	FileData         *gmFile         `json:"fileData,omitempty"`
	FunctionCall     *gmFunctionCall `json:"functionCall,omitempty"`
	FunctionResponse *gmFunctionResp `json:"functionResponse,omitempty"`
	// ThoughtSignature is the opaque token of a thinking model's reasoning
	// that a later turn must send back with the function call it came with.
	ThoughtSignature string `json:"thoughtSignature,omitempty"`
}

// thoughtMark separates a tool call's id from the thought signature it
// carries: OpenAI clients send the id back unchanged with the next turn,
// and with it the signature Gemini asks for.
const thoughtMark = "__thought__"

// callID is the tool call id of the n-th function call of candidate i.
func callID(i, n int, signature string) string {
	id := fmt.Sprintf("call_%d_%d", i, n)
	if signature != "" {
		id += thoughtMark + signature
	}
	return id
}

type gmBlob struct {
	MimeType string `json:"mimeType"`
	Data     string `json:"data"`
}

type gmFile struct {
	MimeType string `json:"mimeType,omitempty"`
	FileURI  string `json:"fileUri"`
}

type gmFunctionCall struct {
	Name string          `json:"name"`
	Args json.RawMessage `json:"args,omitempty"`
}

type gmFunctionResp struct {
	Name     string          `json:"name"`
	Response json.RawMessage `json:"response"`
}

type gmTool struct {
	FunctionDeclarations []gmFunctionDecl `json:"functionDeclarations"`
}

type gmFunctionDecl struct {
	Name                 string          `json:"name"`
	Description          string          `json:"description,omitempty"`
	ParametersJSONSchema json.RawMessage `json:"parametersJsonSchema,omitempty"`
}

type gmToolConfig struct {
	FunctionCallingConfig struct {
		Mode                 string   `json:"mode"`
		AllowedFunctionNames []string `json:"allowedFunctionNames,omitempty"`
	} `json:"functionCallingConfig"`
}

type gmGenerationConf struct {
	Temperature        *float64        `json:"temperature,omitempty"`
	TopP               *float64        `json:"topP,omitempty"`
	MaxOutputTokens    *int64          `json:"maxOutputTokens,omitempty"`
	StopSequences      []string        `json:"stopSequences,omitempty"`
	CandidateCount     *int64          `json:"candidateCount,omitempty"`
	PresencePenalty    *float64        `json:"presencePenalty,omitempty"`
	FrequencyPenalty   *float64        `json:"frequencyPenalty,omitempty"`
	Seed               *int64          `json:"seed,omitempty"`
	ResponseMimeType   string          `json:"responseMimeType,omitempty"`
	ResponseJSONSchema json.RawMessage `json:"responseJsonSchema,omitempty"`
}

// set reports whether any setting is given.
func (g *gmGenerationConf) set() bool {
	return g.Temperature != nil || g.TopP != nil || g.MaxOutputTokens != nil || g.StopSequences != nil || g.CandidateCount != nil ||
		g.PresencePenalty != nil || g.FrequencyPenalty != nil || g.Seed != nil || g.ResponseMimeType != ""
}

// gmChatRequest is what of an OpenAI chat request reaches Gemini, beyond
// oaRequest's members.
type gmChatRequest struct {
	oaRequest
	N                *int64          `json:"n,omitempty"`
	PresencePenalty  *float64        `json:"presence_penalty,omitempty"`
	FrequencyPenalty *float64        `json:"frequency_penalty,omitempty"`
	Seed             *int64          `json:"seed,omitempty"`
	ResponseFormat   json.RawMessage `json:"response_format,omitempty"`
}

// ChatToGemini turns an OpenAI chat request into a GenerateContentRequest:
// system (and developer) messages become the systemInstruction, assistant
// turns the "model" role, tool calls functionCall parts and tool messages
// functionResponse parts (named after the call they answer), images
// inlineData (data: URLs) or fileData (gs:// and https URLs), tools
// function declarations with their JSON Schema as given, tool_choice the
// function-calling mode, response_format a JSON response (with its schema),
// and the sampling settings the generation config. Consecutive turns of one
// role are merged, as Gemini wants them alternating.
func ChatToGemini(body []byte) ([]byte, error) {
	var in gmChatRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	out := gmRequest{}
	gc := gmGenerationConf{Temperature: in.Temperature, TopP: in.TopP, CandidateCount: in.N,
		PresencePenalty: in.PresencePenalty, FrequencyPenalty: in.FrequencyPenalty, Seed: in.Seed}
	switch {
	case in.MaxCompletionTokens != nil:
		gc.MaxOutputTokens = in.MaxCompletionTokens
	case in.MaxTokens != nil:
		gc.MaxOutputTokens = in.MaxTokens
	}
	stop, err := oaStop(in.Stop)
	if err != nil {
		return nil, err
	}
	gc.StopSequences = stop
	kind, schema, err := oaFormat(in.ResponseFormat)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "json_object":
		gc.ResponseMimeType = "application/json"
	case "json_schema":
		gc.ResponseMimeType = "application/json"
		gc.ResponseJSONSchema = schema
	}
	if gc.set() {
		out.GenerationConfig = &gc
	}
	if len(in.Tools) > 0 {
		var decls []gmFunctionDecl
		for i, t := range in.Tools {
			if t.Function.Name == "" {
				// Gemini requires every function declaration's name.
				return nil, onField("tools", fmt.Errorf("tools[%d].function.name is required", i))
			}
			d := gmFunctionDecl{Name: t.Function.Name, Description: t.Function.Description}
			if p := t.Function.Parameters; len(p) > 0 && string(p) != "null" {
				d.ParametersJSONSchema = p
			}
			decls = append(decls, d)
		}
		out.Tools = []gmTool{{FunctionDeclarations: decls}}
	}
	if tc := in.ToolChoice; len(tc) > 0 && string(tc) != "null" {
		cfg := &gmToolConfig{}
		var s string
		if json.Unmarshal(tc, &s) == nil {
			cfg.FunctionCallingConfig.Mode = map[string]string{"auto": "AUTO", "required": "ANY", "none": "NONE"}[s]
		} else {
			var obj struct {
				Function struct{ Name string } `json:"function"`
			}
			if json.Unmarshal(tc, &obj) == nil && obj.Function.Name != "" {
				cfg.FunctionCallingConfig.Mode = "ANY"
				cfg.FunctionCallingConfig.AllowedFunctionNames = []string{obj.Function.Name}
			}
		}
		if cfg.FunctionCallingConfig.Mode != "" {
			out.ToolConfig = cfg
		}
	}

	callNames := map[string]string{} // tool_call id -> function name
	var system []gmPart
	add := func(role string, parts ...gmPart) {
		if len(parts) == 0 {
			return
		}
		if n := len(out.Contents); n > 0 && out.Contents[n-1].Role == role {
			out.Contents[n-1].Parts = append(out.Contents[n-1].Parts, parts...)
			return
		}
		out.Contents = append(out.Contents, gmContent{Role: role, Parts: parts})
	}
	for i, m := range in.Messages {
		parts, err := gmParts(m.Content)
		if err != nil {
			return nil, fmt.Errorf("messages[%d]: %w", i, err)
		}
		switch m.Role {
		case "system", "developer":
			system = append(system, parts...)
		case "user":
			add("user", parts...)
		case "assistant":
			for j, tc := range m.ToolCalls {
				if tc.Function.Name == "" {
					return nil, fmt.Errorf("messages[%d].tool_calls[%d].function.name is required", i, j)
				}
				callNames[tc.ID] = tc.Function.Name
				args := json.RawMessage(tc.Function.Arguments)
				if !json.Valid(args) || len(strings.TrimSpace(tc.Function.Arguments)) == 0 {
					args = json.RawMessage(`{}`)
				}
				_, sig, _ := strings.Cut(tc.ID, thoughtMark)
				parts = append(parts, gmPart{FunctionCall: &gmFunctionCall{Name: tc.Function.Name, Args: args}, ThoughtSignature: sig})
			}
			add("model", parts...)
		case "tool", "function":
			name := callNames[m.ToolCallID]
			if name == "" {
				name = m.Name
			}
			if name == "" {
				// Gemini's functionResponse must name its function.
				return nil, fmt.Errorf("messages[%d]: a tool message must answer a tool call of an earlier assistant message (tool_call_id %q is none) or name its function", i, m.ToolCallID)
			}
			var text strings.Builder
			for _, p := range parts {
				text.WriteString(p.Text)
			}
			resp, _ := json.Marshal(map[string]string{"content": text.String()})
			add("user", gmPart{FunctionResponse: &gmFunctionResp{Name: name, Response: resp}})
		default:
			return nil, fmt.Errorf("messages[%d]: unknown role %q", i, m.Role)
		}
	}
	if len(out.Contents) == 0 {
		return nil, fmt.Errorf("messages must hold at least one user or assistant message")
	}
	if len(system) > 0 {
		out.SystemInstruction = &gmContent{Parts: system}
	}
	return json.Marshal(out)
}

// gmParts turns an OpenAI message content (a string or parts) into Gemini
// parts.
func gmParts(content json.RawMessage) ([]gmPart, error) {
	parts, err := oaParts(content)
	if err != nil {
		return nil, err
	}
	var out []gmPart
	for _, p := range parts {
		switch p.Type {
		case "text":
			out = append(out, gmPart{Text: p.Text})
		case "image_url":
			if p.ImageURL == nil || p.ImageURL.URL == "" {
				return nil, fmt.Errorf("image_url part without a url")
			}
			img, err := gmImage(p.ImageURL.URL)
			if err != nil {
				return nil, err
			}
			out = append(out, img)
		}
	}
	return out, nil
}

// gmImage is an image URL as a Gemini part: a data: URL inline (it must
// carry a media type and data: Gemini requires both), any other URL by
// reference, its type guessed from its extension (JPEG when it has none
// Gemini would know).
func gmImage(u string) (gmPart, error) {
	if rest, ok := strings.CutPrefix(u, "data:"); ok {
		meta, data, _ := strings.Cut(rest, ",")
		mt, _, _ := strings.Cut(meta, ";")
		if mt == "" || data == "" {
			return gmPart{}, fmt.Errorf("image_url: a data: URL needs a media type and its data (data:image/png;base64,...)")
		}
		return gmPart{InlineData: &gmBlob{MimeType: mt, Data: data}}, nil
	}
	mt := mime.TypeByExtension(path.Ext(strings.SplitN(u, "?", 2)[0]))
	if !strings.HasPrefix(mt, "image/") && !strings.HasPrefix(mt, "application/pdf") {
		mt = "image/jpeg"
	}
	return gmPart{FileData: &gmFile{MimeType: mt, FileURI: u}}, nil
}

// ---- answers ----

type gmResponse struct {
	Candidates []struct {
		Content      gmContent `json:"content"`
		FinishReason string    `json:"finishReason"`
		Index        int       `json:"index"`
	} `json:"candidates"`
	// PromptFeedback.BlockReason is set when the prompt itself was
	// blocked (SAFETY, PROHIBITED_CONTENT...): no candidate comes.
	PromptFeedback struct {
		BlockReason string `json:"blockReason"`
	} `json:"promptFeedback"`
	UsageMetadata *GeminiUsageMetadata `json:"usageMetadata"`
	ModelVersion  string               `json:"modelVersion"`
	ResponseID    string               `json:"responseId"`
}

// GeminiUsageMetadata is the usage member of a Gemini answer: the candidates
// count excludes the thinking tokens, which are billed as output too.
type GeminiUsageMetadata struct {
	PromptTokenCount        int64 `json:"promptTokenCount"`
	CandidatesTokenCount    int64 `json:"candidatesTokenCount"`
	CachedContentTokenCount int64 `json:"cachedContentTokenCount"`
	ThoughtsTokenCount      int64 `json:"thoughtsTokenCount"`
	ToolUsePromptTokenCount int64 `json:"toolUsePromptTokenCount"`
}

// Usage is m in OpenAI's convention: the prompt includes the cached and
// tool-use prompt tokens, the completion the thinking tokens (as
// reasoning).
func (m GeminiUsageMetadata) Usage() usage.Usage {
	return usage.Usage{Prompt: m.PromptTokenCount + m.ToolUsePromptTokenCount, Completion: m.CandidatesTokenCount + m.ThoughtsTokenCount,
		Cached: m.CachedContentTokenCount, Reasoning: m.ThoughtsTokenCount}
}

// gmArgs is a function call's args as OpenAI's arguments string: compact
// JSON, "{}" when there are none.
func gmArgs(args json.RawMessage) string {
	var b bytes.Buffer
	if len(args) == 0 || json.Compact(&b, args) != nil {
		return "{}"
	}
	return b.String()
}

// gmFinish maps Gemini's finish reasons to OpenAI's.
func gmFinish(reason string, calls bool) string {
	switch {
	case calls && (reason == "STOP" || reason == ""):
		return "tool_calls"
	case reason == "MAX_TOKENS":
		return "length"
	case reason == "SAFETY", reason == "RECITATION", reason == "BLOCKLIST", reason == "PROHIBITED_CONTENT", reason == "SPII", reason == "IMAGE_SAFETY":
		return "content_filter"
	}
	return "stop"
}

// GeminiToCompletion turns a GenerateContentResponse into an OpenAI chat
// completion for model (the model group's upstream name), with its usage:
// one choice per candidate, thought parts left out of the content, function
// calls as tool calls.
func GeminiToCompletion(body []byte, model string) ([]byte, usage.Usage, error) {
	var in gmResponse
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, usage.Usage{}, fmt.Errorf("upstream answer: %w", err)
	}
	var u usage.Usage
	if in.UsageMetadata != nil {
		u = in.UsageMetadata.Usage()
	}
	choices := make([]any, 0, len(in.Candidates))
	for i, c := range in.Candidates {
		var text strings.Builder
		var calls []oaToolCall
		for _, p := range c.Content.Parts {
			switch {
			case p.FunctionCall != nil:
				var tc oaToolCall
				tc.ID, tc.Type, tc.Function.Name = callID(i, len(calls), p.ThoughtSignature), "function", p.FunctionCall.Name
				tc.Function.Arguments = gmArgs(p.FunctionCall.Args)
				calls = append(calls, tc)
			case !p.Thought:
				text.WriteString(p.Text)
			}
		}
		msg := map[string]any{"role": "assistant", "content": text.String()}
		if len(calls) > 0 {
			msg["tool_calls"] = calls
			if text.Len() == 0 {
				msg["content"] = nil
			}
		}
		choices = append(choices, map[string]any{"index": i, "message": msg, "finish_reason": gmFinish(c.FinishReason, len(calls) > 0)})
	}
	if len(choices) == 0 && in.PromptFeedback.BlockReason != "" {
		// Nothing was generated: the request is refused, its prompt
		// billed all the same.
		return nil, u, &Refused{Reason: in.PromptFeedback.BlockReason}
	}
	if model == "" {
		model = in.ModelVersion
	}
	out := map[string]any{"id": "chatcmpl-" + in.ResponseID, "object": "chat.completion", "created": time.Now().Unix(), "model": model,
		"choices": choices, "usage": u.OpenAI()}
	b, err := json.Marshal(out)
	return b, u, err
}

// ---- streams ----

type geminiToChat struct{ chunkOut }

// GeminiToChatStream translates a Gemini stream (streamGenerateContent with
// alt=sse: each event a whole GenerateContentResponse holding the next
// piece, the usage so far in each) into chat.completion.chunk events for
// model; with includeUsage the last chunk carries the usage.
func GeminiToChatStream(model string, includeUsage bool) Stream {
	return &geminiToChat{newChunkOut(model, includeUsage)}
}

func (s *geminiToChat) Event(ev, out []byte) []byte {
	_, data := parseEvent(ev)
	var r gmResponse
	if len(data) == 0 || json.Unmarshal(data, &r) != nil {
		return out
	}
	if r.UsageMetadata != nil {
		s.usage, s.hasUsage = r.UsageMetadata.Usage(), true
	}
	if !s.started {
		s.started = true
		s.id = "chatcmpl-" + r.ResponseID
		if s.model == "" {
			s.model = r.ModelVersion
		}
		out = s.chunk(out, map[string]any{"role": "assistant", "content": ""}, nil)
	}
	if r.PromptFeedback.BlockReason != "" {
		s.finish = "SAFETY" // the prompt was blocked: content_filter
	}
	for _, c := range r.Candidates {
		if c.Index != 0 {
			continue // a stream carries one choice
		}
		for _, p := range c.Content.Parts {
			switch {
			case p.FunctionCall != nil:
				args := gmArgs(p.FunctionCall.Args)
				out = s.chunk(out, map[string]any{"tool_calls": []any{map[string]any{"index": s.calls, "id": callID(0, s.calls, p.ThoughtSignature), "type": "function",
					"function": map[string]string{"name": p.FunctionCall.Name, "arguments": args}}}}, nil)
				s.calls++
				s.chunks++
			case p.Thought:
				out = s.chunk(out, map[string]any{"reasoning_content": p.Text}, nil)
				s.chunks++
			case p.Text != "":
				out = s.chunk(out, map[string]any{"content": p.Text}, nil)
				s.chunks++
			}
		}
		if c.FinishReason != "" {
			s.finish = c.FinishReason
		}
	}
	return out
}

func (s *geminiToChat) End(out []byte) []byte { return s.end(out, gmFinish(s.finish, s.calls > 0)) }

// GeminiErrorToOpenAI turns a Google API error ({"error": {"code",
// "message", "status"}}) into OpenAI's error shape, its status (such as
// INVALID_ARGUMENT or RESOURCE_EXHAUSTED) as the code; any other body is
// left to ErrorToOpenAI.
func GeminiErrorToOpenAI(status int, body []byte) []byte {
	var in struct {
		Error *struct {
			Message string `json:"message"`
			Status  string `json:"status"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &in) != nil || in.Error == nil || in.Error.Status == "" {
		return ErrorToOpenAI(status, body)
	}
	typ := oaErrorType(status)
	out, _ := json.Marshal(map[string]any{"error": map[string]any{"message": in.Error.Message, "type": typ, "param": nil, "code": in.Error.Status}})
	return out
}

// Refused is an upstream's refusal of a prompt its safety filter blocked,
// answered with a success status and no content (Gemini's
// promptFeedback.blockReason): the gateway answers it as the error it is.
// The usage returned with it is what the upstream billed.
type Refused struct {
	Reason string // the provider's words: SAFETY, PROHIBITED_CONTENT, ...
}

func (r *Refused) Error() string {
	return "the provider's safety filter blocked the prompt (" + r.Reason + ")"
}
