package apierror_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate/tollgate/internal/apierror"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPanicsBecomeLogged500s: a panic in a handler (one of apierror's or a
// plain one behind Recover) answers 500 in the route's error shape, logs
// the panic with its stack, and leaves the server serving; a panic after
// the response started cuts the connection; http.ErrAbortHandler is not
// swallowed (nor logged as a panic).
func TestPanicsBecomeLogged500s(t *testing.T) {
	logs := &syncBuf{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	mux := http.NewServeMux()
	boom := func(w http.ResponseWriter, r *http.Request) error { panic("boom in " + r.URL.Path) }
	mux.Handle("POST /v1/chat/completions", apierror.Handler(log, boom))
	mux.Handle("POST /v1/messages", apierror.AnthropicHandler(log, boom))
	mux.Handle("GET /plain", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = []int{}[len(r.URL.Path)] // a real runtime panic: index out of range
	}))
	mux.Handle("POST /v1/messages/plain", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("plain anthropic") }))
	mux.Handle("GET /abort", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) }))
	mux.Handle("GET /abort-in-handler", apierror.Handler(log, func(w http.ResponseWriter, r *http.Request) error { panic(http.ErrAbortHandler) }))
	mux.Handle("GET /midstream", apierror.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"a\":1}\n\n")
		http.NewResponseController(w).Flush()
		panic("after the first event")
	}))
	mux.Handle("GET /ok", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	ts := httptest.NewServer(apierror.Recover(log, mux))
	defer ts.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	tests := []struct {
		name, method, path, shape, panicText string
	}{
		{"apierror.Handler", "POST", "/v1/chat/completions", "openai", "boom in /v1/chat/completions"},
		{"apierror.AnthropicHandler", "POST", "/v1/messages", "anthropic", "boom in /v1/messages"},
		{"plain handler behind Recover", "GET", "/plain", "openai", "index out of range"},
		{"plain handler on an Anthropic path", "POST", "/v1/messages/plain", "anthropic", "plain anthropic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, ts.URL+tt.path, strings.NewReader("{}"))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("the connection was cut instead of a 500: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 500 || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			var body struct {
				Type  string `json:"type"`
				Error struct {
					Type, Message, Code string
				} `json:"error"`
			}
			if err := json.Unmarshal(b, &body); err != nil {
				t.Fatal(err)
			}
			switch tt.shape {
			case "openai":
				if body.Error.Type != "api_error" || body.Error.Code != "internal_error" || body.Type != "" {
					t.Errorf("not the OpenAI shape: %s", b)
				}
			case "anthropic":
				if body.Type != "error" || body.Error.Type != "api_error" || body.Error.Code != "" {
					t.Errorf("not the Anthropic shape: %s", b)
				}
			}
			if strings.Contains(string(b), tt.panicText) {
				t.Errorf("the panic reached the client: %s", b)
			}
			var logged bool
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, `"handler panicked"`) && strings.Contains(line, tt.panicText) &&
					strings.Contains(line, `"stack":"goroutine`) && strings.Contains(line, tt.path) {
					logged = true
				}
			}
			if !logged {
				t.Errorf("no log line with the panic and its stack:\n%s", logs.String())
			}
		})
	}

	before := strings.Count(logs.String(), "handler panicked")
	for _, path := range []string{"/abort", "/abort-in-handler"} {
		if resp, err := client.Get(ts.URL + path); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Errorf("%s: http.ErrAbortHandler was swallowed: %d %s", path, resp.StatusCode, b)
		}
	}
	if after := strings.Count(logs.String(), "handler panicked"); after != before {
		t.Errorf("http.ErrAbortHandler was logged as a panic")
	}

	// A panic mid-stream cannot become a 500: the stream is cut.
	resp, err := client.Get(ts.URL + "/midstream")
	if err != nil {
		t.Fatal(err)
	}
	first, _ := bufio.NewReader(resp.Body).ReadString('\n')
	rest, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || first != "data: {\"a\":1}\n" || err == nil || bytes.Contains(rest, []byte("internal_error")) {
		t.Errorf("mid-stream panic: %d %q, rest %q, err %v", resp.StatusCode, first, rest, err)
	}
	if !strings.Contains(logs.String(), `"response_started":true`) {
		t.Error("the mid-stream panic was not logged")
	}

	// The server is still serving.
	resp, err = client.Get(ts.URL + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Errorf("after the panics: %d %q", resp.StatusCode, b)
	}
}
