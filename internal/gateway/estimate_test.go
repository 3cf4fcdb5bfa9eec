package gateway

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/pricing"
	"github.com/tollgate/tollgate/internal/provider"
)

// TestLearnedOutputs: the estimate is the longest of the last answers of
// one deployment and model, forgets an answer after 32 more, and stops
// learning new pairs past maxLearned (client-chosen names on wildcards).
func TestLearnedOutputs(t *testing.T) {
	var o outputs
	if _, ok := o.estimate("d", "m"); ok {
		t.Fatal("an estimate before any answer")
	}
	o.observe("d", "m", 900)
	for range 10 {
		o.observe("d", "m", 50)
	}
	if got, _ := o.estimate("d", "m"); got != 900 {
		t.Fatalf("estimate %d, want the longest recent answer 900", got)
	}
	if _, ok := o.estimate("d", "other"); ok {
		t.Fatal("one model's answers estimated another's")
	}
	for range 32 {
		o.observe("d", "m", 50)
	}
	if got, _ := o.estimate("d", "m"); got != 50 {
		t.Fatalf("estimate %d after 32 shorter answers, want 50", got)
	}
	for i := range maxLearned + 10 {
		o.observe("wild", strconv.Itoa(i), 10)
	}
	if n := o.n.Load(); n > maxLearned {
		t.Fatalf("%d pairs learned, bound %d", n, maxLearned)
	}
}

// TestDefaultHold: the default-mode hold counts the prompt at three bytes
// per token and the output as max_tokens (else the learned length) for
// every completion, and never exceeds the worst case.
func TestDefaultHold(t *testing.T) {
	price := pricing.Price{InputPerToken: 1e-6, OutputPerToken: 1e-5, MaxOutputTokens: 4096}
	body := make([]byte, 300)
	bound := int64(len(body)) // a plain text body: the bound is its length
	m := &Books{}
	req := &request{outputs: 1}
	worst := ledger.USD(price.WorstCase(bound, 4096))
	if got := m.estimate(price, req, bound, int64(len(body)), "d", "m", worst); got != worst {
		t.Fatalf("cold estimate %v, want the worst case %v", got, worst)
	}
	m.outputs.observe("d", "m", 20)
	want := ledger.USD(price.WorstCase(100, 20)) // 300 bytes / 3, 20 learned tokens
	if got := m.estimate(price, req, bound, int64(len(body)), "d", "m", worst); got != want {
		t.Fatalf("learned estimate %v, want %v", got, want)
	}
	req = &request{outputs: 4, maxTokens: 50}
	want = ledger.USD(price.WorstCase(100, 200)) // max_tokens × n
	if got := m.estimate(price, req, bound, int64(len(body)), "d", "m", worst); got != want {
		t.Fatalf("estimate with max_tokens and n %v, want %v", got, want)
	}
}

// TestCapOutput: a capped request's output limit is lowered where the body
// sets one, and added in the member its API reads where it sets none.
func TestCapOutput(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		op       provider.Op
		provider string
		want     string
	}{
		{"openai chat without a limit", `{"model":"m","messages":[]}`, provider.OpChat, "openai", `"max_completion_tokens":40`},
		{"compatible chat without a limit", `{"model":"m","messages":[]}`, provider.OpChat, "groq", `"max_tokens":40`},
		{"max_tokens lowered", `{"model":"m","max_tokens":500}`, provider.OpChat, "openai", `"max_tokens":40`},
		{"max_completion_tokens lowered", `{"model":"m","max_completion_tokens":500,"max_tokens":null}`, provider.OpChat, "openai", `"max_completion_tokens":40`},
		{"a lower limit kept", `{"model":"m","max_tokens":10}`, provider.OpChat, "openai", `"max_tokens":10`},
		{"completions", `{"model":"m","prompt":"x"}`, provider.OpCompletions, "openai", `"max_tokens":40`},
		{"anthropic messages", `{"model":"m","max_tokens":4096,"messages":[]}`, provider.OpMessages, "anthropic", `"max_tokens":40`},
		{"responses without a limit", `{"model":"m","input":"x"}`, provider.OpResponses, "openai", `"max_output_tokens":40`},
		{"responses max_output_tokens lowered", `{"model":"m","input":"x","max_output_tokens":900}`, provider.OpResponses, "azure", `"max_output_tokens":40`},
		{"converse without a limit", `{"messages":[]}`, provider.OpConverse, "bedrock", `"inferenceConfig":{"maxTokens":40}`},
		{"converse maxTokens lowered", `{"messages":[],"inferenceConfig":{"temperature":0.1,"maxTokens":900}}`, provider.OpConverse, "bedrock", `"maxTokens":40`},
		{"generateContent without a limit", `{"contents":[]}`, provider.OpGenerateContent, "gemini", `"generationConfig":{"maxOutputTokens":40}`},
		{"generateContent maxOutputTokens lowered", `{"contents":[],"generationConfig":{"temperature":0.1,"maxOutputTokens":900}}`, provider.OpGenerateContent, "vertex_ai", `"maxOutputTokens":40`},
		{"cohere chat without a limit", `{"model":"m","messages":[]}`, provider.OpCohereChat, "cohere", `"max_tokens":40`},
		{"cohere chat max_tokens lowered", `{"model":"m","messages":[],"max_tokens":900}`, provider.OpCohereChat, "cohere", `"max_tokens":40`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(capOutput([]byte(tt.body), tt.op, tt.provider, 40))
			if !strings.Contains(got, tt.want) || !json.Valid([]byte(got)) {
				t.Fatalf("capOutput(%s) = %s, want it to carry %s", tt.body, got, tt.want)
			}
		})
	}
}

// TestOutputsLookupAllocatesNothing: the learned output lengths of a
// (deployment, model) pair are looked up on every request without a key
// built for it.
func TestOutputsLookupAllocatesNothing(t *testing.T) {
	var o outputs
	o.observe("dep-1", "gpt-4o", 40)
	if n, ok := o.estimate("dep-1", "gpt-4o"); !ok || n != 40 {
		t.Fatalf("estimate %d %v, want 40 true", n, ok)
	}
	dep, model := "dep-1", "gpt-4o"
	if n := testing.AllocsPerRun(100, func() { o.observe(dep, model, 30) }); n != 0 {
		t.Errorf("observe: %.1f allocations, want 0", n)
	}
}

// TestProbeOutputsKeyedByPair: the learned lengths are the pair's own,
// even for names whose joined form would be alike, and new pairs stop at
// maxLearned while the known ones go on learning.
func TestProbeOutputsKeyedByPair(t *testing.T) {
	var o outputs
	o.observe("dep\x00a", "b", 100)
	if n, ok := o.estimate("dep", "a\x00b"); ok {
		t.Errorf("(dep, a\\x00b) has (dep\\x00a, b)'s estimate %d", n)
	}
	if n, ok := o.estimate("dep\x00a", "b"); !ok || n != 100 {
		t.Errorf("estimate %d %v, want 100 true", n, ok)
	}
	for i := int64(1); o.n.Load() < maxLearned; i++ {
		o.observe("dep", "m"+strconv.FormatInt(i, 10), i)
	}
	o.observe("dep", "one too many", 7)
	if _, ok := o.estimate("dep", "one too many"); ok {
		t.Error("a pair past maxLearned was learned")
	}
	o.observe("dep\x00a", "b", 300)
	if n, _ := o.estimate("dep\x00a", "b"); n != 300 {
		t.Errorf("a known pair past the bound: estimate %d, want 300", n)
	}
}
