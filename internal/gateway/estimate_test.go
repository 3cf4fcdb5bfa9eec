package gateway

import (
	"strconv"
	"testing"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/pricing"
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
	m := &Meter{}
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
