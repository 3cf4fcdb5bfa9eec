package gateway

import (
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/translate"
	"github.com/tollgate/tollgate/internal/usage"
)

// cohereWire is how a request for op reaches a Cohere deployment: chat and
// embeddings translated to Cohere's v2 bodies, Messages through chat, and
// rerank as every rerank upstream takes it. Cohere's answers do not name
// their model, so the wire is made for t and names the deployment's.
func cohereWire(op provider.Op, t *provider.Target) (wire, bool) {
	if !t.Serves(op) && op != provider.OpMessages {
		return wire{}, false
	}
	model := ""
	if !t.Wildcard() {
		model = t.D.Model
	}
	toCompletion := func(body []byte) ([]byte, usage.Usage, error) { return translate.CohereToCompletion(body, model) }
	switch op {
	case provider.OpChat:
		return wire{
			op: provider.OpChat,
			body: func(req *request, upstream string, _ bool) ([]byte, error) {
				return translate.ChatToCohere(req.obj.Body(), upstream)
			},
			response: toCompletion,
			stream:   func(req *request) translate.Stream { return translate.CohereToChatStream(model, req.clientUsage) },
			errBody:  translate.CohereErrorToOpenAI,
		}, true
	case provider.OpMessages:
		return wire{
			op: provider.OpChat,
			body: func(req *request, upstream string, _ bool) ([]byte, error) {
				chat, err := translate.MessagesToChat(req.obj.Body(), upstream)
				if err != nil {
					return nil, err
				}
				return translate.ChatToCohere(chat, upstream)
			},
			response: func(body []byte) ([]byte, usage.Usage, error) {
				chat, u, err := toCompletion(body)
				if err != nil {
					return nil, u, err
				}
				out, _, err := translate.CompletionToMessage(chat)
				return out, u, err
			},
			stream: func(req *request) translate.Stream {
				return translate.Chain(translate.CohereToChatStream(model, true), translate.ChatToMessagesStream(req.model))
			},
			errBody: func(status int, body []byte) []byte {
				return translate.ErrorToAnthropic(status, translate.CohereErrorToOpenAI(status, body))
			},
			anthropicClient: true,
		}, true
	case provider.OpEmbeddings:
		return wire{
			op: provider.OpEmbeddings,
			body: func(req *request, upstream string, _ bool) ([]byte, error) {
				return translate.EmbeddingsToCohere(req.obj.Body(), upstream)
			},
			response: func(body []byte) ([]byte, usage.Usage, error) { return translate.CohereToEmbeddings(body, model) },
			errBody:  translate.CohereErrorToOpenAI,
		}, true
	case provider.OpRerank:
		return rerankWire, true
	}
	return wire{}, false
}
