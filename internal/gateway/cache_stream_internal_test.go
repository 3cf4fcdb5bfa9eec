package gateway

import "testing"

// TestHasFinishReason: a finish_reason with a string value marks a
// stream's end, with or without spaces; null does not.
func TestHasFinishReason(t *testing.T) {
	for in, want := range map[string]bool{
		`{"choices":[{"finish_reason":"stop"}]}`:    true,
		`{"choices":[{"finish_reason": "length"}]}`: true,
		`{"choices":[{"finish_reason" : "stop"}]}`:  true,
		`{"choices":[{"finish_reason":null}]}`:      false,
		`{"choices":[{"finish_reason": null}]}`:     false,
		`{"choices":[{"delta":{"content":"x"}}]}`:   false,
	} {
		if got := hasFinishReason([]byte(in)); got != want {
			t.Errorf("hasFinishReason(%s) = %v, want %v", in, got, want)
		}
	}
}

// TestStreamEnd: an OpenAI-shaped chunk ends its stream by its
// finish_reason alone (null is not the end, whatever its text spells);
// other protocols' events by their marks.
func TestStreamEnd(t *testing.T) {
	for in, want := range map[string]bool{
		`data: {"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}`:                  false,
		`data: {"choices":[{"delta":{"content":"[DONE] message_stop"},"finish_reason":null}]}`: false,
		`data: {"choices":[{"delta":{},"finish_reason":"stop"}]}`:                              true,
		`data: {"choices":[{"delta":{}, "finish_reason" : "length"}]}`:                         true,
		"data: [DONE]": true,
		`data: {"id":"x","choices":[],"usage":{"prompt_tokens":1}}`:          false,
		"event: message_stop\ndata: {\"type\":\"message_stop\"}":             true,
		`data: {"candidates":[{"finishReason":"STOP"}]}`:                     true,
		`data: {"type":"message-end","delta":{"finish_reason":"COMPLETE"}}`:  true,
		"event: response.completed\ndata: {\"type\":\"response.completed\"}": true,
		`data: {"type":"content_block_delta","delta":{"text":"hi"}}`:         false,
	} {
		if got := streamEnd([]byte(in)); got != want {
			t.Errorf("streamEnd(%s) = %v, want %v", in, got, want)
		}
	}
}
