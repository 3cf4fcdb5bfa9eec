package pricing

import (
	"bytes"
	"math"
	"os"
	"testing"

	"github.com/tollgate/tollgate/internal/usage"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }

// TestEmbeddedTableMatchesSource fails when prices.json was not regenerated
// from ../shared/pricing (run `go generate ./internal/pricing`).
func TestEmbeddedTableMatchesSource(t *testing.T) {
	src, err := os.ReadFile("../../../shared/pricing/model_prices_and_context_window.json")
	if err != nil {
		t.Skipf("shared price source not present (%v): cannot check the embedded table for drift", err)
	}
	want, err := Derive(src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, embedded) {
		t.Fatal("prices.json differs from what the generator derives from the shared source: run go generate ./internal/pricing")
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		provider, model string
		in, out         float64
	}{
		{"openai", "gpt-4o", 2.5e-06, 1e-05},
		{"openai", "gpt-4o-mini", 1.5e-07, 6e-07},
		{"azure", "gpt-4o", 2.5e-06, 1e-05}, // via "azure/gpt-4o"
		{"anthropic", "claude-3-5-sonnet-20241022", 3e-06, 1.5e-05},
		{"openai", "GPT-4", 3e-05, 6e-05}, // case-folded
	}
	for _, tt := range tests {
		p, ok := Lookup(tt.provider, tt.model)
		if !ok || !near(p.InputPerToken, tt.in) || !near(p.OutputPerToken, tt.out) {
			t.Errorf("%s/%s = %+v %v", tt.provider, tt.model, p, ok)
		}
	}
	if _, ok := Lookup("openai", "no-such-model-xyz"); ok {
		t.Error("unknown model priced")
	}
}

func TestCost(t *testing.T) {
	p, _ := Lookup("openai", "gpt-4o") // 2.5e-6 in, 1e-5 out, 1.25e-6 cached
	tests := []struct {
		name string
		u    usage.Usage
		want float64
	}{
		{"plain", usage.Usage{Prompt: 1000, Completion: 100}, 1000*2.5e-6 + 100*1e-5},
		{"cached tokens priced as cached", usage.Usage{Prompt: 1000, Cached: 400, Completion: 100}, 600*2.5e-6 + 400*1.25e-6 + 100*1e-5},
		{"anthropic normalised", usage.Anthropic{InputTokens: 600, OutputTokens: 100, CacheReadInputTokens: 400}.Usage(), 600*2.5e-6 + 400*1.25e-6 + 100*1e-5},
	}
	for _, tt := range tests {
		if got := p.Cost(tt.u); !near(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	c, _ := Lookup("anthropic", "claude-3-5-sonnet-20241022")
	if got, want := c.Cost(usage.Anthropic{InputTokens: 100, OutputTokens: 10, CacheCreationInputTokens: 1000}.Usage()), 100*3e-6+1000*3.75e-6+10*1.5e-5; !near(got, want) {
		t.Errorf("cache creation: %v, want %v", got, want)
	}
	// The same usage in OpenAI's convention: the prompt counts the creation.
	if got, want := c.Cost(usage.Usage{Prompt: 1100, CacheCreation: 1000, Completion: 10}), 100*3e-6+1000*3.75e-6+10*1.5e-5; !near(got, want) {
		t.Errorf("cache creation in the prompt: %v, want %v", got, want)
	}
	noCache := Price{InputPerToken: 1, OutputPerToken: 2}
	if got := noCache.Cost(usage.Usage{Prompt: 10, Cached: 4}); got != 10 {
		t.Errorf("cached without a cache price: %v, want the input price", got)
	}
}

func TestWorstCase(t *testing.T) {
	p := Price{InputPerToken: 1e-6, OutputPerToken: 2e-6, MaxOutputTokens: 1000}
	tests := []struct {
		prompt, maxTokens int64
		want              float64
	}{
		{100, 50, 100*1e-6 + 50*2e-6},
		{100, 0, 100*1e-6 + 1000*2e-6},
	}
	for _, tt := range tests {
		if got := p.WorstCase(tt.prompt, tt.maxTokens); !near(got, tt.want) {
			t.Errorf("WorstCase(%d, %d) = %v, want %v", tt.prompt, tt.maxTokens, got, tt.want)
		}
	}
	if got := (Price{OutputPerToken: 1}).WorstCase(0, 0); got != DefaultMaxOutput {
		t.Errorf("unknown max output: %v", got)
	}
}

func BenchmarkLookupCost(b *testing.B) {
	Table()
	b.ReportAllocs()
	for b.Loop() {
		p, _ := Lookup("openai", "gpt-4o-mini")
		_ = p.Cost(usage.Usage{Prompt: 100, Completion: 50})
	}
}

// TestBatchPrice: a model the table gives batch prices is billed at them;
// one without is billed at half its price, as OpenAI bills batches.
func TestBatchPrice(t *testing.T) {
	tab, err := Table()
	if err != nil {
		t.Fatal(err)
	}
	var withBatch Price
	for _, p := range tab {
		if p.InputPerTokenBatches > 0 && p.OutputPerTokenBatches > 0 && p.InputPerTokenBatches != p.InputPerToken/2 {
			withBatch = p
			break
		}
	}
	if withBatch.InputPerTokenBatches == 0 {
		t.Fatal("the embedded table has no model with batch prices: was the generator run?")
	}
	b := withBatch.Batch()
	if b.InputPerToken != withBatch.InputPerTokenBatches || b.OutputPerToken != withBatch.OutputPerTokenBatches {
		t.Fatalf("batch price %+v of %+v", b, withBatch)
	}
	plain := Price{InputPerToken: 2e-6, OutputPerToken: 8e-6, CacheReadPerToken: 1e-6, InputPerSecond: 1}
	b = plain.Batch()
	if b.InputPerToken != 1e-6 || b.OutputPerToken != 4e-6 || b.CacheReadPerToken != 5e-7 || b.InputPerSecond != 0 {
		t.Fatalf("half price: %+v", b)
	}
}
