package provider

import "net/url"

// Jina AI, served for its rerank (/v1/rerank) and OpenAI-style embeddings,
// with the key in Authorization: Bearer. A deployment of it that is asked
// for chat answers that it does not serve chat requests.
func init() {
	register([]string{"jina_ai"}, dialect{defaultBase: "https://api.jina.ai/v1", build: func(t *Target, base *url.URL) error {
		t.urls[OpRerank] = joinV1(base, "/rerank")
		t.urls[OpEmbeddings] = joinV1(base, "/embeddings")
		t.root = joinV1(base, "")
		bearer(t)
		return nil
	}})
}
