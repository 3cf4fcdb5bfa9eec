// Package pricing turns token usage into dollars. Its table is derived from
// the public model price list in ../shared/pricing by the generator in gen/
// and embedded in the binary; deployments may override any price.
package pricing

//go:generate go run ./gen -in ../../../shared/pricing/model_prices_and_context_window.json -out prices.json

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/usage"
)

// Price is what one model charges, in USD per token.
type Price struct {
	InputPerToken         float64 `json:"input_cost_per_token,omitempty"`
	OutputPerToken        float64 `json:"output_cost_per_token,omitempty"`
	CacheReadPerToken     float64 `json:"cache_read_input_token_cost,omitempty"`
	CacheCreationPerToken float64 `json:"cache_creation_input_token_cost,omitempty"`
	// Per-second prices, charged for every second an answer took.
	InputPerSecond  float64 `json:"input_cost_per_second,omitempty"`
	OutputPerSecond float64 `json:"output_cost_per_second,omitempty"`
	// Batch API prices per token; 0 where the table names none.
	InputPerTokenBatches  float64 `json:"input_cost_per_token_batches,omitempty"`
	OutputPerTokenBatches float64 `json:"output_cost_per_token_batches,omitempty"`
	// InputPerQuery is a rerank model's price per search unit.
	InputPerQuery   float64 `json:"input_cost_per_query,omitempty"`
	MaxInputTokens  int64   `json:"max_input_tokens,omitempty"`
	MaxOutputTokens int64   `json:"max_output_tokens,omitempty"`
	Mode            string  `json:"mode,omitempty"`
	Provider        string  `json:"litellm_provider,omitempty"`

	// Image and audio prices (media.go).
	MediaPrice
}

//go:embed prices.json
var embedded []byte

var (
	once    sync.Once
	table   map[string]Price
	loadErr error
)

// Table is the embedded price table, parsed on first use.
func Table() (map[string]Price, error) {
	once.Do(func() { loadErr = json.Unmarshal(embedded, &table) })
	return table, loadErr
}

// Lookup finds the price of model as served by provider: "provider/model"
// first (azure/gpt-4o), then the bare model, then the bare model lower-cased.
func Lookup(provider, model string) (Price, bool) {
	t, err := Table()
	if err != nil || model == "" {
		return Price{}, false
	}
	for _, k := range []string{provider + "/" + model, model, strings.ToLower(model)} {
		if p, ok := t[k]; ok {
			return p, true
		}
	}
	return Price{}, false
}

// Cost is the dollars u costs at p: prompt tokens neither read from nor
// written to the cache at the input price, cached ones at the cache-read
// price (the input price when the model has none), cache creation at its
// price (likewise) and completion tokens at the output price.
func (p Price) Cost(u usage.Usage) float64 {
	prompt := u.Prompt - u.CacheCreation // cache creation is billed apart
	cached := min(u.Cached, prompt)
	readPrice := p.CacheReadPerToken
	if readPrice == 0 {
		readPrice = p.InputPerToken
	}
	createPrice := p.CacheCreationPerToken
	if createPrice == 0 {
		createPrice = p.InputPerToken
	}
	text := prompt - cached - u.ImagePromptTokens - u.AudioPromptTokens
	return float64(text)*p.InputPerToken + float64(cached)*readPrice +
		float64(u.CacheCreation)*createPrice + float64(u.Completion-u.ImageCompletionTokens)*p.OutputPerToken +
		float64(u.SearchUnits)*p.InputPerQuery + p.MediaCost(u.Media)
}

// Batch is the price of tokens served through the Batch API: the table's
// batch prices where it has them, else half the price of each token, which
// is how OpenAI and Azure bill batches. Per-second prices do not apply.
func (p Price) Batch() Price {
	b := Price{InputPerToken: p.InputPerToken / 2, OutputPerToken: p.OutputPerToken / 2,
		CacheReadPerToken: p.CacheReadPerToken / 2, CacheCreationPerToken: p.CacheCreationPerToken / 2}
	if p.InputPerTokenBatches > 0 {
		b.InputPerToken = p.InputPerTokenBatches
	}
	if p.OutputPerTokenBatches > 0 {
		b.OutputPerToken = p.OutputPerTokenBatches
	}
	return b
}

