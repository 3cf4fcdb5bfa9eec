package gateway

import (
	"math"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
)

// TestBatchCost: each output line's usage, in the chat or the Responses
// shape, is priced at half the deployment's token prices; lines without
// usage, lines that are not JSON and negative counts add nothing.
func TestBatchCost(t *testing.T) {
	in, out := 0.00001, 0.0001
	tg, err := provider.Build(&config.Deployment{ID: "d", ModelName: "g", Provider: "openai", Model: "gpt-4o-mini",
		APIBase: "http://127.0.0.1:1", InputCostPerToken: &in, OutputCostPerToken: &out}, provider.NewClients())
	if err != nil {
		t.Fatal(err)
	}
	output := `{"custom_id":"a","response":{"status_code":200,"body":{"model":"gpt-4o-mini","usage":{"prompt_tokens":10,"completion_tokens":4,"total_tokens":999}}}}
not json
{"custom_id":"b","response":{"status_code":200,"body":{"usage":{"input_tokens":6,"output_tokens":2,"input_tokens_details":{"cached_tokens":2}}}}}
{"custom_id":"c","response":{"status_code":400,"body":{"error":{"message":"bad"}}}}
{"custom_id":"d","response":{"status_code":200,"body":{"usage":{"prompt_tokens":-5,"completion_tokens":1}}}}
`
	u, cost := batchCost(tg, []byte(output))
	if u.Prompt != 16 || u.Completion != 7 || u.Cached != 2 {
		t.Fatalf("usage %+v", u)
	}
	// gpt-4o-mini's cache reads cost half its input, and the input
	// override keeps that ratio: 2 of the 16 prompt tokens bill at half.
	want := (14*in + 2*in/2 + 7*out) / 2
	if math.Abs(cost-want) > 1e-15 {
		t.Fatalf("cost %v, want %v", cost, want)
	}
}
