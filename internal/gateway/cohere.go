package gateway

import (
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/translate"
	"github.com/tollgate/tollgate/internal/usage"
)

// Cohere deployments speak Cohere's v2 chat and embed: chat and embeddings
// requests reach them translated (Messages and Responses requests through
// chat: messagesThrough, responsesThrough). Cohere's answers do not name
// their model, so the wires are made for t and name the deployment's.

// cohereModel is the model a Cohere answer is said to come from: the
// deployment's, or none on a wildcard route.
func cohereModel(t *provider.Target) string {
	if t.Wildcard() {
		return ""
	}
	return t.D.Model
}

// chatViaCohere is an OpenAI chat request to a Cohere deployment.
func chatViaCohere(t *provider.Target) wire {
	model := cohereModel(t)
	return wire{
		op: provider.OpCohereChat,
		body: func(req *request, upstream string, _ bool) ([]byte, error) {
			return translate.ChatToCohere(req.obj.Body(), upstream)
		},
		response: func(body []byte) ([]byte, usage.Usage, error) { return translate.CohereToCompletion(body, model) },
		stream:   func(req *request) translate.Stream { return translate.CohereToChatStream(model, req.clientUsage) },
		errBody:  bodyOnly(translate.CohereErrorToOpenAI),
	}
}

// embeddingsViaCohere is an OpenAI embeddings request to a Cohere
// deployment.
func embeddingsViaCohere(t *provider.Target) wire {
	model := cohereModel(t)
	return wire{
		op: provider.OpCohereEmbed,
		body: func(req *request, upstream string, _ bool) ([]byte, error) {
			return translate.EmbeddingsToCohere(req.obj.Body(), upstream)
		},
		response: func(body []byte) ([]byte, usage.Usage, error) { return translate.CohereToEmbeddings(body, model) },
		errBody:  bodyOnly(translate.CohereErrorToOpenAI),
	}
}
