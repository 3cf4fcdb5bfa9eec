package provider

import "net/url"

// Cohere (cohere/..., and LiteLLM's cohere_chat/...): its v2 API, with the
// key in Authorization: Bearer. Chat (/v2/chat) and embeddings (/v2/embed)
// speak Cohere's own bodies, which the gateway translates (it picks the
// wire by IsCohere); rerank (/v2/rerank) is the Cohere-style rerank every
// rerank upstream speaks.
func init() {
	register([]string{"cohere", "cohere_chat"}, dialect{defaultBase: "https://api.cohere.com", build: func(t *Target, base *url.URL) error {
		for op, p := range map[Op]string{OpChat: "/v2/chat", OpEmbeddings: "/v2/embed", OpRerank: "/v2/rerank"} {
			u := *base
			u.Path += p
			t.urls[op] = u.String()
		}
		bearer(t)
		return nil
	}})
}

// IsCohere reports whether the target speaks Cohere's own chat and embed
// bodies rather than OpenAI's.
func (t *Target) IsCohere() bool { return t.D.Provider == "cohere" || t.D.Provider == "cohere_chat" }

// bearer sends the deployment's key in Authorization: Bearer.
func bearer(t *Target) {
	if t.D.APIKey != "" {
		t.header.Set("Authorization", "Bearer "+t.D.APIKey)
	}
}
