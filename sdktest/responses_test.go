package sdktest

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
)

// responsesParams asks for a short answer; the mock echoes the input.
func responsesParams(model string) responses.ResponseNewParams {
	return responses.ResponseNewParams{
		Model:           model,
		Instructions:    openai.String("Be brief."),
		MaxOutputTokens: openai.Int(16),
		Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("hello there")},
	}
}

// TestOpenAIResponses: openai-go's Responses client against a deployment
// that serves the API (gpt-4, passed through) and one reached by
// translation (claude, through chat and Anthropic's Messages API).
func TestOpenAIResponses(t *testing.T) {
	c := openaiClient(gw.keys["all"])
	ctx := context.Background()
	for _, model := range []string{"gpt-4", "claude"} {
		resp, err := c.Responses.New(ctx, responsesParams(model))
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		if got := resp.OutputText(); got != "Hello! You said: hello there" || resp.Status != "completed" {
			t.Errorf("%s: %q, status %q", model, got, resp.Status)
		}
		if resp.Usage.OutputTokens != 5 || resp.Usage.InputTokens == 0 {
			t.Errorf("%s: usage %+v", model, resp.Usage)
		}
	}

	// A stored response: read back by its key, gone after delete, and
	// invisible to another key.
	resp, err := c.Responses.New(ctx, responsesParams("gpt-4"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Responses.Get(ctx, resp.ID, responses.ResponseGetParams{})
	if err != nil || got.ID != resp.ID || got.OutputText() != resp.OutputText() {
		t.Fatalf("get: %v %+v", err, got)
	}
	other := openaiClient(gw.keys["gpt4"])
	var apiErr *openai.Error
	if _, err := other.Responses.Get(ctx, resp.ID, responses.ResponseGetParams{}); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Fatalf("another key's get: %v", err)
	}
	if err := c.Responses.Delete(ctx, resp.ID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := c.Responses.Get(ctx, resp.ID, responses.ResponseGetParams{}); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestOpenAIResponsesStreaming(t *testing.T) {
	c := openaiClient(gw.keys["all"])
	for _, model := range []string{"gpt-4", "claude"} {
		stream := c.Responses.NewStreaming(context.Background(), responsesParams(model))
		var text string
		var completed *responses.Response
		for stream.Next() {
			ev := stream.Current()
			switch ev.Type {
			case "response.output_text.delta":
				text += ev.Delta
			case "response.completed":
				r := ev.AsResponseCompleted().Response
				completed = &r
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		if text != "Hello! You said: hello there" || completed == nil || completed.OutputText() != text {
			t.Fatalf("%s: streamed %q, completed %+v", model, text, completed)
		}
		if completed.Usage.OutputTokens != 5 {
			t.Errorf("%s: streamed usage %+v", model, completed.Usage)
		}
	}
}
