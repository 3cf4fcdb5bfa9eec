package sdktest

import (
	"context"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
)

// TestBedrockToolCalls: a Bedrock deployment's tool call (the mock calls
// the first tool with what the user said) reaches openai-go, whole and
// streamed through its accumulator, and anthropic-sdk-go, as each SDK's
// typed tool call.
func TestBedrockToolCalls(t *testing.T) {
	c := openaiClient(gw.keys["all"])
	p := openai.ChatCompletionNewParams{
		Model:    "bedrock-claude",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("WZPZ")},
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
			Name: "top_song", Parameters: openai.FunctionParameters{"type": "object", "properties": map[string]any{"said": map[string]any{"type": "string"}}},
		})},
	}
	resp, err := c.Chat.Completions.New(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if calls := resp.Choices[0].Message.ToolCalls; len(calls) != 1 || calls[0].Function.Name != "top_song" || calls[0].Function.Arguments != `{"said":"WZPZ"}` ||
		resp.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("tool call %+v", resp.Choices[0])
	}
	stream := c.Chat.Completions.NewStreaming(context.Background(), p)
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if calls := acc.Choices[0].Message.ToolCalls; len(calls) != 1 || calls[0].Function.Name != "top_song" || calls[0].Function.Arguments != `{"said":"WZPZ"}` ||
		calls[0].ID == "" || acc.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("streamed tool call %+v", acc.Choices[0])
	}

	a := anthropicClient(gw.keys["all"])
	msg, err := a.Messages.New(context.Background(), anthropic.MessageNewParams{
		Model: "bedrock-claude", MaxTokens: 64,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("WZPZ"))},
		Tools: []anthropic.ToolUnionParam{{OfTool: &anthropic.ToolParam{Name: "top_song",
			InputSchema: anthropic.ToolInputSchemaParam{Properties: map[string]any{"said": map[string]any{"type": "string"}}}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Type != "tool_use" || msg.Content[0].Name != "top_song" || string(msg.Content[0].Input) != `{"said":"WZPZ"}` ||
		msg.StopReason != anthropic.StopReasonToolUse {
		t.Fatalf("Messages tool call %+v", msg)
	}
}
