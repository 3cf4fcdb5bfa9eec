package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/router"
	"github.com/tollgate/tollgate/internal/store"
)

// panickyObserver panics in finished after counting the call.
type panickyObserver struct{ n atomic.Int64 }

func (o *panickyObserver) finished(*call, int) {
	o.n.Add(1)
	panic("observer broke")
}
func (o *panickyObserver) retried(string)           {}
func (o *panickyObserver) fellBack(string, string)  {}
func (o *panickyObserver) budgetRefused(store.Kind) {}

// TestFinishRunsEachStepOnceAfterAPanic: an Observer that panics (as the
// metrics did on a label not UTF-8) is not called again by serve's
// deferred finish (which would publish a second payload), and the call's
// span still ends.
func TestFinishRunsEachStepOnceAfterAPanic(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	u := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`)
	}))
	defer u.Close()
	rt, err := router.New([]config.Deployment{{ModelName: "g", Provider: "openai", Model: "m", APIBase: u.URL, ID: "d1"}}, router.Settings{Health: router.NewHealth(nil)})
	if err != nil {
		t.Fatal(err)
	}
	obs := &panickyObserver{}
	g := New(Options{Observer: obs, Tracer: tp.Tracer("test")}, auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), rt)
	mux := http.NewServeMux()
	g.Register(mux)
	srv := httptest.NewServer(mux)
	_, _ = metaPost(t, srv.URL, `{"model":"g","messages":[{"role":"user","content":"hi"}]}`)
	srv.Close()
	if n := obs.n.Load(); n != 1 {
		t.Errorf("the observer was told of the call %d times, want 1", n)
	}
	var server int
	for _, s := range rec.Ended() {
		if s.SpanKind().String() == "server" {
			server++
		}
	}
	if server != 1 {
		t.Errorf("%d request spans ended (of %d spans), want 1", server, len(rec.Ended()))
	}
}
