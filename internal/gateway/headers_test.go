package gateway

import "testing"

func TestAnswerID(t *testing.T) {
	tests := []struct {
		name, event, want string
		ok                bool
	}{
		{"openai chunk", "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\n", "chatcmpl-1", true},
		{"spaced", "data: { \"id\" : \"chatcmpl-2\" }\n\n", "chatcmpl-2", true},
		{"anthropic message_start", "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\"}}\n\n", "msg_1", true},
		{"an id value is not a member", "data: {\"type\":\"id\",\"x\":{\"id\":\"inner\"}}\n\n", "inner", true},
		{"escaped", "data: {\"id\":\"a\\\"b\"}\n\n", "a\"b", true},
		{"no id", "data: {\"choices\":[]}\n\n", "", true},
		{"keep-alive", ": ping\n\n", "", false},
		{"done", "data: [DONE]\n\n", "", false},
		{"whole answer", "{\"id\":\"msg_2\",\"type\":\"message\"}", "msg_2", true},
		{"cut short", "data: {\"id\":\"chatcm", "", true},
	}
	for _, tt := range tests {
		if id, ok := answerID([]byte(tt.event)); id != tt.want || ok != tt.ok {
			t.Errorf("%s: %q %v, want %q %v", tt.name, id, ok, tt.want, tt.ok)
		}
	}
}

func BenchmarkAnswerID(b *testing.B) {
	ev := []byte("data: {\"id\":\"chatcmpl-AbCdEf0123456789\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n")
	b.ReportAllocs()
	for b.Loop() {
		if id, _ := answerID(ev); id == "" {
			b.Fatal("no id")
		}
	}
}
