package usage

import (
	"encoding/json"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want Usage
		ok   bool
	}{
		{"cached and reasoning details",
			`{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,"prompt_tokens_details":{"cached_tokens":100},"completion_tokens_details":{"reasoning_tokens":12}}`,
			Usage{Prompt: 120, Completion: 30, Cached: 100, Reasoning: 12}, true},
		{"plain", `{"prompt_tokens":7,"completion_tokens":3}`, Usage{Prompt: 7, Completion: 3}, true},
		{"negative counts kept", `{"prompt_tokens":-5,"completion_tokens":-1,"prompt_tokens_details":{"cached_tokens":-2},"completion_tokens_details":{"reasoning_tokens":-3}}`,
			Usage{Prompt: -5, Completion: -1, Cached: -2, Reasoning: -3}, true},
		{"missing fields", `{"completion_tokens":4}`, Usage{Completion: 4}, true},
		{"empty object", `{}`, Usage{}, true},
		{"null details", `{"prompt_tokens":2,"prompt_tokens_details":null,"completion_tokens_details":null}`, Usage{Prompt: 2}, true},
		{"total not read", `{"prompt_tokens":2,"completion_tokens":1,"total_tokens":"three"}`, Usage{Prompt: 2, Completion: 1}, true},
		{"unknown members ignored", `{"prompt_tokens":2,"cost":0.1,"prompt_tokens_details":{"audio_tokens":1}}`, Usage{Prompt: 2}, true},
		{"missing", ``, Usage{}, false},
		{"null", `null`, Usage{}, false},
		{"array", `[1,2]`, Usage{}, false},
		{"count not an integer", `{"prompt_tokens":1.5}`, Usage{}, false},
		{"count a string", `{"prompt_tokens":"7"}`, Usage{}, false},
		{"details not an object", `{"prompt_tokens":7,"prompt_tokens_details":3}`, Usage{}, false},
		{"truncated", `{"prompt_tokens":7`, Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Parse([]byte(tt.raw))
			if got != tt.want || ok != tt.ok {
				t.Fatalf("Parse(%s) = %+v, %v; want %+v, %v", tt.raw, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestOpenAIWritten: the usage member written to OpenAI clients, byte for
// byte, and read back unchanged.
func TestOpenAIWritten(t *testing.T) {
	tests := []struct {
		name string
		u    Usage
		want string
	}{
		{"plain", Usage{Prompt: 12, Completion: 9}, `{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}`},
		{"cached", Usage{Prompt: 115, Completion: 20, Cached: 100},
			`{"prompt_tokens":115,"completion_tokens":20,"total_tokens":135,"prompt_tokens_details":{"cached_tokens":100}}`},
		{"reasoning", Usage{Prompt: 5, Completion: 30, Reasoning: 25},
			`{"prompt_tokens":5,"completion_tokens":30,"total_tokens":35,"completion_tokens_details":{"reasoning_tokens":25}}`},
		{"zero", Usage{}, `{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.u.OpenAI())
			if err != nil || string(b) != tt.want {
				t.Fatalf("written %s (%v), want %s", b, err, tt.want)
			}
			if back, ok := Parse(b); !ok || back != tt.u {
				t.Fatalf("read back %+v, %v; want %+v", back, ok, tt.u)
			}
		})
	}
	// Cache creation has no OpenAI member: it stays in the prompt.
	b, _ := json.Marshal(Usage{Prompt: 15, Completion: 1, Cached: 4, CacheCreation: 6}.OpenAI())
	if want := `{"prompt_tokens":15,"completion_tokens":1,"total_tokens":16,"prompt_tokens_details":{"cached_tokens":4}}`; string(b) != want {
		t.Fatalf("with cache creation: %s, want %s", b, want)
	}
}

func TestAnthropic(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    Usage
		written string // the Anthropic member written back from want
	}{
		{"cache reads and creation join the prompt",
			`{"input_tokens":10,"output_tokens":20,"cache_read_input_tokens":100,"cache_creation_input_tokens":5}`,
			Usage{Prompt: 115, Completion: 20, Cached: 100, CacheCreation: 5},
			`{"input_tokens":10,"output_tokens":20,"cache_read_input_tokens":100,"cache_creation_input_tokens":5}`},
		{"no cache", `{"input_tokens":12,"output_tokens":9}`, Usage{Prompt: 12, Completion: 9},
			`{"input_tokens":12,"output_tokens":9,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}`},
		{"missing fields", `{"output_tokens":1}`, Usage{Completion: 1},
			`{"input_tokens":0,"output_tokens":1,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}`},
		{"negative input: written as zero", `{"input_tokens":-50,"output_tokens":2,"cache_read_input_tokens":10}`,
			Usage{Prompt: -40, Completion: 2, Cached: 10},
			`{"input_tokens":0,"output_tokens":2,"cache_read_input_tokens":10,"cache_creation_input_tokens":0}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a Anthropic
			if err := json.Unmarshal([]byte(tt.raw), &a); err != nil {
				t.Fatal(err)
			}
			if got := a.Usage(); got != tt.want {
				t.Fatalf("normalised %+v, want %+v", got, tt.want)
			}
			if b, _ := json.Marshal(tt.want.Anthropic()); string(b) != tt.written {
				t.Fatalf("written %s, want %s", b, tt.written)
			}
		})
	}
	// From OpenAI's convention: input_tokens is the prompt without the
	// cache reads and creation; reasoning stays in the output.
	got := Usage{Prompt: 50, Completion: 3, Cached: 40, Reasoning: 2}.Anthropic()
	if want := (Anthropic{InputTokens: 10, OutputTokens: 3, CacheReadInputTokens: 40}); got != want {
		t.Fatalf("from OpenAI usage: %+v, want %+v", got, want)
	}
	if back := got.Usage(); back != (Usage{Prompt: 50, Completion: 3, Cached: 40}) {
		t.Fatalf("round trip %+v", back)
	}
}
