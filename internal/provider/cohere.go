package provider

import "net/url"

// Cohere (cohere/..., and LiteLLM's cohere_chat/...): its v2 API, with the
// key in Authorization: Bearer. Chat (/v2/chat) and embeddings (/v2/embed)
// speak Cohere's own bodies (OpCohereChat, OpCohereEmbed), which chat and
// embeddings requests reach translated; rerank (/v2/rerank) is the
// Cohere-style rerank every rerank upstream speaks.
func init() {
	register([]string{"cohere", "cohere_chat"}, dialect{defaultBase: "https://api.cohere.com", build: func(t *Target, base *url.URL) error {
		for op, p := range map[Op]string{OpCohereChat: "/v2/chat", OpCohereEmbed: "/v2/embed", OpRerank: "/v2/rerank"} {
			u := *base
			u.Path += p
			t.urls[op] = u.String()
		}
		bearer(t)
		return nil
	}})
}

// bearer sends the deployment's key in Authorization: Bearer.
func bearer(t *Target) {
	if t.D.APIKey != "" {
		t.header.Set("Authorization", "Bearer "+t.D.APIKey)
	}
}
