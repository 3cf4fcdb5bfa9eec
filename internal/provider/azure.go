package provider

import (
	"errors"
	"net/url"
	"strings"
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
		for op, path := range openAIPaths {
			if op == OpRerank || op == OpResponses {
				continue
			}
			u := prefix
			u.Path += path
			u.RawQuery = q
			t.urls[op] = u.String()
		}
		root := *base
		root.Path += "/openai"
		t.root, t.rootQuery = root.String(), q
		// The Responses API is not under the deployment: the deployment is
		// the body's model, and it needs a preview API version.
		rv := version
		if !strings.Contains(rv, "preview") {
			rv = "2025-04-01-preview"
		}
		u := *base
		u.Path += "/openai/responses"
		u.RawQuery = url.Values{"api-version": {rv}}.Encode()
		t.urls[OpResponses] = u.String()
		if t.D.APIKey != "" {
			t.header.Set("api-key", t.D.APIKey)
		}
		return nil
	}
	register([]string{"azure", "azure_text"}, dialect{build: build})
}
