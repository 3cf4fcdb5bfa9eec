package provider

import (
	"errors"
	"net/url"
)

// Azure OpenAI: the deployment name is in the path, the API version in the
// query and the key in the api-key header.
func init() {
	build := func(t *Target, base *url.URL) error {
		if t.wildcard {
			return errors.New("provider azure needs a deployment name: model: azure/DEPLOYMENT")
		}
		version := t.D.APIVersion
		if version == "" {
			version = "2024-10-21"
		}
		q := url.Values{"api-version": {version}}.Encode()
		prefix := *base
		prefix.Path += "/openai/deployments/" + url.PathEscape(t.D.Model)
		for op, path := range map[Op]string{OpChat: "/chat/completions", OpCompletions: "/completions", OpEmbeddings: "/embeddings"} {
			u := prefix
			u.Path += path
			u.RawQuery = q
			t.urls[op] = u.String()
		}
		if t.D.APIKey != "" {
			t.header.Set("api-key", t.D.APIKey)
		}
		return nil
	}
	register([]string{"azure", "azure_text"}, dialect{build: build})
}
