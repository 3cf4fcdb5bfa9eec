package gateway

import (
	"net/http"

	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/translate"
	"github.com/tollgate/tollgate/internal/usage"
)

// wire is how one attempt talks to its deployment: which upstream operation
// it calls, and how the upstream's answer (body, stream, errors) becomes the
// client's. The zero wire passes an OpenAI exchange through untouched.
type wire struct {
	op provider.Op // the upstream operation
	// body builds the upstream body from the client's, for model.
	body func(req *request, model string, askUsage bool) ([]byte, error)
	// response converts a 2xx JSON answer and reports its usage; nil keeps
	// the answer and reads OpenAI usage from it.
	response func(body []byte) ([]byte, usage.Usage, error)
	// stream makes the per-request event translator; nil passes OpenAI
	// events through.
	stream func(req *request) translate.Stream
	// errBody converts an upstream error body (with its headers, where an
	// upstream names the error: Bedrock's x-amzn-ErrorType); nil keeps it.
	errBody func(status int, h http.Header, body []byte) []byte
	// anthropicClient: the client speaks Anthropic's Messages API (errors
	// the gateway writes into its stream take Anthropic's shape).
	anthropicClient bool
}

func passthroughBody(req *request, model string, askUsage bool) ([]byte, error) {
	return req.upstreamBody(model, askUsage), nil
}

var (
	openAIWire = wire{op: provider.OpChat, body: passthroughBody}

	// An OpenAI chat request to a deployment that speaks only Anthropic's
	// Messages API (anthropic/...).
	chatViaMessages = wire{
		op: provider.OpMessages,
		body: func(req *request, model string, _ bool) ([]byte, error) {
			return translate.ChatToMessages(req.obj.Body(), model)
		},
		response: translate.MessageToCompletion,
		stream:   func(req *request) translate.Stream { return translate.MessagesToChatStream(req.clientUsage) },
		errBody:  bodyOnly(translate.ErrorToOpenAI),
	}

	// An Anthropic Messages request to a deployment that speaks it.
	messagesNative = wire{
		op: provider.OpMessages,
		body: func(req *request, model string, _ bool) ([]byte, error) {
			return req.obj.With("model", quote(model)), nil
		},
		response: func(body []byte) ([]byte, usage.Usage, error) {
			u, _ := translate.MessageUsage(body)
			return body, u, nil
		},
		stream:          func(*request) translate.Stream { return translate.MessagesPassthrough() },
		errBody:         bodyOnly(translate.ErrorToAnthropic),
		anthropicClient: true,
	}

	// An Anthropic Messages request to an OpenAI-compatible deployment.
	messagesViaChat = wire{
		op: provider.OpChat,
		body: func(req *request, model string, askUsage bool) ([]byte, error) {
			b, err := translate.MessagesToChat(req.obj.Body(), model)
			if err != nil || !askUsage {
				return b, err
			}
			var r request
			if err := r.obj.Reset(b); err != nil {
				return nil, err
			}
			return r.upstreamBody(model, true), nil // ask for the usage chunk
		},
		response:        translate.CompletionToMessage,
		stream:          func(req *request) translate.Stream { return translate.ChatToMessagesStream(req.model) },
		errBody:         bodyOnly(translate.ErrorToAnthropic),
		anthropicClient: true,
	}
)

// messagesThrough translates an Anthropic Messages request through chat to
// a deployment that a chat request reaches by cw (Gemini's generateContent,
// ...): Messages to chat, then cw's translation, and back.
func messagesThrough(cw wire) wire {
	w := wire{
		op: cw.op,
		body: func(req *request, model string, askUsage bool) ([]byte, error) {
			chat, err := translate.MessagesToChat(req.obj.Body(), model)
			if err != nil {
				return nil, err
			}
			r := &request{model: req.model, stream: req.stream, clientUsage: true}
			if err := r.obj.Reset(chat); err != nil {
				return nil, err
			}
			return cw.body(r, model, askUsage)
		},
		response: func(body []byte) ([]byte, usage.Usage, error) {
			chat, u, err := cw.response(body)
			if err != nil {
				return nil, u, err
			}
			out, _, err := translate.CompletionToMessage(chat)
			return out, u, err
		},
		stream: func(req *request) translate.Stream {
			return translate.Chain(cw.stream(&request{model: req.model, stream: true, clientUsage: true}), translate.ChatToMessagesStream(req.model))
		},
		errBody: func(status int, h http.Header, body []byte) []byte {
			if cw.errBody != nil {
				body = cw.errBody(status, h, body)
			}
			return translate.ErrorToAnthropic(status, body)
		},
		anthropicClient: true,
	}
	return w
}

// wireFor picks how a request for op reaches t, or reports that t cannot
// serve it.
func wireFor(op provider.Op, t *provider.Target) (wire, bool) {
	switch op {
	case provider.OpChat:
		if t.Serves(provider.OpChat) {
			return openAIWire, true
		}
		if t.Serves(provider.OpMessages) {
			return onVertex(chatViaMessages, t), true
		}
		if t.Serves(provider.OpGenerateContent) {
			return chatViaGemini, true
		}
		if t.Serves(provider.OpConverse) {
			return chatViaConverse, true
		}
		if t.Serves(provider.OpCohereChat) {
			return chatViaCohere(t), true
		}
	case provider.OpEmbeddings:
		if t.Serves(provider.OpEmbeddings) {
			return wire{op: op, body: passthroughBody}, true
		}
		if t.Serves(provider.OpBatchEmbedContents) {
			return geminiEmbeddings(t), true
		}
		if t.Serves(provider.OpCohereEmbed) {
			return embeddingsViaCohere(t), true
		}
		if t.Serves(provider.OpBedrockEmbed) {
			return embeddingsViaInvoke, true
		}
	case provider.OpMessages:
		if t.Serves(provider.OpMessages) {
			return onVertex(messagesNative, t), true
		}
		if t.Serves(provider.OpChat) {
			return messagesViaChat, true
		}
		// A deployment chat reaches translated: through chat.
		if cw, ok := wireFor(provider.OpChat, t); ok {
			return messagesThrough(cw), true
		}
	case provider.OpRerank:
		if t.Serves(op) {
			return rerankWire, true
		}
	default:
		if t.Serves(op) {
			return wire{op: op, body: passthroughBody}, true
		}
	}
	return wire{}, false
}

// translatedUsage is the usage a translating wire reported, as the gateway
// books it: without the reasoning count, which the translated paths have
// never checked against the completion (clamp would flag it).
func translatedUsage(u usage.Usage) usage.Usage {
	u.Reasoning = 0
	return u
}

// bodyOnly is an error converter that reads the body alone, as an errBody.
func bodyOnly(f func(status int, body []byte) []byte) func(int, http.Header, []byte) []byte {
	return func(status int, _ http.Header, body []byte) []byte { return f(status, body) }
}
