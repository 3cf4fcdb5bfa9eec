package gateway

import (
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/translate"
	"github.com/tollgate/tollgate/internal/usage"
)

// Gemini and Vertex AI deployments speak Google's generateContent: chat
// requests reach them translated, and Messages requests through chat.
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

	// An Anthropic Messages request to a generateContent deployment:
	// Messages to chat to generateContent, and back.
	messagesViaGemini = wire{
		op: provider.OpGenerateContent,
		body: func(req *request, model string, _ bool) ([]byte, error) {
			chat, err := translate.MessagesToChat(req.obj.Body(), model)
			if err != nil {
				return nil, err
			}
			return translate.ChatToGemini(chat)
		},
		response: func(body []byte) ([]byte, usage.Usage, error) {
			chat, u, err := translate.GeminiToCompletion(body, "")
			if err != nil {
				return nil, u, err
			}
			out, _, err := translate.CompletionToMessage(chat)
			return out, u, err
		},
		stream: func(req *request) translate.Stream {
			return translate.Chain(translate.GeminiToChatStream("", true), translate.ChatToMessagesStream(req.model))
		},
		errBody: func(status int, body []byte) []byte {
			return translate.ErrorToAnthropic(status, translate.GeminiErrorToOpenAI(status, body))
		},
		anthropicClient: true,
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
		op: provider.OpEmbeddings,
		body: func(req *request, upstream string, _ bool) ([]byte, error) {
			return translate.EmbeddingsToGemini(req.obj.Body(), upstream)
		},
		response: func(body []byte) ([]byte, usage.Usage, error) { return translate.GeminiToEmbeddings(body, model) },
		errBody:  translate.GeminiErrorToOpenAI,
	}
}
