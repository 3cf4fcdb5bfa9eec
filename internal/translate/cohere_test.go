package translate

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/usage"
)

// jsonEqual fails t unless got and want hold the same JSON value.
func jsonEqual(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// TestChatToCohere: a chat request with every role, an image, tools, a
// tool turn and a JSON schema becomes Cohere's v2 chat body.
func TestChatToCohere(t *testing.T) {
	in := `{"model":"group","max_completion_tokens":50,"temperature":0.3,"top_p":0.9,"stop":"END","seed":7,"stream":true,
	"messages":[
		{"role":"developer","content":"Be brief."},
		{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]},
		{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"a\"}"}}]},
		{"role":"tool","tool_call_id":"c1","content":"a cat"}
	],
	"tools":[{"type":"function","function":{"name":"lookup","description":"Look up","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}],
	"tool_choice":"required",
	"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"a":{"type":"string"}}}}}}`
	b, err := ChatToCohere([]byte(in), "command-r")
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, b, `{"model":"command-r","stream":true,"max_tokens":50,"temperature":0.3,"p":0.9,"stop_sequences":["END"],"seed":7,
	"messages":[
		{"role":"system","content":"Be brief."},
		{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]},
		{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"a\"}"}}]},
		{"role":"tool","tool_call_id":"c1","content":"a cat"}
	],
	"tools":[{"type":"function","function":{"name":"lookup","description":"Look up","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}],
	"tool_choice":"REQUIRED",
	"response_format":{"type":"json_object","json_schema":{"type":"object","properties":{"a":{"type":"string"}}}}}`)

	if _, err := ChatToCohere([]byte(`{"messages":[{"role":"wizard","content":"x"}]}`), "m"); err == nil {
		t.Fatal("an unknown role was accepted")
	}
}

// TestCohereGoldenChat: an answer shaped as the v2 chat reference's
// example (POST /v2/chat, "Tell me about LLMs") becomes an OpenAI chat
// completion, booked from billed_units rather than the template's tokens.
func TestCohereGoldenChat(t *testing.T) {
	req, err := ChatToCohere([]byte(`{"model":"x","messages":[{"role":"user","content":"Tell me about LLMs"}]}`), "command-a-03-2025")
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, req, `{"model":"command-a-03-2025","messages":[{"role":"user","content":"Tell me about LLMs"}]}`)
	answer := `{"id":"c14c80c3-18eb-4519-9460-6c92edd8cfb4","finish_reason":"COMPLETE",
	"message":{"role":"assistant","content":[{"type":"text","text":"LLMs stands for Large Language Models."}]},
	"usage":{"billed_units":{"input_tokens":5,"output_tokens":9},"tokens":{"input_tokens":71,"output_tokens":9}}}`
	out, u, err := CohereToCompletion([]byte(answer), "command-a-03-2025")
	if err != nil {
		t.Fatal(err)
	}
	if u != (usage.Usage{Prompt: 5, Completion: 9}) {
		t.Fatalf("usage %+v", u)
	}
	var c map[string]any
	_ = json.Unmarshal(out, &c)
	delete(c, "created")
	b, _ := json.Marshal(c)
	jsonEqual(t, b, `{"id":"chatcmpl-c14c80c3-18eb-4519-9460-6c92edd8cfb4","object":"chat.completion","model":"command-a-03-2025",
	"choices":[{"index":0,"message":{"role":"assistant","content":"LLMs stands for Large Language Models."},"finish_reason":"stop"}],
	"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14}}`)

	// A tool call comes back as OpenAI's tool_calls.
	tool := `{"id":"t1","finish_reason":"TOOL_CALL","message":{"role":"assistant","tool_plan":"I will look it up.",
	"tool_calls":[{"id":"get_weather_1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Toronto\"}"}}]},
	"usage":{"billed_units":{"input_tokens":37,"output_tokens":20}}}`
	out, _, err = CohereToCompletion([]byte(tool), "command-r")
	if err != nil {
		t.Fatal(err)
	}
	if s := string(out); !strings.Contains(s, `"finish_reason":"tool_calls"`) || !strings.Contains(s, `"tool_calls":[{"id":"get_weather_1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Toronto\"}"}}]`) || !strings.Contains(s, `"content":null`) {
		t.Fatalf("tool answer: %s", out)
	}
}

