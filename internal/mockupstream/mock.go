// Package mockupstream is a fast, deterministic fake of the OpenAI and
// Anthropic HTTP APIs (and of Gemini's and Cohere's own, for the
// pass-through routes: native.go; and Bedrock's Converse: bedrock.go). It serves `tollgate mock-upstream` for demos and
// benchmarks, and stands in for providers in tests, where it records what
// reached it. (The built-in `demo` model is internal/provider's own; its
// answers are this package's, which a test there holds it to.)
//
// Token counts are deterministic: a prompt costs one token per four bytes of
// message text (at least one), and a completion costs one token per word
// emitted.
package mockupstream

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Options shape every answer; request headers can override them per call:
// x-mock-status, x-mock-delay-ms, x-mock-chunk-delay-ms, x-mock-chunks,
// x-mock-completion-tokens and x-mock-no-usage. Two more make it misbehave
// as real upstreams have: x-mock-usage (a JSON object sent verbatim as the
// OpenAI usage) and x-mock-raw-body (sent verbatim as a 200 JSON answer);
// x-mock-flood-bytes and x-mock-flood make an answer too large to buffer
// (see flood). OpenAI requests' n and best_of are honoured: n choices,
// every generated one counted in the usage.
type Options struct {
	Delay      time.Duration // before the response headers
	ChunkDelay time.Duration // between stream chunks
	Chunks     int           // content chunks in a stream (default 5)
	FailStatus int           // when set, every request fails with this status
	Model      string        // when set, the model named in responses
	NoRecord   bool          // skip recording the last request (benchmarks)
}

// Stats counts what the mock served.
type Stats struct {
	Requests         int64
	ByPath           map[string]int64
	StreamsCompleted int64
	StreamsAborted   int64 // the client went away mid-stream
	PromptTokens     int64
	CompletionTokens int64
}

// Recorded is a request as it reached the mock.
type Recorded struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

// Server is the mock upstream; it is an http.Handler.
type Server struct {
	opts Options
	mux  *http.ServeMux

	requests, completed, aborted, prompt, completion atomic.Int64
	telemetry                                        atomic.Int64 // OTLP exports and callback batches received
	mu                                               sync.Mutex
	byPath                                           map[string]int64
	last                                             Recorded
	files                                            filesState
	stored                                           responseStore // Responses API answers kept for GET and DELETE
}

// TracesPath takes OTLP/HTTP trace exports and CallbackPath callback
// batches (generic_api): the load harness points the gateway's telemetry
// at the mock so that its cost is measured without another process.
const (
	TracesPath   = "/v1/traces"
	CallbackPath = "/telemetry/callback"
)

// Telemetry is how many trace exports and callback batches the mock took.
func (s *Server) Telemetry() int64 { return s.telemetry.Load() }

// New returns a mock upstream.
func New(opts Options) *Server {
	if opts.Chunks <= 0 {
		opts.Chunks = 5
	}
	s := &Server{opts: opts, mux: http.NewServeMux(), byPath: map[string]int64{}}
	for _, p := range []string{"/v1", ""} {
		s.mux.HandleFunc("POST "+p+"/chat/completions", s.chat)
		s.mux.HandleFunc("POST "+p+"/completions", s.completions)
		s.mux.HandleFunc("POST "+p+"/embeddings", s.embeddings)
		s.mux.HandleFunc("GET "+p+"/models", s.models)
		s.mux.HandleFunc("POST "+p+"/messages", s.messages)
		s.mux.HandleFunc("POST "+p+"/messages/count_tokens", s.countTokens)
	}
	s.registerResponses()
	s.mux.HandleFunc("POST /openai/deployments/{deployment}/chat/completions", s.azure(s.chat))
	s.mux.HandleFunc("POST /openai/deployments/{deployment}/completions", s.azure(s.completions))
	s.mux.HandleFunc("POST /openai/deployments/{deployment}/embeddings", s.azure(s.embeddings))
	s.files = filesState{files: map[string]map[string]*mockFile{}, batches: map[string]map[string]map[string]any{}}
	s.registerFiles()
	s.registerRerank()
	s.registerMedia()
	s.registerNative()
	s.registerBedrock()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		openAIError(w, http.StatusNotFound, "invalid_request_error", "unknown path "+r.URL.Path)
	})
	return s
}

