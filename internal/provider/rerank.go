package provider

import "net/url"

// Rerank-only upstreams, until their providers are served in full: Cohere's
// /v2/rerank and Jina AI's /v1/rerank (with its OpenAI-style embeddings),
// both with the key in Authorization: Bearer. A deployment of one of them
// that is asked for chat answers that it does not serve chat requests.
func init() {
	bearer := func(t *Target) {
		if t.D.APIKey != "" {
			t.header.Set("Authorization", "Bearer "+t.D.APIKey)
		}
	}
	register([]string{"cohere"}, dialect{defaultBase: "https://api.cohere.com", build: func(t *Target, base *url.URL) error {
		u := *base
		u.Path += "/v2/rerank"
		t.urls[OpRerank] = u.String()
		bearer(t)
		return nil
	}})
	register([]string{"jina_ai"}, dialect{defaultBase: "https://api.jina.ai/v1", build: func(t *Target, base *url.URL) error {
		t.urls[OpRerank] = joinV1(base, "/rerank")
		t.urls[OpEmbeddings] = joinV1(base, "/embeddings")
		t.root = joinV1(base, "")
		bearer(t)
		return nil
	}})
}
