package tokens

import "testing"

func TestText(t *testing.T) {
	tests := []struct {
		model, text string
		want        int64
	}{
		// Reference counts from OpenAI's tokenizer.
		{"gpt-4", "hello world", 2},
		{"gpt-4o", "hello world", 2},
		{"gpt-4", "tiktoken is great!", 6},
		{"gpt-4", "", 0},
	}
	for _, tt := range tests {
		if got := Text(tt.model, tt.text); got != tt.want {
			t.Errorf("Text(%q, %q) = %d, want %d", tt.model, tt.text, got, tt.want)
		}
	}
}

func TestCodecFor(t *testing.T) {
	for model, want := range map[string]string{"gpt-4": "cl100k_base", "openai/gpt-4o-mini": "o200k_base", "o3-mini": "o200k_base",
		"azure/GPT-5": "o200k_base", "claude-3-5-sonnet": "cl100k_base", "llama3": "cl100k_base"} {
		if got := codecFor(model).GetName(); got != want {
			t.Errorf("codecFor(%q) = %s, want %s", model, got, want)
		}
	}
}

func TestMessages(t *testing.T) {
	// OpenAI's cookbook example: this conversation is 129 prompt tokens on
	// gpt-3.5-turbo-0613 / gpt-4 (cl100k_base).
	msgs := `[
	{"role":"system","content":"You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
	{"role":"system","name":"example_user","content":"New synergies will help drive top-line growth."},
	{"role":"system","name":"example_assistant","content":"Things working well together will increase revenue."},
	{"role":"system","name":"example_user","content":"Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
	{"role":"system","name":"example_assistant","content":"Let's talk later when we're less busy about how to do better."},
	{"role":"user","content":"This late pivot means we don't have time to boil the ocean for the client deliverable."}]`
	if got := Messages("gpt-4", []byte(msgs)); got != 129 {
		t.Errorf("cookbook conversation = %d tokens, want 129", got)
	}
	parts := `[{"role":"user","content":[{"type":"text","text":"hello world"},{"type":"image_url","image_url":{"url":"data:,"}}]}]`
	if got, want := Messages("gpt-4o", []byte(parts)), int64(replyPrime+perMessage+1+2+ImageTokens); got != want {
		t.Errorf("text+image = %d, want %d", got, want)
	}
	if got := Messages("gpt-4", []byte(`not json`)); got != 8 {
		t.Errorf("unparseable messages = %d, want their byte length 8", got)
	}
}

func BenchmarkMessages(b *testing.B) {
	msgs := []byte(`[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about rate limits and token buckets."}]`)
	Warm()
	b.ReportAllocs()
	for b.Loop() {
		Messages("gpt-4o", msgs)
	}
}
