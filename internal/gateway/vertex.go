package gateway

import (
	"encoding/json"

	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/translate"
)

// onVertex adapts a wire whose upstream body is Anthropic's Messages to an
// Anthropic model on Vertex AI (rawPredict), which names the model in the
// URL and takes anthropic_version in the body: the body loses its model and
// gains the version. Vertex's own refusals (quota, auth) come in Google's
// error shape, which a chat client gets in OpenAI's (ErrorToAnthropic
// already reads it for a Messages client). Other targets keep w.
func onVertex(w wire, t *provider.Target) wire {
	version := t.AnthropicVersionInBody()
	if version == "" {
		return w
	}
	if !w.anthropicClient {
		w.errBody = bodyOnly(translate.GeminiErrorToOpenAI) // Google's errors, else Anthropic's
	}
	inner := w.body
	w.body = func(req *request, model string, askUsage bool) ([]byte, error) {
		b, err := inner(req, model, askUsage)
		if err != nil {
			return nil, err
		}
		var o map[string]json.RawMessage
		if err := json.Unmarshal(b, &o); err != nil {
			return nil, err
		}
		delete(o, "model")
		o["anthropic_version"], _ = json.Marshal(version)
		return json.Marshal(o)
	}
	return w
}
