package provider

import (
	"io"
	"net/http"
	"net/url"
	"sync"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// The built-in demo model answers inside the process: its "upstream" is the
// mock upstream's handler behind an in-memory transport, so a fresh install
// can be tried with no network and no provider key, through exactly the same
// forwarding and metering code as a real provider.
func init() {
	register([]string{"demo"}, dialect{defaultBase: "http://demo.tollgate.internal/v1", build: func(t *Target, base *url.URL) error {
		t.urls[OpChat] = joinV1(base, "/chat/completions")
		t.urls[OpCompletions] = joinV1(base, "/completions")
		t.urls[OpEmbeddings] = joinV1(base, "/embeddings")
		t.urls[OpMessages] = joinV1(base, "/messages")
		t.header.Set("anthropic-version", AnthropicVersion)
		return nil
	}})
}

func demoTransport() http.RoundTripper {
	return handlerTransport{h: mockupstream.New(mockupstream.Options{NoRecord: true})}
}

// handlerTransport serves requests with an http.Handler in the same process.
// Unlike httptest.ResponseRecorder it streams: the response is returned as
// soon as the handler writes headers, and its body is a pipe the handler
// keeps writing into.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	pr, pw := io.Pipe()
	w := &pipeResponse{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	if req.Body == nil {
		req.Body = http.NoBody
	}
	go func() {
		defer func() {
			w.commit(http.StatusOK)
			pw.Close()
		}()
		t.h.ServeHTTP(w, req)
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
	return &http.Response{
		Status:        http.StatusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          pr,
		ContentLength: -1,
		Request:       req,
	}, nil
}

type pipeResponse struct {
	header http.Header
	sent   http.Header
	status int
	pw     *io.PipeWriter
	once   sync.Once
	ready  chan struct{}
}

func (w *pipeResponse) Header() http.Header { return w.header }

func (w *pipeResponse) commit(status int) {
	w.once.Do(func() {
		w.status = status
		w.sent = w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeResponse) WriteHeader(status int) { w.commit(status) }

func (w *pipeResponse) Write(p []byte) (int, error) {
	w.commit(http.StatusOK)
	return w.pw.Write(p)
}

// Flush is a no-op: every Write is already handed to the reader.
func (w *pipeResponse) Flush() { w.commit(http.StatusOK) }
