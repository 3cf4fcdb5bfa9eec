package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// TestAttemptContextEndings: through the running server (its lean HTTP/1.1
// server, the gateway's attempt context and watchdog, the lean upstream
// client's registration in the attempt), every way an attempt ends
// interrupts the upstream exchange: the stream's first-byte and gap
// timeouts (a 504; the stream cut), the client gone mid-stream, an
// upstream error answered by a fallback deployment; and the next request
// on the same connection is served (a request's context is not shared
// with the next). The upstream sees each of its stalled requests end.
func TestAttemptContextEndings(t *testing.T) {
	ended := make(chan string, 16)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		what := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]
		switch what {
		case "fail":
			w.WriteHeader(500)
			_, _ = io.WriteString(w, `{"error":{"message":"down"}}`)
			return
		case "ok":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
			return
		case "gap", "gone":
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n")
			w.(http.Flusher).Flush()
		}
		select { // "first", "gap", "gone": stall until the gateway leaves
		case <-r.Context().Done():
			ended <- what
		case <-time.After(time.Minute):
		}
	}))
	defer up.Close()
	yaml := `model_list:
  - model_name: first
    litellm_params: {model: openai/x, api_base: "` + up.URL + `/first", timeout: 60, stream_timeout: 0.3}
  - model_name: gap
    litellm_params: {model: openai/x, api_base: "` + up.URL + `/gap", timeout: 60, stream_timeout: 0.3}
  - model_name: gone
    litellm_params: {model: openai/x, api_base: "` + up.URL + `/gone"}
  - model_name: broken
    litellm_params: {model: openai/x, api_base: "` + up.URL + `/fail"}
  - model_name: good
    litellm_params: {model: openai/x, api_base: "` + up.URL + `/ok"}
router_settings:
  num_retries: 0
  fallbacks: [{broken: [good]}]
`
	cfg, err := config.Parse("c.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	base, _, stop := serveStop(t, cfg, Options{})
	defer stop()
	addr := strings.TrimPrefix(base, "http://")

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	ask := func(c net.Conn, br *bufio.Reader, model string, stream bool) *http.Response {
		t.Helper()
		body := `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
		if stream {
			body = `{"model":"` + model + `","stream":true,"messages":[{"role":"user","content":"hi"}]}`
		}
		req, _ := http.NewRequest("POST", "http://gw/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if err := req.Write(c); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	upstreamEnded := func(what string) {
		t.Helper()
		select {
		case got := <-ended:
			if got != what {
				t.Fatalf("the upstream's %q request ended, want %q", got, what)
			}
		case <-time.After(time.Minute):
			t.Fatalf("the upstream's %q request did not end within a minute", what)
		}
	}
	answered := func(c net.Conn, br *bufio.Reader) {
		t.Helper()
		resp := ask(c, br, "good", false)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"hi"`) {
			t.Fatalf("the next request: %d %s", resp.StatusCode, b)
		}
	}

	// First byte: a stream with nothing from the upstream within its
	// stream_timeout is a 504.
	resp := ask(conn, br, "first", true)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 504 {
		t.Fatalf("first byte: %d %s, want 504", resp.StatusCode, b)
	}
	upstreamEnded("first")
	answered(conn, br)

	// Gap: the stream's first event, then nothing: the stream is cut.
	resp = ask(conn, br, "gap", true)
	b, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"x"`) {
		t.Fatalf("gap: %d %s", resp.StatusCode, b)
	}
	upstreamEnded("gap")
	answered(conn, br)

	// An upstream error, then the fallback deployment's answer.
	resp = ask(conn, br, "broken", false)
	b, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"hi"`) {
		t.Fatalf("fallback: %d %s", resp.StatusCode, b)
	}
	answered(conn, br)

	// The client gone mid-stream (after the lean server's 100 ms).
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	br2 := bufio.NewReader(c2)
	resp = ask(c2, br2, "gone", true)
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || !strings.Contains(line, "data:") {
		t.Fatalf("gone: %q %v", line, err)
	}
	c2.Close()
	upstreamEnded("gone")
	answered(conn, br)
}
