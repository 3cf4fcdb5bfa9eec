package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// BenchmarkBodyDeadline is a request with a small body (read to its end by
// the handler) through bodyDeadline on a real keep-alive HTTP/1.1
// connection: the connection's deadline updates it costs are its share.
func BenchmarkBodyDeadline(b *testing.B) {
	ts := httptest.NewServer(bodyDeadline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}), time.Minute))
	defer ts.Close()
	client := ts.Client()
	const body = `{"model":"demo","messages":[{"role":"user","content":"hello there"}]}`
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Post(ts.URL, "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
