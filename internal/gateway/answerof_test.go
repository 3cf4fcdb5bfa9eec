package gateway

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/usage"
)

// answerOfObject is answerOf as it was before the cursor: the whole answer
// scanned into a jsonbody.Object, usage decoded by encoding/json, the id
// read by idOf. The reference answerOf must agree with.
func answerOfObject(body []byte) (u usage.Usage, id string, ok bool, err error) {
	var o jsonbody.Object
	if err := o.Reset(body); err != nil {
		return usage.Usage{}, "", false, err
	}
	if raw := o.Get("usage"); len(raw) > 0 && raw[0] == '{' {
		var d usage.OpenAI
		if json.Unmarshal(raw, &d) == nil {
			u, ok = d.Usage(), true
		}
	}
	return u, idOf(&o), ok, nil
}

// usageFromChunkObject is usageFromChunk as it was before the cursor.
func usageFromChunkObject(data []byte) (u usage.Usage, onlyUsage, ok bool) {
	var o jsonbody.Object
	if o.Reset(data) != nil {
		return usage.Usage{}, false, false
	}
	if raw := o.Get("usage"); len(raw) > 0 && raw[0] == '{' {
		var d usage.OpenAI
		if json.Unmarshal(raw, &d) == nil {
			u, ok = d.Usage(), true
		}
	}
	choices := o.Get("choices")
	onlyUsage = ok && (choices == nil || string(choices) == "[]")
	return u, onlyUsage, ok
}

// answerCases: OpenAI, Anthropic and Responses answers, and what a scanner
// could get wrong: usage before and after choices, nested objects holding
// "usage" and "id", repeated members, escaped and case-changed names,
// strings holding member-like text, non-string ids, message ids, and
// bodies that are not JSON objects.
var answerCases = []string{
	`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}`,
	`{"usage":{"prompt_tokens":12,"completion_tokens":9},"id":"x","choices":[{"message":{"content":"hi","usage":{"prompt_tokens":99}}}]}`,
	`{"id":"msg_01","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":10,"output_tokens":5}}`,
	`{"id":"resp_1","object":"response","output":[{"type":"message","id":"m","content":[{"type":"output_text","text":"x"}]}],"usage":{"input_tokens":3,"output_tokens":2,"total_tokens":5}}`,
	`{"type":"message_start","message":{"id":"msg_abc","usage":{"input_tokens":1}}}`,
	`{"message":{"id":"inner"},"id":7}`, `{"message":{"id":"inner"},"id":null}`, `{"message":{"id":"inner"},"id":"outer"}`,
	`{"message":{"id":"a","id":"b"}}`, `{"message":{"ID":"a"}}`, `{"message":"m"}`, `{"message":[{"id":"x"}]}`,
	`{"message":{"nested":{"id":"deep"}}}`, `{"message":{"id":7}}`, `{"message":null}`,
	`{"id":"a","id":"b"}`, `{"id":"a","id":3}`, `{"ID":"a"}`, `{"Id":"a","usage":{"prompt_tokens":1}}`,
	`{"\u0069d":"escaped key"}`, `{"i\u0064":"x","us\u0061ge":{"prompt_tokens":4}}`, `{"id\u0000":"x"}`,
	`{"id":"esc\"aped\\ \u00e9 \ud83d\ude00"}`, `{"id":"\ud800"}`, "{\"id\":\"raw \xff bytes\"}", "{\"id\":\"bad \xff \\n esc\"}",
	`{"id":""}`, `{"id":"a\/b"}`,
	`{"usage":{"prompt_tokens":1},"usage":{"completion_tokens":2}}`,
	`{"usage":{"prompt_tokens":1},"usage":null}`, `{"usage":null}`, `{"usage":[]}`, `{"usage":"x"}`, `{"usage":{}}`,
	`{"Usage":{"prompt_tokens":1}}`, `{"USAGE":{"prompt_tokens":1}}`,
	`{"usage":{"prompt_tokens":1.5}}`, `{"usage":{"PROMPT_TOKENS":5,"prompt_tokens_details":{"cached_tokens":2}}}`,
	`{"choices":[{"usage":{"prompt_tokens":1}}],"data":{"usage":{"prompt_tokens":2},"id":"n"}}`,
	`{"text":"\"usage\":{\"prompt_tokens\":5},\"id\":\"fake\"","k\"usage":{"prompt_tokens":6}}`,
	`{"a":"\\","usage":{"prompt_tokens":8},"b":"\\\"","id":"z"}`,
	` { "id" : "sp" , "usage" : { "prompt_tokens" : 3 } } `, "{\n\t\"id\":\"nl\",\r\n\"usage\":{\"completion_tokens\":4}\n}",
	`{}`, ` {} `, `[]`, `null`, `"x"`, `1`, ``, ` `, `{`, `{"id":"x"`, `{"id":"x",}`, `{"id":"x"}}`, `{"id":"x"} {}`,
	`{"a":[1,2,{"b":[{"c":null}]}],"id":"after arrays","usage":{"prompt_tokens":-3}}`,
	`{"id":true,"usage":{"prompt_tokens":9223372036854775808}}`,
	`{"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}`,
	`{"choices":[{"delta":{}}],"usage":{"prompt_tokens":5}}`, `{"usage":{"prompt_tokens":5},"choices":[],"choices":[1]}`,
	`{"usage":{"prompt_tokens":5},"choices":[1],"choices":[]}`, `{"usage":{"prompt_tokens":5},"choices":null}`,
	`{"usage":{"prompt_tokens":5},"choices":[ ]}`, `{"usage":{"prompt_tokens":5},"Choices":[1]}`,
}

