package gateway

import (
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/translate"
	"github.com/tollgate/tollgate/internal/usage"
)

// Gemini and Vertex AI deployments speak Google's generateContent: chat
// requests reach them translated (and Messages and Responses requests
// through chat: messagesThrough, responsesThrough).
var (
	// An OpenAI chat request to a generateContent deployment.
	chatViaGemini = wire{
		op: provider.OpGenerateContent,
		body: func(req *request, _ string, _ bool) ([]byte, error) {
			return translate.ChatToGemini(req.obj.Body())
		},
		response: func(body []byte) ([]byte, usage.Usage, error) { return translate.GeminiToCompletion(body, "") },
		stream:   func(req *request) translate.Stream { return translate.GeminiToChatStream("", req.clientUsage) },
		errBody:  bodyOnly(translate.GeminiErrorToOpenAI),
	}
)

// geminiEmbeddings is an OpenAI embeddings request to a Gemini deployment,
// through batchEmbedContents. Its answer names no model (the wire is made
// for t and names the deployment's) and, on the Gemini API, no usage: the
// gateway then counts the input itself.
func geminiEmbeddings(t *provider.Target) wire {
	model := ""
	if !t.Wildcard() {
		model = t.D.Model
	}
	return wire{
		op: provider.OpBatchEmbedContents,
		body: func(req *request, upstream string, _ bool) ([]byte, error) {
			return translate.EmbeddingsToGemini(req.obj.Body(), upstream)
		},
		response: func(body []byte) ([]byte, usage.Usage, error) { return translate.GeminiToEmbeddings(body, model) },
		errBody:  bodyOnly(translate.GeminiErrorToOpenAI),
	}
}