// TestCohereStream: Cohere's v2 stream events (text, then a tool call in
// pieces) become chat chunks, the usage from message-end.
func TestCohereStream(t *testing.T) {
	events := []string{
		`{"id":"m1","type":"message-start","delta":{"message":{"role":"assistant"}}}`,
		`{"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}`,
		`{"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hello"}}}}`,
		`{"type":"content-delta","index":0,"delta":{"message":{"content":{"text":" there"}}}}`,
		`{"type":"content-end","index":0}`,
		`{"type":"tool-call-start","index":1,"delta":{"message":{"tool_calls":{"id":"tc1","type":"function","function":{"name":"f","arguments":""}}}}}`,
		`{"type":"tool-call-delta","index":1,"delta":{"message":{"tool_calls":{"function":{"arguments":"{\"a\":"}}}}}`,
		`{"type":"tool-call-delta","index":1,"delta":{"message":{"tool_calls":{"function":{"arguments":"1}"}}}}}`,
		`{"type":"tool-call-end","index":1}`,
		`{"type":"message-end","delta":{"finish_reason":"TOOL_CALL","usage":{"billed_units":{"input_tokens":12,"output_tokens":7},"tokens":{"input_tokens":80,"output_tokens":7}}}}`,
	}
	s := CohereToChatStream("command-r", true)
	var out []byte
	for _, e := range events {
		var name struct{ Type string }
		_ = json.Unmarshal([]byte(e), &name)
		out = s.Event([]byte("event: "+name.Type+"\ndata: "+e+"\n\n"), out)
	}
	out = s.End(out)
	var text, args strings.Builder
	var finish string
	var last *usage.OpenAI
	for _, line := range strings.Split(string(out), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content   string       `json:"content"`
					ToolCalls []oaToolCall `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *usage.OpenAI `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
			for _, tc := range ch.Delta.ToolCalls {
				args.WriteString(tc.Function.Arguments)
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
		if c.Usage != nil {
			last = c.Usage
		}
	}
	if text.String() != "Hello there" || args.String() != `{"a":1}` || finish != "tool_calls" || !strings.HasSuffix(string(out), "data: [DONE]\n\n") {
		t.Fatalf("text %q args %q finish %q\n%s", text.String(), args.String(), finish, out)
	}
	if u, ok := s.Usage(); !ok || u != (usage.Usage{Prompt: 12, Completion: 7}) || last == nil || last.PromptTokens != 12 || last.CompletionTokens != 7 {
		t.Fatalf("usage %+v %v %+v", u, ok, last)
	}
	if s.Chunks() != 5 { // two texts, the call's start and its two pieces
		t.Fatalf("chunks %d, want 5", s.Chunks())
	}
}

// TestCohereEmbed: OpenAI embeddings requests become v2 embed requests
// (search documents and float vectors by default), and the answer OpenAI's
// list, with the billed input tokens as usage.
func TestCohereEmbed(t *testing.T) {
	b, err := EmbeddingsToCohere([]byte(`{"model":"x","input":["hello","world"]}`), "embed-english-v3.0")
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, b, `{"model":"embed-english-v3.0","texts":["hello","world"],"input_type":"search_document","embedding_types":["float"]}`)
	b, _ = EmbeddingsToCohere([]byte(`{"input":"q","input_type":"search_query"}`), "m")
	jsonEqual(t, b, `{"model":"m","texts":["q"],"input_type":"search_query","embedding_types":["float"]}`)
	if _, err := EmbeddingsToCohere([]byte(`{"input":[[1,2,3]]}`), "m"); err == nil {
		t.Fatal("token arrays were accepted")
	}
	out, u, err := CohereToEmbeddings([]byte(`{"id":"e1","embeddings":{"float":[[0.1,0.2],[0.3,0.4]]},"texts":["hello","world"],
		"meta":{"api_version":{"version":"2"},"billed_units":{"input_tokens":2}},"response_type":"embeddings_by_type"}`), "embed-english-v3.0")
	if err != nil || u != (usage.Usage{Prompt: 2}) {
		t.Fatalf("%v %+v", err, u)
	}
	jsonEqual(t, out, `{"object":"list","model":"embed-english-v3.0","usage":{"prompt_tokens":2,"total_tokens":2},
	"data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]},{"object":"embedding","index":1,"embedding":[0.3,0.4]}]}`)
}

// TestCohereError: Cohere's {"message"} errors take OpenAI's shape with the
// status's type; other bodies are left to ErrorToOpenAI.
func TestCohereError(t *testing.T) {
	jsonEqual(t, CohereErrorToOpenAI(429, []byte(`{"message":"trial key limit"}`)),
		`{"error":{"message":"trial key limit","type":"rate_limit_error","param":null,"code":"429"}}`)
	jsonEqual(t, CohereErrorToOpenAI(401, []byte(`{"message":"invalid api token"}`)),
		`{"error":{"message":"invalid api token","type":"authentication_error","param":null,"code":"401"}}`)
	if got := CohereErrorToOpenAI(502, []byte("bad gateway")); !strings.Contains(string(got), `"type":"api_error"`) {
		t.Fatalf("%s", got)
	}
}
