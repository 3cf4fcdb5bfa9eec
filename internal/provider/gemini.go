package provider

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/tollgate/tollgate/internal/config"
)

// Google's Gemini, on AI Studio (gemini/...: the key in x-goog-api-key) and
// on Vertex AI (vertex_ai/...: an OAuth2 access token from the deployment's
// vertex_credentials, the project and location in the path). Both speak
// generateContent, with the model in the path and a stream asked for by the
// method (streamGenerateContent?alt=sse); chat and Messages requests reach
// them translated (internal/translate/gemini.go). AI Studio's embeddings are
// its batchEmbedContents, translated likewise.
func init() {
	register([]string{"gemini"}, dialect{defaultBase: "https://generativelanguage.googleapis.com/v1beta", build: func(t *Target, base *url.URL) error {
		root := strings.TrimRight(base.String(), "/")
		t.urls[OpGenerateContent] = root + "/models/{model}:generateContent"
		t.urls[OpBatchEmbedContents] = root + "/models/{model}:batchEmbedContents"
		t.modelURL = func(op Op, model string, stream bool) string {
			if op == OpBatchEmbedContents {
				return root + "/models/" + url.PathEscape(model) + ":batchEmbedContents"
			}
			return generateContentURL(root, model, stream)
		}
		if t.D.APIKey != "" {
			t.header.Set("x-goog-api-key", t.D.APIKey)
		}
		return nil
	}})
	register([]string{"vertex_ai", "vertex_ai_beta"}, dialect{defaultBase: vertexDefaultBase, build: buildVertex})
}

// vertexDefaultBase stands for the regional endpoint of the deployment's
// vertex_location; buildVertex replaces it.
const vertexDefaultBase = "https://aiplatform.googleapis.com"

// generateContentURL is root's generateContent URL for model: a stream is
// streamGenerateContent, asked for as server-sent events.
func generateContentURL(root, model string, stream bool) string {
	m := url.PathEscape(model)
	if stream {
		return root + "/models/" + m + ":streamGenerateContent?alt=sse"
	}
	return root + "/models/" + m + ":generateContent"
}

// vertexAnthropicVersion is the anthropic_version a Messages body for an
// Anthropic model on Vertex AI carries (in the body, not a header).
const vertexAnthropicVersion = "vertex-2023-10-16"

// AnthropicVersionInBody is the anthropic_version a Messages body sent to
// this target must carry, in place of its model (the model is in the URL):
// set for Anthropic's models on Vertex AI, else "".
func (t *Target) AnthropicVersionInBody() string { return t.anthropicVersion }

// buildVertex addresses a vertex_ai deployment: its vertex_project and
// vertex_location (us-central1 when unset, as LiteLLM) name the publisher
// path on the location's endpoint (Google's, or Anthropic's for a claude
// model), unless api_base names another host;
// each request carries an access token from vertex_credentials (empty:
// Google's application default credentials). Credentials that cannot be
// read make the deployment unusable (ErrUnusable): it is disabled, with
// the reason, and the rest of the model list is served.
func buildVertex(t *Target, base *url.URL) error {
	var v config.Vertex
	if t.D.Vertex != nil {
		v = *t.D.Vertex
	}
	// LiteLLM's environment variables stand in for unset params.
	v.Project = cmp.Or(v.Project, os.Getenv("VERTEXAI_PROJECT"))
	v.Credentials = cmp.Or(v.Credentials, os.Getenv("VERTEXAI_CREDENTIALS"))
	location := cmp.Or(v.Location, os.Getenv("VERTEXAI_LOCATION"), "us-central1")
	if v.Project == "" {
		return fmt.Errorf("%w: provider vertex_ai needs litellm_params.vertex_project (or VERTEXAI_PROJECT)", ErrUnusable)
	}
	host := base.Scheme + "://" + base.Host
	if t.D.APIBase == "" {
		host = "https://" + location + "-aiplatform.googleapis.com"
		if location == "global" {
			host = vertexDefaultBase
		}
	}
	root := host + "/v1/projects/" + url.PathEscape(v.Project) + "/locations/" + url.PathEscape(location) + "/publishers/"
	if strings.HasPrefix(t.D.Model, "claude") {
		// Anthropic's models on Vertex take the Messages body, at
		// rawPredict (streamRawPredict for a stream).
		root += "anthropic/models/"
		t.urls[OpMessages] = root + "{model}:rawPredict"
		t.modelURL = func(_ Op, model string, stream bool) string {
			if stream {
				return root + url.PathEscape(model) + ":streamRawPredict"
			}
			return root + url.PathEscape(model) + ":rawPredict"
		}
		t.anthropicVersion = vertexAnthropicVersion
	} else {
		root += "google"
		t.urls[OpGenerateContent] = root + "/models/{model}:generateContent"
		t.modelURL = func(_ Op, model string, stream bool) string { return generateContentURL(root, model, stream) }
	}
	ts, err := GoogleTokenSource(context.Background(), v.Credentials)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnusable, err)
	}
	t.authorize = func(req *http.Request, _ []byte) error {
		tok, err := ts.Token()
		if err != nil {
			return fmt.Errorf("vertex ai access token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		return nil
	}
	return nil
}
