package translate

import (
	"encoding/json"
	"fmt"

	"github.com/tollgate/tollgate/internal/usage"
)

// Embeddings for upstreams that do not speak OpenAI's /embeddings: Cohere's
// v2 embed and Gemini's batchEmbedContents. Both take a list of texts and
// answer a list of float vectors in the same order.

// embedInputs is an OpenAI embeddings request's input as texts: a string
// or a list of strings (token arrays cannot be sent to an upstream with its
// own tokenizer).
func embedInputs(body []byte) (in struct {
	Input     json.RawMessage `json:"input"`
	InputType string          `json:"input_type"`
	Dims      *int64          `json:"dimensions"`
}, texts []string, err error) {
	if err = json.Unmarshal(body, &in); err != nil {
		return in, nil, fmt.Errorf("request: %w", err)
	}
	var one string
	if json.Unmarshal(in.Input, &one) == nil {
		return in, []string{one}, nil
	}
	if json.Unmarshal(in.Input, &texts) != nil || len(texts) == 0 {
		return in, nil, fmt.Errorf("input must be a string or a non-empty list of strings")
	}
	return in, texts, nil
}

// EmbeddingsToCohere turns an OpenAI embeddings request into a Cohere v2
// embed request for model: the texts as search documents (as LiteLLM
// sends them, unless the request names its input_type), float vectors.
func EmbeddingsToCohere(body []byte, model string) ([]byte, error) {
	in, texts, err := embedInputs(body)
	if err != nil {
		return nil, err
	}
	it := in.InputType
	if it == "" {
		it = "search_document"
	}
	out := map[string]any{"model": model, "texts": texts, "input_type": it, "embedding_types": []string{"float"}}
	if in.Dims != nil {
		out["output_dimension"] = *in.Dims
	}
	return json.Marshal(out)
}

// CohereToEmbeddings turns a Cohere v2 embed answer (embeddings.float, and
// meta.billed_units.input_tokens) into OpenAI's embeddings list for model.
func CohereToEmbeddings(body []byte, model string) ([]byte, usage.Usage, error) {
	var in struct {
		Embeddings struct {
			Float [][]float64 `json:"float"`
		} `json:"embeddings"`
		Meta struct {
			BilledUnits struct {
				InputTokens int64 `json:"input_tokens"`
			} `json:"billed_units"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, usage.Usage{}, fmt.Errorf("upstream answer: %w", err)
	}
	u := usage.Usage{Prompt: in.Meta.BilledUnits.InputTokens}
	b, err := embeddingList(in.Embeddings.Float, model, u)
	return b, u, err
}

// embeddingList is OpenAI's embeddings answer holding vectors.
func embeddingList(vectors [][]float64, model string, u usage.Usage) ([]byte, error) {
	data := make([]any, len(vectors))
	for i, v := range vectors {
		data[i] = map[string]any{"object": "embedding", "index": i, "embedding": v}
	}
	return json.Marshal(map[string]any{"object": "list", "data": data, "model": model,
		"usage": map[string]int64{"prompt_tokens": u.Prompt, "total_tokens": u.Prompt}})
}

// EmbeddingsToGemini turns an OpenAI embeddings request into Gemini's
// batchEmbedContents request for model: one request per text, each naming
// the model, dimensions as outputDimensionality.
func EmbeddingsToGemini(body []byte, model string) ([]byte, error) {
	in, texts, err := embedInputs(body)
	if err != nil {
		return nil, err
	}
	type part struct {
		Text string `json:"text"`
	}
	type one struct {
		Model   string `json:"model"`
		Content struct {
			Parts []part `json:"parts"`
		} `json:"content"`
		OutputDimensionality *int64 `json:"outputDimensionality,omitempty"`
	}
	reqs := make([]one, len(texts))
	for i, t := range texts {
		reqs[i].Model = "models/" + model
		reqs[i].Content.Parts = []part{{Text: t}}
		reqs[i].OutputDimensionality = in.Dims
	}
	return json.Marshal(map[string]any{"requests": reqs})
}

// GeminiToEmbeddings turns a batchEmbedContents answer (embeddings[].values)
// into OpenAI's embeddings list for model. The Gemini API's answer reports
// no usage (Vertex AI's has usageMetadata, read when present): the usage is
// then zero, and the gateway counts the input itself.
func GeminiToEmbeddings(body []byte, model string) ([]byte, usage.Usage, error) {
	var in struct {
		Embeddings []struct {
			Values []float64 `json:"values"`
		} `json:"embeddings"`
		UsageMetadata *GeminiUsageMetadata `json:"usageMetadata"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, usage.Usage{}, fmt.Errorf("upstream answer: %w", err)
	}
	vectors := make([][]float64, len(in.Embeddings))
	for i, e := range in.Embeddings {
		vectors[i] = e.Values
	}
	var u usage.Usage
	if in.UsageMetadata != nil {
		u = usage.Usage{Prompt: in.UsageMetadata.PromptTokenCount}
	}
	b, err := embeddingList(vectors, model, u)
	return b, u, err
}