func TestAnswerOfMatchesObject(t *testing.T) {
	deep := `{"usage":{"prompt_tokens":1},"x":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`
	big := `{"choices":[` + strings.Repeat(`{"message":{"content":"`+strings.Repeat("é\\\"x", 200)+`","usage":{"id":"no"}}},`, 200) + `{}],"id":"big","usage":{"prompt_tokens":2,"completion_tokens":3}}`
	for _, body := range append(answerCases, deep, big) {
		checkAnswerOf(t, []byte(body))
	}
}

func FuzzAnswerOfMatchesObject(f *testing.F) {
	for _, body := range answerCases {
		f.Add([]byte(body))
	}
	f.Fuzz(checkAnswerOf)
}

func checkAnswerOf(t *testing.T, body []byte) {
	u, id, ok, err := answerOf(body)
	wu, wid, wok, werr := answerOfObject(body)
	if u != wu || id != wid || ok != wok || (err == nil) != (werr == nil) || (err != nil && err.Error() != werr.Error()) {
		t.Fatalf("answerOf(%.120q) = %+v, %q, %v, %v; the Object and encoding/json give %+v, %q, %v, %v",
			body, u, id, ok, err, wu, wid, wok, werr)
	}
	cu, only, cok := usageFromChunk(body)
	wcu, wonly, wcok := usageFromChunkObject(body)
	if cu != wcu || only != wonly || cok != wcok {
		t.Fatalf("usageFromChunk(%.120q) = %+v, %v, %v; the Object and encoding/json give %+v, %v, %v", body, cu, only, cok, wcu, wonly, wcok)
	}
}

// BenchmarkAnswerOfObject is BenchmarkAnswerOf's answer read the way it
// was before the cursor, for the comparison.
func BenchmarkAnswerOfObject(b *testing.B) {
	body := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, id, ok, err := answerOfObject(body); !ok || err != nil || id != "chatcmpl-1" {
			b.Fatal("no usage or id")
		}
	}
}

// idOf is the answer id in o (see answerID).
func idOf(o *jsonbody.Object) string {
	if id, found := o.String("id"); found {
		return id
	}
	var inner jsonbody.Object
	if m := o.Get("message"); len(m) > 0 && inner.Reset(m) == nil {
		id, _ := inner.String("id")
		return id
	}
	return ""
}
