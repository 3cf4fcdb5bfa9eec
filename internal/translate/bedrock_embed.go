package translate

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tollgate/tollgate/internal/usage"
)

// Embeddings on Bedrock go through InvokeModel (/model/{modelId}/invoke)
// in the model family's own body: Amazon Titan text embeddings take one
// inputText per call; Cohere's embed models take a list of texts.

// EmbeddingsToBedrock turns an OpenAI embeddings request for the Bedrock
// model id model into its InvokeModel body. Titan takes one text (a list
// of one is accepted) and dimensions (v2); Cohere takes up to its own
// limit of texts, as search documents unless the request names an
// input_type (LiteLLM's extension). Token-id inputs have no Bedrock form.
func EmbeddingsToBedrock(body []byte, model string) ([]byte, error) {
	var in struct {
		Input      json.RawMessage `json:"input"`
		Dimensions *int64          `json:"dimensions"`
		InputType  string          `json:"input_type"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	var texts []string
	var one string
	if json.Unmarshal(in.Input, &one) == nil {
		texts = []string{one}
	} else if err := json.Unmarshal(in.Input, &texts); err != nil || len(texts) == 0 {
		return nil, fmt.Errorf("input must be a string or a non-empty list of strings for a Bedrock embedding model")
	}
	id := model[strings.LastIndexByte(model, '/')+1:] // an ARN's or a profile's model id
	switch {
	case strings.Contains(id, "amazon.titan-embed"):
		if len(texts) != 1 {
			return nil, fmt.Errorf("titan embeddings on Bedrock take one input per request; got %d", len(texts))
		}
		out := map[string]any{"inputText": texts[0]}
		if in.Dimensions != nil {
			out["dimensions"] = *in.Dimensions
		}
		return json.Marshal(out)
	case strings.Contains(id, "cohere.embed"):
		typ := in.InputType
		if typ == "" {
			typ = "search_document"
		}
		return json.Marshal(map[string]any{"texts": texts, "input_type": typ})
	}
	return nil, fmt.Errorf("model %q: Bedrock embeddings are served for Amazon Titan and Cohere embed models", model)
}

// BedrockEmbeddingToOpenAI turns an InvokeModel embeddings answer (Titan's
// embedding and inputTextTokenCount, or Cohere's embeddings, as a list or
// by type) into OpenAI's list of embeddings. Titan reports its tokens;
// Cohere's body carries none, and the usage is then zero (the gateway
// counts the input itself).
func BedrockEmbeddingToOpenAI(body []byte) ([]byte, usage.Usage, error) {
	var in struct {
		Embedding           []float64       `json:"embedding"`
		InputTextTokenCount int64           `json:"inputTextTokenCount"`
		Embeddings          json.RawMessage `json:"embeddings"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, usage.Usage{}, fmt.Errorf("upstream answer: %w", err)
	}
	var vectors [][]float64
	switch {
	case in.Embedding != nil:
		vectors = [][]float64{in.Embedding}
	case len(in.Embeddings) > 0 && in.Embeddings[0] == '[':
		if err := json.Unmarshal(in.Embeddings, &vectors); err != nil {
			return nil, usage.Usage{}, fmt.Errorf("upstream embeddings: %w", err)
		}
	case len(in.Embeddings) > 0:
		var typed struct {
			Float [][]float64 `json:"float"`
		}
		if err := json.Unmarshal(in.Embeddings, &typed); err != nil || typed.Float == nil {
			return nil, usage.Usage{}, fmt.Errorf("upstream embeddings are not floats")
		}
		vectors = typed.Float
	default:
		return nil, usage.Usage{}, fmt.Errorf("upstream answer has no embedding")
	}
	data := make([]any, len(vectors))
	for i, v := range vectors {
		data[i] = map[string]any{"object": "embedding", "index": i, "embedding": v}
	}
	u := usage.Usage{Prompt: in.InputTextTokenCount}
	out, err := json.Marshal(map[string]any{"object": "list", "data": data, "model": "",
		"usage": map[string]int64{"prompt_tokens": u.Prompt, "total_tokens": u.Prompt}})
	return out, u, err
}
