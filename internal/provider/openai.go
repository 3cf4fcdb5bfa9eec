package provider

import "net/url"

// OpenAI and every upstream that speaks its API: the model goes in the body,
// the key in Authorization: Bearer.
func init() {
	openAICompatible := func(t *Target, base *url.URL) error {
		t.root = joinV1(base, "")
		for op, path := range openAIPaths {
			if op == OpRerank && !servesRerank[t.D.Provider] {
				continue // OpenAI's own API has no rerank
			}
			t.urls[op] = joinV1(base, path)
		}
		if t.D.APIKey != "" {
			t.header.Set("Authorization", "Bearer "+t.D.APIKey)
		}
		return nil
	}
	bases := []struct {
		names []string
		base  string
	}{
		{[]string{"openai", "text-completion-openai", "custom_openai"}, "https://api.openai.com/v1"},
		// Self-hosted servers: the operator says where they are.
		{[]string{"hosted_vllm", "vllm", "openai_like", "openai_compatible", "lm_studio", "llamafile", "xinference"}, ""},
		// Ollama and TGI serve the OpenAI API under /v1.
		{[]string{"ollama", "ollama_chat"}, "http://localhost:11434"},
		{[]string{"huggingface"}, "https://router.huggingface.co/v1"},
		{[]string{"groq"}, "https://api.groq.com/openai/v1"},
		{[]string{"mistral"}, "https://api.mistral.ai/v1"},
		{[]string{"deepseek"}, "https://api.deepseek.com/v1"},
		{[]string{"together_ai"}, "https://api.together.xyz/v1"},
		{[]string{"openrouter"}, "https://openrouter.ai/api/v1"},
		{[]string{"fireworks_ai"}, "https://api.fireworks.ai/inference/v1"},
		{[]string{"xai"}, "https://api.x.ai/v1"},
		{[]string{"perplexity"}, "https://api.perplexity.ai"},
		{[]string{"deepinfra"}, "https://api.deepinfra.com/v1/openai"},
	}
	for _, b := range bases {
		register(b.names, dialect{defaultBase: b.base, build: openAICompatible})
	}
}

// servesRerank are the OpenAI-compatible providers that also serve a
// Cohere-style /v1/rerank (vLLM, and the hosted rerank models of Together
// and DeepInfra).
var servesRerank = map[string]bool{
	"hosted_vllm": true, "vllm": true, "openai_like": true, "openai_compatible": true, "xinference": true,
	"together_ai": true, "deepinfra": true,
}
