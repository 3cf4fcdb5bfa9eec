package translate

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/usage"
)

// TestChatToGemini: every member of a chat request that Gemini has a place
// for lands there, in the generateContent body's own names.
func TestChatToGemini(t *testing.T) {
	in := `{"model":"gemini-2.5-flash","max_tokens":50,"temperature":0.2,"top_p":0.9,"stop":"END","n":2,"seed":7,
	"messages":[
		{"role":"system","content":"Be brief."},
		{"role":"developer","content":"Answer in French."},
		{"role":"user","content":[{"type":"text","text":"What is in this picture?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]},
		{"role":"user","content":"And this one?"},
		{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/cat.webp?size=2"}}]},
		{"role":"assistant","content":null,"tool_calls":[{"id":"call_0_0__thought__SIG-A","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
		{"role":"tool","tool_call_id":"call_0_0__thought__SIG-A","content":"sunny"}
	],
	"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather by city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}}}],
	"tool_choice":{"type":"function","function":{"name":"get_weather"}},
	"response_format":{"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object","properties":{"t":{"type":"number"}}}}}}`
	b, err := ChatToGemini([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := `{
	"contents":[
		{"role":"user","parts":[{"text":"What is in this picture?"},{"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}},{"text":"And this one?"},{"fileData":{"mimeType":"image/webp","fileUri":"https://example.com/cat.webp?size=2"}}]},
		{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"SIG-A"}]},
		{"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"content":"sunny"}}}]}
	],
	"systemInstruction":{"parts":[{"text":"Be brief."},{"text":"Answer in French."}]},
	"tools":[{"functionDeclarations":[{"name":"get_weather","description":"Weather by city","parametersJsonSchema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}}]}],
	"toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["get_weather"]}},
	"generationConfig":{"temperature":0.2,"topP":0.9,"maxOutputTokens":50,"stopSequences":["END"],"candidateCount":2,"seed":7,
		"responseMimeType":"application/json","responseJsonSchema":{"type":"object","properties":{"t":{"type":"number"}}}}
	}`
	var w map[string]any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(w)
	if string(gj) != string(wj) {
		t.Fatalf("got\n%s\nwant\n%s", gj, wj)
	}

	for _, bad := range []string{`{"messages":[{"role":"system","content":"only a system prompt"}]}`, `{"messages":[{"role":"wizard","content":"x"}]}`,
		`{"messages":[{"role":"user","content":5}]}`, `[1]`, `{"messages":[{"role":"user","content":"x"}],"stop":5}`} {
		if _, err := ChatToGemini([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

// TestChatToGeminiRefusesWhatGeminiCannotTake: a request Gemini would
// refuse (a function without a name: functionDeclaration, functionCall
// and functionResponse all require one; an inline image without its media
// type or data) is refused here, with the request member it concerns for
// the client's 400; a tool message naming its function is still taken
// when it answers no earlier call.
func TestChatToGeminiRefusesWhatGeminiCannotTake(t *testing.T) {
	for _, tc := range []struct{ name, body, field, says string }{
		{"tool message answering nothing, unnamed", `{"messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"nope","content":"42"}]}`, "messages", `messages[1]: a tool message must answer a tool call`},
		{"tool without a name", `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"x"}},{"type":"function","function":{"name":""}}]}`, "tools", "tools[1].function.name is required"},
		{"tool call without a name", `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"x"}]}`, "messages", "messages[1].tool_calls[0].function.name is required"},
		{"data: URL without data", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:"}}]}]}`, "messages", "messages[0]: image_url: a data: URL needs"},
		{"data: URL with an empty payload", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,"}}]}]}`, "messages", "a data: URL needs"},
		{"data: URL without a media type", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:;base64,iVBORw0KGgo="}}]}]}`, "messages", "a data: URL needs"},
	} {
		_, err := ChatToGemini([]byte(tc.body))
		if err == nil || FieldOf(err, "messages") != tc.field || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v (field %q), want %q on %s", tc.name, err, FieldOf(err, "messages"), tc.says, tc.field)
		}
	}
	b, err := ChatToGemini([]byte(`{"messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"nope","name":"lookup","content":"42"}]}`))
	if err != nil || !strings.Contains(string(b), `"functionResponse":{"name":"lookup"`) {
		t.Fatalf("a named tool message: %s %v", b, err)
	}
}

// A generateContent answer in the shape Google's API reference documents:
// a thinking model that thought, then called a function (with the
// signature of its thought), with usage that counts the thoughts apart.
const geminiToolAnswer = `{
  "candidates": [{
    "content": {"role": "model", "parts": [
      {"text": "The user wants the weather in Paris.", "thought": true},
      {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "SIG-B"}
    ]},
    "finishReason": "STOP", "index": 0
  }],
  "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 15, "totalTokenCount": 31, "thoughtsTokenCount": 4, "cachedContentTokenCount": 2},
  "modelVersion": "gemini-2.5-flash",
  "responseId": "abc123"
}`

func TestGeminiToCompletion(t *testing.T) {
	b, u, err := GeminiToCompletion([]byte(geminiToolAnswer), "gemini-2.5-flash")
	if err != nil {
		t.Fatal(err)
	}
	if want := (usage.Usage{Prompt: 12, Completion: 19, Cached: 2, Reasoning: 4}); u != want {
		t.Fatalf("usage %+v, want %+v (thoughts are output)", u, want)
	}
	var c oaResponse
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	ch := c.Choices[0]
	if c.ID != "chatcmpl-abc123" || c.Model != "gemini-2.5-flash" || ch.FinishReason != "tool_calls" || ch.Message.Content != nil ||
		len(ch.Message.ToolCalls) != 1 || ch.Message.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` ||
		ch.Message.ToolCalls[0].ID != "call_0_0__thought__SIG-B" || c.Usage.CompletionTokens != 19 || c.Usage.PromptTokens != 12 {
		t.Fatalf("completion %s", b)
	}

	text := `{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"},{"text":" there"}]},"finishReason":"MAX_TOKENS"},
	{"content":{"role":"model","parts":[{"text":"Hi"}]},"finishReason":"SAFETY","index":1}],
	"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":3},"responseId":"r2","modelVersion":"gemini-2.0-flash"}`
	b, u, err = GeminiToCompletion([]byte(text), "")
	if err != nil || u.Completion != 3 {
		t.Fatal(err, u)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Choices) != 2 || *c.Choices[0].Message.Content != "Hello there" || c.Choices[0].FinishReason != "length" ||
		c.Choices[1].FinishReason != "content_filter" || c.Model != "gemini-2.0-flash" {
		t.Fatalf("completion %s", b)
	}
	if _, _, err := GeminiToCompletion([]byte(`not json`), "m"); err == nil {
		t.Fatal("a non-JSON answer was translated")
	}
}

// TestGeminiStream: a streamGenerateContent (alt=sse) stream becomes chat
// chunks - role first, text and thoughts and tool calls as they come, the
// finish reason, the usage chunk when asked for, [DONE] - and its usage is
// the last event's.
func TestGeminiStream(t *testing.T) {
	events := []string{
		`{"candidates":[{"content":{"role":"model","parts":[{"text":"Thinking...","thought":true}]},"index":0}],"usageMetadata":{"promptTokenCount":9},"responseId":"s1","modelVersion":"gemini-2.5-pro"}`,
		`{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":1},"responseId":"s1"}`,
		`{"candidates":[{"content":{"role":"model","parts":[{"text":"lo"},{"functionCall":{"name":"f","args":{"a":1}}}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":6,"thoughtsTokenCount":3},"responseId":"s1"}`,
	}
	s := GeminiToChatStream("gem", true)
	var out []byte
	for _, e := range events {
		out = s.Event([]byte("data: "+e+"\r\n\r\n"), out)
	}
	out = s.End(out)
	var deltas []map[string]any
	var finish, usageSeen any
	for _, line := range strings.Split(string(out), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c struct {
			Model   string `json:"model"`
			Choices []struct {
				Delta        map[string]any `json:"delta"`
				FinishReason any            `json:"finish_reason"`
			} `json:"choices"`
			Usage any `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		if c.Model != "gem" {
			t.Fatalf("chunk model %q", c.Model)
		}
		if c.Usage != nil {
			usageSeen = c.Usage
		}
		for _, ch := range c.Choices {
			deltas = append(deltas, ch.Delta)
			if ch.FinishReason != nil {
				finish = ch.FinishReason
			}
		}
	}
	if !strings.HasSuffix(string(out), "data: [DONE]\n\n") || finish != "tool_calls" || usageSeen == nil || len(deltas) != 6 ||
		deltas[0]["role"] != "assistant" || deltas[1]["reasoning_content"] != "Thinking..." || deltas[2]["content"] != "Hel" || deltas[3]["content"] != "lo" {
		t.Fatalf("stream:\n%s", out)
	}
	if u, ok := s.Usage(); !ok || u != (usage.Usage{Prompt: 9, Completion: 9, Reasoning: 3}) || s.Chunks() != 4 {
		t.Fatalf("usage %+v %v chunks %d", u, ok, s.Chunks())
	}
	// A stream that ends before any answer owes the client nothing.
	if tail := GeminiToChatStream("gem", true).End(nil); len(tail) != 0 {
		t.Fatalf("empty stream ended with %s", tail)
	}
}

func TestGeminiErrorToOpenAI(t *testing.T) {
	b := GeminiErrorToOpenAI(429, []byte(`{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}`))
	var e struct {
		Error struct{ Message, Type, Code string }
	}
	if json.Unmarshal(b, &e) != nil || e.Error.Type != "rate_limit_error" || e.Error.Code != "RESOURCE_EXHAUSTED" || !strings.Contains(e.Error.Message, "exhausted") {
		t.Fatalf("%s", b)
	}
	if b := GeminiErrorToOpenAI(502, []byte(`<html>bad gateway</html>`)); !strings.Contains(string(b), `"api_error"`) {
		t.Fatalf("%s", b)
	}
}
