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
