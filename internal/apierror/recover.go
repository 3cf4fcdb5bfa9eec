package apierror

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
)

// Recover wraps the whole handler tree: a panic in any handler becomes a
// logged 500 (with the stack) in the OpenAI error shape, or in Anthropic's
// on /v1/messages, instead of a connection cut by net/http. A panic after
// the response has started cannot become a 500: the connection is aborted,
// as net/http would, and the panic is still logged. http.ErrAbortHandler,
// the deliberate way to abort a response, passes through untouched.
func Recover(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackedWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				recovered(log, tw, r, v, anthropicPath(r.URL.Path))
			}
		}()
		h.ServeHTTP(tw, r)
	})
}

// anthropicPath reports whether clients of path expect Anthropic's errors.
func anthropicPath(path string) bool {
	return path == "/v1/messages" || strings.HasPrefix(path, "/v1/messages/")
}

// recovered handles a panic value v raised while serving r. Handler and
// AnthropicHandler call it too, so that a panic there is rendered in the
// route's shape without depending on Recover being outside.
func recovered(log *slog.Logger, w http.ResponseWriter, r *http.Request, v any, anthropic bool) {
	if v == http.ErrAbortHandler {
		panic(v)
	}
	started := false
	if s, ok := w.(interface{ started() bool }); ok {
		started = s.started()
	}
	log.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v),
		"response_started", started, "stack", string(debug.Stack()))
	if started {
		panic(http.ErrAbortHandler) // cut the response; net/http does not log this one
	}
	err := Internal(fmt.Errorf("panic: %v", v))
	if anthropic {
		WriteAnthropic(w, err)
		return
	}
	Write(w, err)
}

// trackedWriter remembers whether the response has started, so that a
// panic is turned into a 500 only when nothing was sent yet.
type trackedWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *trackedWriter) started() bool { return w.wrote }

func (w *trackedWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.wrote = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackedWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Flush keeps streaming working for handlers that assert http.Flusher.
func (w *trackedWriter) Flush() {
	w.wrote = true
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the server's writer
// (deadlines, full-duplex).
func (w *trackedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
