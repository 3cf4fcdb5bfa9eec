package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkChatHandlerLimited is BenchmarkChatHandler's whole answer with a
// key that sets rpm_limit, tpm_limit and max_parallel_requests (limits that
// never bind): a rate-limited request, whose ticket goes to the limiter.
func BenchmarkChatHandlerLimited(b *testing.B) {
	h, _ := benchGateway(b, "")
	req := httptest.NewRequest("POST", "/key/generate", strings.NewReader(`{"max_budget": 1000000, "rpm_limit": 1000000000, "tpm_limit": 1000000000000, "max_parallel_requests": 1000000}`))
	req.Header.Set("Authorization", "Bearer sk-1234")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out struct{ Key string }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 {
		b.Fatalf("/key/generate: %d %s", rec.Code, rec.Body)
	}
	body := `{"model":"demo","messages":[{"role":"user","content":"hello there"}]}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+out.Key)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}
