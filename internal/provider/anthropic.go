package provider

import "net/url"

// AnthropicVersion is the anthropic-version header sent upstream.
const AnthropicVersion = "2023-06-01"

// Anthropic speaks only its Messages API: the key goes in x-api-key and
// every request names the API version. OpenAI chat requests reach it through
// translation (internal/translate).
func init() {
	register([]string{"anthropic"}, dialect{defaultBase: "https://api.anthropic.com", build: func(t *Target, base *url.URL) error {
		t.urls[OpMessages] = joinV1(base, "/messages")
		t.root = joinV1(base, "")
		if t.D.APIKey != "" {
			t.header.Set("x-api-key", t.D.APIKey)
		}
		t.header.Set("anthropic-version", AnthropicVersion)
		return nil
	}})
}
