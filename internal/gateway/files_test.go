package gateway

import (
	"errors"
	"io"
	"math"
	"strings"
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
	u, cost, err := batchCost(tg, strings.NewReader(output))
	if err != nil || u.Prompt != 16 || u.Completion != 7 || u.Cached != 2 {
		t.Fatalf("usage %+v", u)
	}
	// gpt-4o-mini's cache reads cost half its input, and the input
	// override keeps that ratio: 2 of the 16 prompt tokens bill at half.
	want := (14*in + 2*in/2 + 7*out) / 2
	if math.Abs(cost-want) > 1e-15 {
		t.Fatalf("cost %v, want %v", cost, want)
	}
}

// TestBatchCostOfACutOutput: an output that breaks off, or passes the
// bound, is an error: its partial sums are not a batch's cost.
func TestBatchCostOfACutOutput(t *testing.T) {
	tg, err := provider.Build(&config.Deployment{ID: "d", ModelName: "g", Provider: "openai", Model: "gpt-4o-mini",
		APIBase: "http://127.0.0.1:1"}, provider.NewClients())
	if err != nil {
		t.Fatal(err)
	}
	line := `{"custom_id":"a","response":{"status_code":200,"body":{"usage":{"prompt_tokens":10,"completion_tokens":4}}}}` + "\n"
	broken := io.MultiReader(strings.NewReader(line), iotestErr{})
	if _, _, err := batchCost(tg, broken); err == nil {
		t.Fatal("an output cut short was priced")
	}
	big := &capped{r: strings.NewReader(strings.Repeat(line, 3)), left: int64(len(line))}
	if _, _, err := batchCost(tg, big); err == nil {
		t.Fatal("an output past the bound was priced")
	}
	whole := &capped{r: strings.NewReader(line), left: int64(len(line))}
	if u, _, err := batchCost(tg, whole); err != nil || u.Prompt != 10 {
		t.Fatalf("an output at the bound: %+v %v", u, err)
	}
}

// iotestErr is a reader that breaks off.
type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("connection reset") }
