package guardrail

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

// benchPrompt is about size bytes of ordinary prose with a few findings
// (an e-mail, a card, a key) spread through it, as a prompt.
func benchPrompt(size int) string {
	para := "The quarterly report covers revenue, churn and hiring plans for the next two quarters; please summarise it for the board. "
	var b strings.Builder
	for b.Len() < size {
		b.WriteString(para)
		if b.Len()%4096 < len(para) {
			b.WriteString("Contact ops@example.com or card 4111 1111 1111 1111. ")
		}
	}
	return b.String()[:size]
}

// BenchmarkBuiltins is the CPU cost of each built-in guardrail on one
// prompt of 2 KB and 20 KB (ns/op ÷ KB is the per-KB figure of
// docs/guardrails.md); "default" is the set a gateway with guardrails on
// typically runs: PII masking, secrets, prompt injection, input limits.
// On a loaded machine, count instructions instead: run it under valgrind's
// callgrind at two fixed -test.benchtime Nx and divide the difference
// (docs/guardrails.md, "Instruction counts").
func BenchmarkBuiltins(b *testing.B) {
	s := build(b, `
  - guardrail_name: pii
    litellm_params: {guardrail: litellm_pii, mode: pre_call}
  - guardrail_name: secrets
    litellm_params: {guardrail: hide-secrets, mode: pre_call}
  - guardrail_name: injection
    litellm_params: {guardrail: detect_prompt_injection, mode: pre_call}
  - guardrail_name: filter
    litellm_params:
      guardrail: litellm_content_filter
      mode: pre_call
      patterns: [{pattern_type: prebuilt, pattern_name: email, action: MASK}, {pattern_type: regex, pattern: 'PROJECT-\d{6}', name: code, action: BLOCK}]
      blocked_words: [{keyword: confidential, action: BLOCK}, {keyword: apollo, action: MASK}]
  - guardrail_name: limits
    litellm_params: {guardrail: tollgate_input_limits, mode: pre_call, max_input_bytes: 1000000, max_input_tokens: 100000}
`)
	sets := []struct {
		name  string
		names []string
	}{
		{"pii", []string{"pii"}}, {"secrets", []string{"secrets"}}, {"injection", []string{"injection"}},
		{"content_filter", []string{"filter"}}, {"input_limits", []string{"limits"}},
		{"default", []string{"pii", "secrets", "injection", "limits"}},
	}
	for _, size := range []int{2 << 10, 20 << 10} {
		prompt := benchPrompt(size)
		body := []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":` + string(Quote(prompt)) + `}]}`)
		for _, set := range sets {
			gs, err := s.Select(set.names)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(set.name+"/"+sizeName(size), func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					spans := TextsShared(body)
					in := &Input{Texts: make([]string, len(spans)), Model: "gpt-4o"}
					for i, sp := range spans {
						in.Texts[i] = sp.Text
					}
					r := Run(context.Background(), gs, PreCall, in)
					if r.Texts != nil {
						_ = RewriteEdits(body, spans, r.Texts, r.Edits)
					}
				}
			})
		}
	}
}

func sizeName(n int) string {
	if n >= 1<<10 {
		return strconv.Itoa(n>>10) + "KB"
	}
	return "small"
}

// BenchmarkInjectionScan compares the prompt-injection scan (eight bytes
// a step) with the byte-by-byte scan it replaced, in one process, on
// prose with no injection (the common case).
func BenchmarkInjectionScan(b *testing.B) {
	s := benchPrompt(20 << 10)
	for _, tt := range []struct {
		name string
		scan func(string) int
	}{{"words8", countInjections}, {"bytes", countInjectionsByByte}} {
		b.Run(tt.name+"/20KB", func(b *testing.B) {
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				tt.scan(s)
			}
		})
	}
}
