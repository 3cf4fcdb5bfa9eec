package gateway

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user and system CPU time so far: on a shared
// machine the benchmarks report it per op beside wall time, which waits
// for the other helpers' processes.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// eventReader hands out one event per Read, as a body whose upstream
// flushes each event (the mock does) arrives: a read per event.
type eventReader struct {
	events [][]byte
	i, off int
}

func (r *eventReader) Read(p []byte) (int, error) {
	if r.i == len(r.events) {
		return 0, io.EOF
	}
	n := copy(p, r.events[r.i][r.off:])
	if r.off += n; r.off == len(r.events[r.i]) {
		r.i, r.off = r.i+1, 0
	}
	return n, nil
}

func (r *eventReader) Close() error { return nil }

// countingWriter is a ResponseWriter that discards what it is sent and
// counts writes and flushes (each a write syscall on a real connection).
type countingWriter struct {
	h               http.Header
	writes, flushes int
}

func (w *countingWriter) Header() http.Header         { return w.h }
func (w *countingWriter) WriteHeader(int)             {}
func (w *countingWriter) Write(p []byte) (int, error) { w.writes++; return len(p), nil }
func (w *countingWriter) Flush()                      { w.flushes++ }

// BenchmarkStreamEvents is the gateway's own work on a stream shaped like
// the bench's (the mock's: a role chunk, five content chunks, a finish
// chunk, the usage chunk, [DONE]), each event read on its own: framing,
// id, end and usage reading, the watchdog and the flush policy, without
// the sockets. flushes/op is what becomes write syscalls.
func BenchmarkStreamEvents(b *testing.B) {
	events := mockStream()
	w := &countingWriter{h: http.Header{}}
	wd := newWatchdog(time.Hour, func() {})
	defer wd.stop()
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		var res result
		resp := &http.Response{StatusCode: 200, Body: &eventReader{events: events}}
		if err := streamEvents(w, resp, wd, openAIEvents{res: &res}, &res, 1<<20, false); err != nil || !res.hasUsage || !res.ended || res.id != "chatcmpl-1" {
			b.Fatalf("err %v, usage %v, ended %v, id %q", err, res.hasUsage, res.ended, res.id)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(w.flushes)/float64(b.N), "flushes/op")
}

// mockStream is what the mock upstream streams for the bench's request.
func mockStream() [][]byte {
	chunk := func(delta, finish string) []byte {
		return []byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764470000,"model":"gpt-4","choices":[{"index":0,` + delta + `,"finish_reason":` + finish + "}]}\n\n")
	}
	events := [][]byte{chunk(`"delta":{"role":"assistant","content":""}`, "null")}
	for _, w := range []string{"Hello", " from", " the", " mock", " upstream"} {
		events = append(events, chunk(`"delta":{"content":"`+w+`"}`, "null"))
	}
	return append(events, chunk(`"delta":{}`, `"stop"`),
		[]byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764470000,"model":"gpt-4","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}`+"\n\n"),
		[]byte("data: [DONE]\n\n"))
}

// TestWatchdogFeedDefersExpiry: the timer going off within the interval
// of the last feed re-arms instead of expiring; going off a whole interval
// after it expires and cancels; a stopped watchdog never does.
func TestWatchdogFeedDefersExpiry(t *testing.T) {
	cancelled := 0
	cancel := func() { cancelled++ }
	w := &watchdog{every: time.Hour, cancel: cancel}
	w.timer.Store(time.NewTimer(time.Hour))
	defer w.stop()
	w.feed()
	w.fire()
	if w.expired.Load() || cancelled != 0 {
		t.Fatal("expired within the interval of its last feed")
	}
	w.fed.Store(watchdogClock() - int64(time.Hour))
	w.fire()
	if !w.expired.Load() || cancelled != 1 {
		t.Fatal("not expired an interval after its last feed")
	}
	w.expired.Store(false)
	w.stop()
	w.fire()
	if w.expired.Load() || cancelled != 1 {
		t.Fatal("a stopped watchdog expired")
	}
}

// TestWatchdogExpires: a watchdog nobody feeds cancels its context.
func TestWatchdogExpires(t *testing.T) {
	done := make(chan struct{})
	w := newWatchdog(time.Millisecond, func() { close(done) })
	defer w.stop()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("not expired after a minute")
		return
	}
	if !w.expired.Load() {
		t.Fatal("cancelled but not marked expired")
	}
}

// TestStreamHeadersBeforeLateFirstEvent: a stream whose first event is
// late still gives the client its status and headers before it (they are
// no longer flushed on their own when the first event comes with them).
func TestStreamHeadersBeforeLateFirstEvent(t *testing.T) {
	upstream, feed := io.Pipe()
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var res result
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Upstream", "yes")
		resp := &http.Response{StatusCode: 200, Body: upstream}
		wd := newWatchdog(time.Hour, func() {})
		defer wd.stop()
		done <- streamEvents(w, resp, wd, openAIEvents{res: &res}, &res, 1<<20, false)
	}))
	defer srv.Close()
	defer feed.Close()
	got := make(chan *http.Response, 1)
	go func() { // http.Get returns once the headers arrive: no event has been sent
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Error(err)
			resp = nil
		}
		got <- resp
	}()
	var resp *http.Response
	select {
	case resp = <-got:
	case <-time.After(time.Minute):
		t.Fatal("no headers a minute into a stream whose first event is late")
		return
	}
	if resp == nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "yes" {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	events := mockStream()
	go func() {
		for _, ev := range events {
			if _, err := feed.Write(ev); err != nil {
				return
			}
		}
		feed.Close()
	}()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("streamEvents: %v", err)
	}
	if want := bytes.Join(events[:len(events)-2], nil); !bytes.HasPrefix(body, want) || !bytes.HasSuffix(body, []byte("data: [DONE]\n\n")) {
		t.Fatalf("the client got %q", body)
	}
}