// DefaultMaxOutput bounds a reservation for a model whose maximum output is
// unknown and whose request sets no max_tokens.
const DefaultMaxOutput = 4096

// WorstCase is the most a request can cost: every prompt token at the
// highest input-side price and maxTokens (else the model's maximum output,
// else DefaultMaxOutput) at the output price.
func (p Price) WorstCase(promptTokens, maxTokens int64) float64 {
	if maxTokens <= 0 {
		maxTokens = p.MaxOutputTokens
	}
	if maxTokens <= 0 {
		maxTokens = DefaultMaxOutput
	}
	in := max(p.InputPerToken, p.CacheCreationPerToken)
	return float64(promptTokens)*in + float64(maxTokens)*p.OutputPerToken
}

// TimeCost is what d of the upstream's time costs at p's per-second prices
// (LiteLLM charges input_cost_per_second and output_cost_per_second each for
// the whole response time).
func (p Price) TimeCost(d time.Duration) float64 {
	if p.InputPerSecond == 0 && p.OutputPerSecond == 0 {
		return 0
	}
	return (p.InputPerSecond + p.OutputPerSecond) * max(d, 0).Seconds()
}

// OutputsWithin is how many output tokens fit in dollars after a prompt of
// promptTokens, at the worst-case rates of WorstCase (0 when the prompt
// alone does not fit; the model's maximum output when output is free).
func (p Price) OutputsWithin(promptTokens int64, dollars float64) int64 {
	left := dollars - float64(promptTokens)*max(p.InputPerToken, p.CacheCreationPerToken)
	switch {
	case left <= 0:
		return 0
	case p.OutputPerToken <= 0:
		return p.MaxOutputTokens
	}
	return int64(left / p.OutputPerToken)
}

// Derive builds the embedded table from the public price list: every entry
// with at least one numeric price, with only the fields above, sorted.
func Derive(src []byte) ([]byte, error) {
	var raw map[string]map[string]any
	if err := json.Unmarshal(src, &raw); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	num := func(m map[string]any, k string) float64 {
		f, _ := m[k].(float64)
		return f
	}
	out := map[string]Price{}
	for name, m := range raw {
		if name == "sample_spec" {
			continue
		}
		p := Price{
			InputPerToken: num(m, "input_cost_per_token"), OutputPerToken: num(m, "output_cost_per_token"),
			CacheReadPerToken: num(m, "cache_read_input_token_cost"), CacheCreationPerToken: num(m, "cache_creation_input_token_cost"),
			MaxInputTokens: int64(num(m, "max_input_tokens")), MaxOutputTokens: int64(num(m, "max_output_tokens")),
			InputPerTokenBatches: num(m, "input_cost_per_token_batches"), OutputPerTokenBatches: num(m, "output_cost_per_token_batches"),
			InputPerQuery: num(m, "input_cost_per_query"),
		}
		if p.MaxOutputTokens == 0 {
			p.MaxOutputTokens = int64(num(m, "max_tokens"))
		}
		p.Mode, _ = m["mode"].(string)
		p.Provider, _ = m["litellm_provider"].(string)
		p.MediaPrice = deriveMedia(p.Mode, func(k string) float64 { return num(m, k) })
		// A model the list prices at zero on purpose (OpenAI's moderation
		// models, free rerankers) is priced: its calls cost nothing, and
		// are not "unpriced".
		_, zeroPriced := m["input_cost_per_token"].(float64)
		free := zeroPriced && (p.Mode == "moderation" || p.Mode == "rerank")
		if p.InputPerToken == 0 && p.OutputPerToken == 0 && p.InputPerQuery == 0 && p.MediaPrice == (MediaPrice{}) && !free {
			continue
		}
		out[name] = p
	}
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("{\n")
	for i, n := range names {
		k, _ := json.Marshal(n)
		v, _ := json.Marshal(out[n])
		fmt.Fprintf(&b, "%s:%s", k, v)
		if i < len(names)-1 {
			b.WriteString(",")
		}
		b.WriteString("\n")
	}
	b.WriteString("}\n")
	return []byte(b.String()), nil
}