// ServeHTTP counts and records the request, applies the failure and delay
// knobs, and dispatches it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && (r.URL.Path == TracesPath || r.URL.Path == CallbackPath) {
		// A telemetry sink for the load harness: read, counted apart, accepted.
		_, _ = io.Copy(io.Discard, r.Body)
		s.telemetry.Add(1)
		if r.URL.Path == TracesPath {
			w.Header().Set("Content-Type", "application/x-protobuf") // an empty ExportTraceServiceResponse
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	s.requests.Add(1)
	body, err := readAll(r)
	if err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "could not read body")
		return
	}
	s.mu.Lock()
	s.byPath[r.URL.Path]++
	if !s.opts.NoRecord {
		s.last = Recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
	}
	s.mu.Unlock()
	r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, body))

	if d := s.duration(r, "x-mock-delay-ms", s.opts.Delay); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if status := s.intHeader(r, "x-mock-status", s.opts.FailStatus); status >= 400 {
		if isAnthropic(r.URL.Path) {
			anthropicError(w, status, "api_error", "mock failure "+strconv.Itoa(status))
		} else if isBedrock(r.URL.Path) {
			bedrockError(w, status, "mock failure "+strconv.Itoa(status))
		} else {
			openAIError(w, status, errorType(status), "mock failure "+strconv.Itoa(status))
		}
		return
	}
	if n := s.intHeader(r, "x-mock-flood-bytes", 0); n > 0 {
		s.flood(w, r, n)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	by := make(map[string]int64, len(s.byPath))
	for k, v := range s.byPath {
		by[k] = v
	}
	s.mu.Unlock()
	return Stats{
		Requests: s.requests.Load(), ByPath: by,
		StreamsCompleted: s.completed.Load(), StreamsAborted: s.aborted.Load(),
		PromptTokens: s.prompt.Load(), CompletionTokens: s.completion.Load(),
	}
}

// LastRequest returns the most recent request (zero with NoRecord).
func (s *Server) LastRequest() Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// ListenAndServe serves opts on addr until ctx is done, then shuts down
// gracefully.
func ListenAndServe(ctx context.Context, addr string, opts Options, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: New(opts), ReadHeaderTimeout: 10 * time.Second}
	log.Info("mock upstream listening", "addr", ln.Addr().String(), "delay", opts.Delay, "chunk_delay", opts.ChunkDelay, "fail_status", opts.FailStatus)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type bodyKey struct{}

func body(r *http.Request) []byte { b, _ := r.Context().Value(bodyKey{}).([]byte); return b }

func (s *Server) intHeader(r *http.Request, name string, def int) int {
	if v := r.Header.Get(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

func (s *Server) duration(r *http.Request, name string, def time.Duration) time.Duration {
	if v := r.Header.Get(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return time.Duration(n) * time.Millisecond
		}
	}
	return def
}

func (s *Server) azure(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("api-version") == "" {
			openAIError(w, http.StatusBadRequest, "invalid_request_error", "api-version query parameter is required")
			return
		}
		next(w, r)
	}
}

func isAnthropic(path string) bool {
	return path == "/v1/messages" || path == "/messages" || path == "/v1/messages/count_tokens" || path == "/messages/count_tokens"
}

func errorType(status int) string {
	switch {
	case status == 401:
		return "authentication_error"
	case status == 403:
		return "permission_error"
	case status == 404:
		return "not_found_error"
	case status == 429:
		return "rate_limit_error"
	case status < 500:
		return "invalid_request_error"
	default:
		return "api_error"
	}
}
