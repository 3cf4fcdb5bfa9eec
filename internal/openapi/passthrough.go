package openapi

// passThroughOps are the provider pass-through routes: any method, any
// sub-path ({rest} stands for the rest of the path, slashes included),
// forwarded to the provider's native API with the gateway's credentials.
func passThroughOps() []op {
	providers := []struct{ name, summary string }{
		{"openai", "OpenAI's API (api.openai.com/v1/{rest}; a {rest} without v1/ gets it)"},
		{"anthropic", "Anthropic's API (api.anthropic.com/{rest}); the key may come as x-api-key"},
		{"gemini", "Google's Gemini API (generativelanguage.googleapis.com/{rest}); the key may come as x-goog-api-key or ?key="},
		{"cohere", "Cohere's API (api.cohere.com/{rest})"},
		{"vertex_ai", "Vertex AI: not served yet (501: requests need Google OAuth2)"},
		{"bedrock", "Bedrock's runtime API (bedrock-runtime.{region}.amazonaws.com/{rest}), signed with AWS SigV4"},
	}
	rest := obj{"name": "rest", "in": "path", "required": true, "schema": obj{"type": "string"},
		"description": "the provider's own path, passed on as sent, with the query"}
	var ops []op
	for _, p := range providers {
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			ops = append(ops, op{method: m, path: "/" + p.name + "/{rest}", tag: "pass-through",
				summary: "Pass-through to " + p.summary + ", with the gateway's credentials; any valid virtual key may call it, under its model access, rate limits and budgets, and the call is charged from the provider's usage fields",
				params:  []obj{rest}, ok: jsonResp("the provider's answer, as it sent it (server-sent events when it streams)", anyObj), stream: true})
		}
	}
	return ops
}
