package gateway

import (
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/translate"
	"github.com/tollgate/tollgate/internal/usage"
)

// Bedrock deployments speak the Converse API: chat requests reach them
// translated (and Messages and Responses requests through chat:
// messagesThrough, responsesThrough). ConverseStream answers in AWS's
// binary event stream, which awsEventsAsSSE turns into the SSE text the
// gateway's stream relay reads. Embeddings go to InvokeModel.
var (
	// An OpenAI chat request to a Bedrock deployment.
	chatViaConverse = wire{
		op: provider.OpConverse,
		body: func(req *request, model string, _ bool) ([]byte, error) {
			// Without max_tokens the budget hold was sized on the model's
			// maximum output (outputBound): Bedrock is held to it.
			return translate.ChatToConverse(req.obj.Body(), provider.BedrockMaxOutput(model))
		},
		response: func(body []byte) ([]byte, usage.Usage, error) { return translate.ConverseToCompletion(body, "") },
		stream:   func(req *request) translate.Stream { return translate.ConverseToChatStream(req.model, req.clientUsage) },
		errBody:  bedrockError,
	}

	// An OpenAI embeddings request to a Bedrock deployment: InvokeModel in
	// the model family's body (Titan or Cohere).
	embeddingsViaInvoke = wire{
		op: provider.OpBedrockEmbed,
		body: func(req *request, model string, _ bool) ([]byte, error) {
			return translate.EmbeddingsToBedrock(req.obj.Body(), provider.BedrockModelID(model))
		},
		response: translate.BedrockEmbeddingToOpenAI,
		errBody:  bedrockError,
	}
)

// namedModel is a translated answer that names no model (Converse's and
// InvokeModel's answers carry none) with the model the upstream was asked
// for, as OpenAI's and Anthropic's answers name theirs.
func namedModel(data []byte, model string) []byte {
	var o jsonbody.Object
	if model == "" || o.Reset(data) != nil || string(o.Get("model")) != `""` {
		return data
	}
	return o.With("model", quote(model))
}

// bedrockError is a Bedrock error in OpenAI's shape, named by its
// x-amzn-ErrorType header.
func bedrockError(status int, h http.Header, body []byte) []byte {
	return translate.BedrockErrorToOpenAI(status, h.Get("X-Amzn-Errortype"), body)
}

// isAWSEventStream reports whether an answer is AWS's binary event stream
// (ConverseStream's).
func isAWSEventStream(h http.Header) bool {
	return strings.HasPrefix(contentType(h), "application/vnd.amazon.eventstream")
}

// awsEventsAsSSE makes resp's event-stream body read as server-sent
// events, so that the one stream relay (streamEvents) serves it: each
// frame, its checksums verified by AWS's decoder, becomes "event: <name>"
// and "data: <payload>", the name its :event-type header, or for an
// exception its :exception-type (an error frame's :error-code).
func awsEventsAsSSE(resp *http.Response) {
	resp.Body = &awsEvents{body: resp.Body, dec: eventstream.NewDecoder()}
	resp.Header.Set("Content-Type", "text/event-stream")
}

type awsEvents struct {
	body    io.ReadCloser
	dec     *eventstream.Decoder
	payload []byte
	pending []byte // SSE text not yet read
	err     error
}

func (a *awsEvents) Read(p []byte) (int, error) {
	for len(a.pending) == 0 {
		if a.err != nil {
			return 0, a.err
		}
		msg, err := a.dec.Decode(a.body, a.payload[:0])
		if err != nil {
			if !errors.Is(err, io.EOF) {
				err = errors.Join(errors.New("aws event stream"), err)
			}
			a.err = err
			continue
		}
		a.payload = msg.Payload
		a.pending = appendSSE(a.pending[:0], frameName(msg.Headers), msg)
	}
	n := copy(p, a.pending)
	a.pending = a.pending[n:]
	return n, nil
}

func (a *awsEvents) Close() error { return a.body.Close() }

// frameName is what a frame is: its event, exception or error name.
func frameName(h eventstream.Headers) string {
	str := func(name string) string {
		if v := h.Get(name); v != nil {
			return v.String()
		}
		return ""
	}
	switch str(":message-type") {
	case "exception":
		return str(":exception-type")
	case "error":
		return str(":error-code")
	}
	return str(":event-type")
}

// appendSSE appends msg as one SSE event named name; an error frame,
// whose message is in a header, gets it as its payload.
func appendSSE(out []byte, name string, msg eventstream.Message) []byte {
	payload := msg.Payload
	if v := msg.Headers.Get(":error-message"); v != nil && len(payload) == 0 {
		payload = []byte(`{"message":` + string(quote(v.String())) + `}`)
	}
	out = append(out, "event: "...)
	out = append(out, strings.Map(dropNewline, name)...)
	out = append(out, "\ndata: "...)
	out = append(out, strings.Map(dropNewline, string(payload))...)
	return append(out, "\n\n"...)
}

// dropNewline keeps a frame's text on one SSE line: JSON has no raw
// newline that matters.
func dropNewline(r rune) rune {
	if r == '\n' || r == '\r' {
		return ' '
	}
	return r
}
