package sdktest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func openaiClient(key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(gw.url+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
}

func anthropicClient(key string) anthropic.Client {
	return anthropic.NewClient(aoption.WithBaseURL(gw.url), aoption.WithAPIKey(key), aoption.WithMaxRetries(0))
}

func chatParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:     model,
		MaxTokens: openai.Int(16),
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("hello there")},
	}
}

func TestOpenAIChat(t *testing.T) {
	c := openaiClient(gw.keys["all"])
	for _, model := range []string{"gpt-4", "claude", "bedrock-claude"} {
		resp, err := c.Chat.Completions.New(context.Background(), chatParams(model))
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		if got := resp.Choices[0].Message.Content; got != "Hello! You said: hello there" {
			t.Errorf("%s: content %q", model, got)
		}
		if resp.Usage.CompletionTokens != 5 || resp.Usage.PromptTokens == 0 {
			t.Errorf("%s: usage %+v", model, resp.Usage)
		}
	}
}

func TestOpenAIStreaming(t *testing.T) {
	c := openaiClient(gw.keys["all"])
	for _, model := range []string{"gpt-4", "claude", "bedrock-claude"} {
		p := chatParams(model)
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		stream := c.Chat.Completions.NewStreaming(context.Background(), p)
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		if got := acc.Choices[0].Message.Content; got != "Hello! You said: hello there" {
			t.Errorf("%s: streamed %q", model, got)
		}
		if acc.Usage.CompletionTokens != 5 {
			t.Errorf("%s: streamed usage %+v", model, acc.Usage)
		}
	}
}

func TestOpenAIEmbeddingsAndModels(t *testing.T) {
	c := openaiClient(gw.keys["all"])
	emb, err := c.Embeddings.New(context.Background(), openai.EmbeddingNewParams{
		Model: "text-embedding-3-small",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one", "two"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(emb.Data) != 2 || len(emb.Data[0].Embedding) == 0 {
		t.Fatalf("embeddings: %+v", emb.Data)
	}
	limited := openaiClient(gw.keys["gpt4"])
	page, err := limited.Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != "gpt-4" {
		t.Fatalf("a gpt-4 key lists %+v", page.Data)
	}
}

func TestAnthropicMessages(t *testing.T) {
	c := anthropicClient(gw.keys["all"])
	for _, model := range []string{"claude", "gpt-4", "bedrock-claude"} {
		msg, err := c.Messages.New(context.Background(), anthropic.MessageNewParams{
			Model: anthropic.Model(model), MaxTokens: 64,
			System:   []anthropic.TextBlockParam{{Text: "Be brief."}},
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello there"))},
		})
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		if len(msg.Content) != 1 || msg.Content[0].Text != "Hello! You said: hello there" || msg.StopReason != anthropic.StopReasonEndTurn {
			t.Errorf("%s: %+v", model, msg)
		}
		if msg.Usage.OutputTokens != 5 || msg.Usage.InputTokens == 0 {
			t.Errorf("%s: usage %+v", model, msg.Usage)
		}
	}
}

func TestAnthropicStreaming(t *testing.T) {
	c := anthropicClient(gw.keys["all"])
	for _, model := range []string{"claude", "gpt-4", "bedrock-claude"} {
		stream := c.Messages.NewStreaming(context.Background(), anthropic.MessageNewParams{
			Model: anthropic.Model(model), MaxTokens: 64,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("one two three"))},
		})
		var msg anthropic.Message
		for stream.Next() {
			if err := msg.Accumulate(stream.Current()); err != nil {
				t.Fatalf("%s: accumulate: %v", model, err)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		var text strings.Builder
		for _, b := range msg.Content {
			text.WriteString(b.Text)
		}
		if text.String() != "Hello! You said: one two three" || msg.Usage.OutputTokens != 6 {
			t.Errorf("%s: streamed %q, usage %+v", model, text.String(), msg.Usage)
		}
	}
	n, err := c.Messages.CountTokens(context.Background(), anthropic.MessageCountTokensParams{
		Model:    "claude",
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello world"))},
	})
	if err != nil || n.InputTokens <= 0 {
		t.Fatalf("count tokens: %+v %v", n, err)
	}
}

// TestTypedErrors: each refusal reaches the SDKs as their typed error with
// the right status.
func TestTypedErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		key    string
		model  string
		status int
	}{
		{"401 authentication", "sk-not-a-key", "gpt-4", http.StatusUnauthorized},
		{"403 permission", gw.keys["gpt4"], "claude", http.StatusForbidden},
		{"404 not found", gw.keys["all"], "no-such-model", http.StatusNotFound},
		{"400 budget", gw.keys["nobudge"], "gpt-4", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oc := openaiClient(tt.key)
			_, err := oc.Chat.Completions.New(ctx, chatParams(tt.model))
			var oe *openai.Error
			if !errors.As(err, &oe) || oe.StatusCode != tt.status {
				t.Errorf("openai: %v", err)
			}
			ac := anthropicClient(tt.key)
			_, err = ac.Messages.New(ctx, anthropic.MessageNewParams{Model: anthropic.Model(tt.model), MaxTokens: 16,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}})
			var ae *anthropic.Error
			if !errors.As(err, &ae) || ae.StatusCode != tt.status {
				t.Errorf("anthropic: %v", err)
			}
		})
	}
	nb := openaiClient(gw.keys["nobudge"])
	if _, err := nb.Chat.Completions.New(ctx, chatParams("gpt-4")); err != nil {
		var oe *openai.Error
		if errors.As(err, &oe) && oe.Type != "budget_exceeded" {
			t.Errorf("budget error type %q", oe.Type)
		}
	}
	// 429: the rpm-1 key's first request passes, the next is limited.
	c := openaiClient(gw.keys["rpm1"])
	if _, err := c.Chat.Completions.New(ctx, chatParams("gpt-4")); err != nil {
		t.Fatal(err)
	}
	_, err := c.Chat.Completions.New(ctx, chatParams("gpt-4"))
	var oe *openai.Error
	if !errors.As(err, &oe) || oe.StatusCode != http.StatusTooManyRequests || oe.Response.Header.Get("Retry-After") == "" {
		t.Errorf("openai 429: %v", err)
	}
	ac := anthropicClient(gw.keys["rpm1"])
	_, err = ac.Messages.New(ctx, anthropic.MessageNewParams{Model: "claude", MaxTokens: 16,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}})
	var ae *anthropic.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusTooManyRequests {
		t.Errorf("anthropic 429: %v", err)
	}
}
