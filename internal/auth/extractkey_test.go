package auth

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

// TestExtractKey reads requests as the server parses them off the wire
// (header names canonicalised, whatever case the client sent) and checks
// which key each yields: LiteLLM's header first, then Authorization, then
// x-api-key, then api-key.
func TestExtractKey(t *testing.T) {
	tests := []struct {
		name, headers, want string
	}{
		{"bearer", "Authorization: Bearer sk-a\r\n", "sk-a"},
		{"bearer, any case", "authorization: bEaReR  sk-a \r\n", "sk-a"},
		{"authorization without bearer", "Authorization: sk-a\r\n", "sk-a"},
		{"litellm's header first", "Authorization: Bearer sk-a\r\nx-litellm-api-key: sk-b\r\n", "sk-b"},
		{"litellm's header with bearer", "X-LiteLLM-API-Key: Bearer sk-b\r\n", "sk-b"},
		{"x-api-key", "x-api-key: sk-c\r\n", "sk-c"},
		{"authorization before x-api-key", "X-API-KEY: sk-c\r\nAuthorization: Bearer sk-a\r\n", "sk-a"},
		{"api-key", "api-key: sk-d\r\n", "sk-d"},
		{"x-api-key before api-key", "Api-Key: sk-d\r\nx-api-key: sk-c\r\n", "sk-c"},
		{"the first of two", "x-api-key: sk-c\r\nx-api-key: sk-e\r\n", "sk-c"},
		{"an empty litellm header falls through", "x-litellm-api-key: \r\nAuthorization: Bearer sk-a\r\n", "sk-a"},
		{"none", "X-Other: sk-x\r\n", ""},
	}
	for _, tt := range tests {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\n" + tt.headers + "\r\n")))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := ExtractKey(r); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
