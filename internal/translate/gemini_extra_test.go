package translate

import (
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/usage"
)

// geminiBlocked is a prompt Gemini blocked: no candidates, the reason in
// promptFeedback, the prompt's tokens in usageMetadata.
const geminiBlocked = `{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT","blockReasonMessage":"The prompt is blocked due to prohibited contents"},
"usageMetadata":{"promptTokenCount":81,"totalTokenCount":81},"modelVersion":"gemini-2.5-flash","responseId":"blk1"}`

// TestGeminiBlockedPrompt: a blocked prompt answers as LiteLLM answers it,
// whole or streamed: one choice without content, finished by
// content_filter, with the prompt's usage (which is booked).
func TestGeminiBlockedPrompt(t *testing.T) {
	out, u, err := GeminiToCompletion([]byte(geminiBlocked), "")
	if err != nil || u != (usage.Usage{Prompt: 81}) {
		t.Fatalf("%v %+v", err, u)
	}
	if s := string(out); !strings.Contains(s, `"choices":[{"finish_reason":"content_filter","index":0,"message":{"content":null,"role":"assistant"}}]`) {
		t.Fatalf("%s", out)
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
