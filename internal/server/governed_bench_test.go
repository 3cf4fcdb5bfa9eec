package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkChatGoverned is the bench's governed scenario in process: a
// whole answer with the key `tollgate bench` makes (a budget, rpm, tpm
// and parallel limits that never bind, a user), spend rows to SQLite.
// BenchmarkChatPlain is the same request with no master key (the plain
// scenario): their difference is governance's own cost.
func BenchmarkChatGoverned(b *testing.B) {
	h, _ := benchGateway(b, "")
	req := httptest.NewRequest("POST", "/key/generate", strings.NewReader(`{"max_budget": 1000000, "rpm_limit": 100000000, "tpm_limit": 10000000000, "max_parallel_requests": 100000, "user_id": "bench-user"}`))
	req.Header.Set("Authorization", "Bearer sk-1234")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out struct{ Key string }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 {
		b.Fatalf("/key/generate: %d %s", rec.Code, rec.Body)
	}
	benchWhole(b, h, "Bearer "+out.Key)
}

// BenchmarkChatPlain: see BenchmarkChatGoverned.
func BenchmarkChatPlain(b *testing.B) {
	h := benchPlainGateway(b)
	benchWhole(b, h, "")
}

func benchWhole(b *testing.B, h http.Handler, auth string) {
	body := `{"model":"demo","messages":[{"role":"user","content":"hello there"}]}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// benchPlainGateway serves the demo model with no master key (no
// virtual keys: the plain scenario).
func benchPlainGateway(b *testing.B) http.Handler {
	return benchServe(b, "model_list:\n  - model_name: demo\n    litellm_params: {model: demo/demo}\n    model_info: {id: demo}\n")
}
