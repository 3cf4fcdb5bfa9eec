package translate

import (
	"errors"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/usage"
)

// geminiBlocked is a prompt Gemini blocked: no candidates, the reason in
// promptFeedback, the prompt's tokens in usageMetadata.
const geminiBlocked = `{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT","blockReasonMessage":"The prompt is blocked due to prohibited contents"},
"usageMetadata":{"promptTokenCount":81,"totalTokenCount":81},"modelVersion":"gemini-2.5-flash","responseId":"blk1"}`

// TestGeminiBlockedPrompt: a blocked prompt is a refusal (Refused, with
// the prompt's usage, which is booked) when answered whole; streamed, the
// answer has begun, so it ends finished by content_filter.
func TestGeminiBlockedPrompt(t *testing.T) {
	out, u, err := GeminiToCompletion([]byte(geminiBlocked), "")
	var ref *Refused
	if !errors.As(err, &ref) || ref.Reason == "" || out != nil || u != (usage.Usage{Prompt: 81}) {
		t.Fatalf("%s %v %+v", out, err, u)
	}
	s := GeminiToChatStream("", true)
	b := s.End(s.Event([]byte("data: "+strings.ReplaceAll(geminiBlocked, "\n", "")+"\n\n"), nil))
	if !strings.Contains(string(b), `"finish_reason":"content_filter"`) || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
		t.Fatalf("stream: %s", b)
	}
	if u, ok := s.Usage(); !ok || u.Prompt != 81 {
		t.Fatalf("stream usage %+v %v", u, ok)
	}
}

// TestGeminiEmbeddings: an OpenAI embeddings request becomes one
// batchEmbedContents request per text, and the answer OpenAI's list; the
// Gemini API's answer has no usage (zero: the gateway counts), Vertex AI's
// usageMetadata is read.
func TestGeminiEmbeddings(t *testing.T) {
	b, err := EmbeddingsToGemini([]byte(`{"model":"x","input":["What is the meaning of life?","How much wood?"],"dimensions":8}`), "gemini-embedding-001")
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, b, `{"requests":[
		{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"What is the meaning of life?"}]},"outputDimensionality":8},
		{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"How much wood?"}]},"outputDimensionality":8}]}`)
	out, u, err := GeminiToEmbeddings([]byte(`{"embeddings":[{"values":[0.1,-0.2]},{"values":[0.3,0.4]}]}`), "gemini-embedding-001")
	if err != nil || u != (usage.Usage{}) {
		t.Fatalf("%v %+v", err, u)
	}
	jsonEqual(t, out, `{"object":"list","model":"gemini-embedding-001","usage":{"prompt_tokens":0,"total_tokens":0},
	"data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]},{"object":"embedding","index":1,"embedding":[0.3,0.4]}]}`)
	if _, u, _ = GeminiToEmbeddings([]byte(`{"embeddings":[{"values":[1]}],"usageMetadata":{"promptTokenCount":6}}`), "m"); u.Prompt != 6 {
		t.Fatalf("vertex usage %+v", u)
	}
}
