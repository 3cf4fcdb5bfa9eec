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
		errBody:  translate.GeminiErrorToOpenAI,
	}
)
