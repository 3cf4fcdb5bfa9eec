package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/translate"
	"github.com/tollgate/tollgate/internal/usage"
)

// result is what one forwarded request produced, for metering and the log.
type result struct {
	status     int
	usage      usage.Usage
	hasUsage   bool          // usage is what the upstream reported
	estimated  bool          // usage is the gateway's estimate: the upstream reported none
	chunks     int           // content-bearing stream events seen
	text       int64         // bytes of generated text those events carried
	ttfb       time.Duration // upstream response headers, from the request's start
	upstream   time.Duration // time spent waiting on the upstream
	clientGone bool
	model      string // the model the upstream was asked for
	// served is the model the upstream says it served, read only when
	// wantServed (the deployment has no price of its own).
	served     string
	wantServed bool
	// unusable: a 2xx that is not a valid response; booked as a row with
	// its status and no cost.
	unusable bool
	// brokeOff is why a stream the upstream began ended before its end
	// (not the client leaving). What it produced is booked as it was
	// (status stays the upstream's); the call is observed as a 502.
	brokeOff error
	// ended: a stream's upstream sent its own end ([DONE], a finish
	// reason, message_stop, or a translated provider's stop event), read
	// from the upstream's events before any translation; a stream without
	// it is never cached (cache.go).
	ended bool
	// id is the upstream answer's id (chatcmpl-..., msg_...), from a whole
	// answer or a stream's first event; idSeen once that event was read.
	id     string
	idSeen bool
	// traced: the call is traced, and the answer's finish reasons and
	// model are read into reasons and respModel (trace.go).
	traced    bool
	reasons   []string
	respModel string
	// scan is streamEvents' scan of the event being passed on (eventScan).
	scan eventScan
}

// errClientGone: the client disconnected; nothing more can be written, so
// it counts as a response already given.
var errClientGone = fmt.Errorf("client disconnected: %w", apierror.ErrResponded)

// fallbacksFor is group's list in m, else defaults.
func fallbacksFor(m map[string][]string, group string, defaults []string) []string {
	if fb, ok := m[group]; ok {
		return fb
	}
	return defaults
}

// backoff is the wait before retry number attempt+1: the upstream's
// Retry-After when it gave a short one, else 50 ms doubling per attempt with
// jitter, never below router_settings.retry_after and never above 2 s.
func backoff(floor time.Duration, attempt int, upstream time.Duration) time.Duration {
	d := time.Duration(50<<min(attempt, 6)) * time.Millisecond
	d = d/2 + time.Duration(rand.Int64N(int64(d)))
	if upstream > 0 && upstream <= 2*time.Second {
		d = upstream
	}
	return min(max(d, floor), max(2*time.Second, floor))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// failure is an attempt that wrote nothing to the client: an upstream
// error status (kept whole, to pass on), or no answer at all (err).
type failure struct {
	status        int
	header        http.Header
	body          []byte
	err           error // set when there was no response: a 502 or 504
	retryable     bool  // 408, 429, 5xx, timeouts, connection errors
	contextWindow bool  // a 400 saying the prompt exceeds the context window
	retryAfter    time.Duration
}

func (f *failure) Error() string {
	if f.err != nil {
		return f.err.Error()
	}
	return "upstream answered " + strconv.Itoa(f.status)
}

var contextWindowSigns = [][]byte{[]byte("context_length_exceeded"), []byte("maximum context length"), []byte("context window"), []byte("prompt is too long")}

// isContextWindow reports whether an upstream's 400 says the prompt
// exceeds the context window.
func isContextWindow(body []byte) bool {
	lower := bytes.ToLower(body)
	for _, s := range contextWindowSigns {
		if bytes.Contains(lower, s) {
			return true
		}
	}
	return false
}

func newFailure(resp *http.Response, body []byte) *failure {
	f := &failure{status: resp.StatusCode, header: resp.Header, body: body}
	f.retryable = resp.StatusCode == 408 || resp.StatusCode == 429 || resp.StatusCode >= 500
	if resp.StatusCode == 400 {
		lower := bytes.ToLower(body)
		for _, s := range contextWindowSigns {
			if bytes.Contains(lower, s) {
				f.contextWindow = true
			}
		}
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		f.retryAfter = time.Duration(s) * time.Second
	}
	return f
}

// forward sends one attempt to t and relays the answer. It returns nil
// once the answer is written (the upstream's own 4xx/5xx are failures, not
// answers), errClientGone when the client left, or a *failure.
func (c *call) forward(t *provider.Target, wr *wire, body []byte) error {
	req, res, w, r := c.req, &c.res, c.w, c.r
	op := wr.op
	at := newAttempt(r.Context(), c.g.timeoutFor(t, req.stream))
	defer at.end()
	ctx, wd := &at.ctx, &at.wd

	ureq, err := t.NewRequest(ctx, op, res.model, body, req.contentType(), req.stream)
	if err != nil {
		return apierror.Internal(err)
	}
	c.propagate(ureq)
	res.traced = c.tr != nil
	sent := time.Now()
	resp, err := t.Do(ureq)
	res.ttfb = time.Since(c.start)
	if err != nil {
		res.upstream = time.Since(sent)
		return c.upstreamError(t, wd, err)
	}
	defer resp.Body.Close()
	res.status = resp.StatusCode
	if resp.StatusCode >= 400 {
		data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		res.upstream = time.Since(sent)
		if err != nil {
			return c.upstreamError(t, wd, err)
		}
		return newFailure(resp, data)
	}
	if req.media != nil && resp.StatusCode < 300 {
		return c.relayMedia(t, resp, wd, sent)
	}
	// The upstream's headers are the client's only once its answer is:
	// a body that breaks off or is unusable must not leave them behind
	// for the next attempt's answer, or for the gateway's own 502.
	if resp.StatusCode < 300 && isAWSEventStream(resp.Header) {
		awsEventsAsSSE(resp)
	}
	if resp.StatusCode < 300 && isEventStream(resp.Header) {
		if err := c.waitDuring(); err != nil { // during_call guardrails decide before the first byte
			// The upstream was called and bills the prompt: the stream is
			// cut before its first byte and booked as other cut streams
			// are, for the prompt the gateway counts.
			res.usage, res.estimated = estimateUsage(req, res.model, nil), true
			res.upstream = time.Since(sent)
			return err
		}
		copyHeader(w.Header(), resp.Header)
		wd.feed()
		c.durationHeaders(w.Header(), time.Since(sent))
		if hd := c.hold; hd != nil {
			hd.streamHeaders(w.Header())
		}
		var sink eventSink = openAIEvents{clientUsage: req.clientUsage, res: res}
		if wr.stream != nil {
			sink = translated{s: wr.stream(req), res: res}
		}
		sink = c.guardStream(sink, wr.anthropicClient) // post_call guardrails on the text as it passes (guardstream.go)
		if c.cap != nil && c.cap.streams {
			c.cap.stream = &streamAnswer{op: c.op, limit: c.g.content.max}
			sink = teeSink{inner: sink, a: c.cap.stream}
		}
		err := streamEvents(w, resp, wd, sink, res, eventLimit(c.g.opts.MaxResponseBytes), wr.anthropicClient)
		res.upstream = time.Since(sent) // streams are paced by the upstream
		if errors.As(err, new(errEventTooLarge)) {
			res.status = http.StatusBadGateway // booked as a failure, with what was produced
		}
		// An abandoned stream is still charged for what it produced:
		// finish settles it.
		if err != nil {
			if res.clientGone || r.Context().Err() != nil {
				res.clientGone = true
				return errClientGone
			}
			c.g.log.Warn("upstream stream ended early", "model", clip(req.model), "deployment", t.D.ID, "err", err, "timeout", wd.expired.Load())
			res.brokeOff = apierror.BadGateway(err, "deployment %s of model %q broke off the stream before its end", t.D.ID, t.D.ModelName)
		}
		return nil
	}

	data, err := readLimited(resp.Body, resp.ContentLength, c.g.opts.MaxResponseBytes)
	res.upstream = time.Since(sent)
	if errors.Is(err, errTooLarge) {
		// Booked as a failure like any unusable answer: a row with the
		// status and no cost (its usage cannot be read), the hold released.
		res.status, res.unusable = http.StatusBadGateway, true
		return tooLargeFailure(t.D.ID, c.g.opts.MaxResponseBytes)
	}
	if err != nil {
		return c.upstreamError(t, wd, err)
	}
	if resp.StatusCode < 300 {
		if res.traced {
			res.traceAnswer(data, true)
		}
		// An answer that is not a response is the deployment's fault: a 502,
		// booked as a failure (no cost, the hold released). It is not
		// retried: the upstream may have billed it already.
		bad := func(err error) error {
			res.status, res.unusable = http.StatusBadGateway, true
			return &failure{err: apierror.BadGateway(err, "deployment %s answered %d with something that is not a %s response", t.D.ID, resp.StatusCode, op)}
		}
		if wr.response != nil {
			if !jsonbody.Valid(data) {
				return bad(errors.New("response body is not valid JSON"))
			}
			res.id, _ = answerID(data)
			out, u, err := wr.response(data)
			if ref := (*translate.Refused)(nil); errors.As(err, &ref) {
				// A prompt the provider's filter blocked: a 400, as OpenAI
				// refuses one, booked for the prompt the provider billed.
				res.usage, res.hasUsage, res.status = translatedUsage(u), true, http.StatusBadRequest
				e := apierror.BadRequest("messages", "%v; nothing was generated", ref)
				e.Code = "content_policy_violation"
				return &failure{err: e}
			}
			if err != nil {
				return bad(err)
			}
			data = namedModel(out, res.model)
			res.usage = translatedUsage(u)
			res.hasUsage = res.usage != (usage.Usage{}) // negative counts too: settle clamps them
		} else {
			var ok bool
			if res.usage, res.id, ok, err = answerOf(data); err != nil {
				return bad(err)
			}
			res.hasUsage = ok
		}
		if !res.hasUsage && c.hold != nil {
			// No usage: charge what the gateway can count.
			res.usage, res.estimated = estimateUsage(req, res.model, data), true
		}
		if res.wantServed {
			res.served = modelOf(data)
		}
	}
	if c.guard != nil && resp.StatusCode < 300 {
		// post_call guardrails and output_parse_pii (guard.go); a block
		// is a 400 with the answer's tokens booked.
		if data, err = c.guardAnswer(data); err != nil {
			return err
		}
	}
	copyHeader(w.Header(), resp.Header)
	return c.writeWhole(resp.StatusCode, data)
}

// writeWhole writes a whole answer. A 2xx is settled first and carries its
// cost: its settle is queued in Redis's ordered stream before the answer
// is written (so that the client's next request, from this replica, is
// decided after it), and its reply is waited for and booked once the
// answer is out (call.land), not before - unless its rate-limit ticket is
// tight (ratelimit.Ticket.Tight), whose settle lands first. Every answer carries its
// durations. It returns errClientGone when the client left.
func (c *call) writeWhole(status int, data []byte) error {
	h := c.w.Header()
	if hd := c.hold; hd != nil && status < 300 {
		// A ticket whose settlement frees what the client's next request
		// needs (max_parallel_requests: 1, say) is settled before the
		// answer, as before: on another replica that request would
		// otherwise find its own limit still taken.
		if ch, ok := hd.(*charge); ok && (c.ticket == nil || !c.ticket.Tight()) {
			ch.later, c.landing = true, ch
		}
		c.settleLast()
		hd.headers(h, c.cost)
	}
	if c.cap != nil && status < 300 {
		c.cap.answer = data
	}
	c.durationHeaders(h, c.res.upstream)
	h["Content-Length"] = []string{strconv.Itoa(len(data))}
	c.w.WriteHeader(status)
	_, err := c.w.Write(data)
	if ch := c.landing; err == nil && ch != nil && ch.pend.Pending() {
		// Out to the client now, not when the handler returns: the
		// settle's reply is waited for below.
		if ferr := http.NewResponseController(c.w).Flush(); !errors.Is(ferr, http.ErrNotSupported) {
			err = ferr
		}
	}
	c.land()
	if err != nil {
		c.res.clientGone = true
		return errClientGone
	}
	return nil
}

// upstreamError classifies a failed exchange: the client left, the upstream
// was too slow (504), or it could not be reached or broke off (502); the
// last two may be retried.
func (c *call) upstreamError(t *provider.Target, wd *watchdog, err error) error {
	switch {
	case c.r.Context().Err() != nil:
		c.res.clientGone = true
		return errClientGone
	case wd.expired.Load():
		return &failure{retryable: true, err: apierror.GatewayTimeout(err, "deployment %s of model %q did not answer within %s", t.D.ID, t.D.ModelName, wd.every)}
	default:
		return &failure{retryable: true, err: apierror.BadGateway(err, "deployment %s of model %q could not be reached or broke off", t.D.ID, t.D.ModelName)}
	}
}

// streamEvents copies a server-sent-event stream to w event by event,
// reading usage from it and hiding the usage-only chunk that the gateway
// asked for on the client's behalf.
// eventSink decides what the client is sent for each upstream event.
type eventSink interface {
	event(ev, out []byte) []byte
	end(out []byte) []byte
}

// releaser is a sink that may hold text back (guardSink): release sends
// it when the stream stops short of its end (the upstream broke off, an
// event was too large), where end, which closes the answer, is not called.
type releaser interface {
	release(out []byte) []byte
}

// release writes what sink holds back, if it holds anything.
func release(w http.ResponseWriter, rc *http.ResponseController, sink eventSink, out []byte) {
	r, ok := sink.(releaser)
	if !ok {
		return
	}
	if tail := r.release(out[:0]); len(tail) > 0 {
		if _, err := w.Write(tail); err == nil {
			_ = rc.Flush()
		}
	}
}

// openAIEvents passes OpenAI events through, reading usage and hiding the
// usage chunk the gateway asked for on the client's behalf.
type openAIEvents struct {
	clientUsage bool
	res         *result
}

func (o openAIEvents) event(ev, out []byte) []byte {
	if observeEvent(ev, o.clientUsage, o.res) {
		return append(out, ev...)
	}
	return out
}

func (o openAIEvents) end(out []byte) []byte { return out }

// translated runs a translate.Stream and copies its usage into the result.
type translated struct {
	s   translate.Stream
	res *result
}

func (t translated) event(ev, out []byte) []byte {
	out = t.s.Event(ev, out)
	t.sync()
	return out
}

func (t translated) end(out []byte) []byte {
	out = t.s.End(out)
	t.sync()
	return out
}

func (t translated) sync() {
	if u, ok := t.s.Usage(); ok {
		t.res.usage = translatedUsage(u)
		t.res.hasUsage = true
	}
	t.res.chunks = t.s.Chunks()
}

func streamEvents(w http.ResponseWriter, resp *http.Response, wd *watchdog, sink eventSink, res *result, maxEvent int, anthropic bool) error {
	rc := http.NewResponseController(w)
	w.WriteHeader(resp.StatusCode)
	hf := flushHeadersLate(rc)
	defer hf.claim()
	sb := streamBufs.Get().(*streamBuf)
	sb.br.Reset(resp.Body)
	br, event, out := sb.br, sb.event[:0], sb.out[:0]
	defer func() {
		sb.br.Reset(nil) // holds no body alive in the pool
		if cap(event) <= 64<<10 && cap(out) <= 64<<10 {
			sb.event, sb.out = event[:0], out[:0]
		} else {
			sb.event, sb.out = nil, nil
		}
		streamBufs.Put(sb)
	}()
	for {
		line, err := br.ReadSlice('\n')
		if !hf.claimed {
			if ferr := hf.claim(); ferr != nil {
				res.clientGone = true
				return ferr
			}
		}
		if len(line) > 0 {
			wd.feed()
			if len(event)+len(line) > maxEvent {
				// One event over the bound: end the stream with an error
				// event rather than buffer it.
				release(w, rc, sink, out)
				_, _ = w.Write(streamErrorEvent(out[:0], anthropic, eventTooLargeMessage(maxEvent)))
				_ = rc.Flush()
				return errEventTooLarge{limit: maxEvent}
			}
			event = append(event, line...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // a long line: keep accumulating it
		}
		if (err == nil && isBlankLine(line)) || (err != nil && len(event) > 0) {
			if !res.idSeen {
				res.id, res.idSeen = answerID(event)
			}
			if res.traced {
				res.traceAnswer(event, false)
			}
			res.scanEvent(event)
			out = sink.event(event, out[:0])
			res.scan = eventScan{}
			if len(out) > 0 {
				if _, werr := w.Write(out); werr != nil {
					res.clientGone = true
					return werr
				}
			}
			event = event[:0]
			if err := flushWhenIdle(br, rc); err != nil {
				res.clientGone = true
				return err
			}
		}
		if err != nil {
			if err == io.EOF {
				if tail := sink.end(out[:0]); len(tail) > 0 {
					if _, werr := w.Write(tail); werr != nil {
						res.clientGone = true
						return werr
					}
					_ = rc.Flush()
				}
				return nil
			}
			release(w, rc, sink, out)
			return err
		}
	}
}

// headerFlushDelay is how long a stream's headers wait for its first
// event before they are sent on their own.
const headerFlushDelay = 5 * time.Millisecond

// lateHeaders sends a stream's headers on their own only when its first
// event is late. An upstream's headers and first event usually arrive
// together; flushing the headers as soon as they were written cost a write
// system call per stream that the first event's flush, which carries them
// anyway, makes redundant. When the first event is not read within
// headerFlushDelay (a model that thinks before its first token), a timer
// flushes them, so that the client still has its status and headers
// without waiting for the first token.
//
// The timer's flush runs on its own goroutine while the stream's is
// blocked reading the upstream, which is the only time the two overlap:
// the stream claims the writer back (claim) before it touches it again,
// and the mutex orders the two.
type lateHeaders struct {
	mu      sync.Mutex
	sent    bool  // the headers' flush is done or no longer the timer's to do
	err     error // the timer's flush failed: the client is gone
	rc      *http.ResponseController
	timer   *time.Timer
	claimed bool // the stream's goroutine's alone
}

func flushHeadersLate(rc *http.ResponseController) *lateHeaders {
	h := &lateHeaders{rc: rc}
	h.timer = time.AfterFunc(headerFlushDelay, h.flush)
	return h
}

func (h *lateHeaders) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.sent {
		h.sent = true
		h.err = h.rc.Flush()
	}
}

// claim takes the writer back from the timer: after it, the stream's own
// writes and flushes carry the headers if the timer has not sent them. It
// returns the error of the timer's flush, if it made one that failed.
func (h *lateHeaders) claim() error {
	if h.claimed {
		return nil
	}
	h.claimed = true
	h.timer.Stop()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sent = true
	return h.err
}

// streamBuf is a stream's reader and event buffers, recycled: a 16 KiB
// reader per stream was the stream path's largest allocation. Nothing
// keeps a slice of them once streamEvents returns (every event and output
// is written or copied before the next is read).
type streamBuf struct {
	br         *bufio.Reader
	event, out []byte
}

var streamBufs = sync.Pool{New: func() any { return &streamBuf{br: bufio.NewReaderSize(nil, 16<<10)} }}

// flushWhenIdle is the streaming flush policy, and the only place it lives:
// events are flushed as soon as the upstream has nothing more buffered, so a
// burst of events costs one flush and a lone event is never held back.
func flushWhenIdle(br *bufio.Reader, rc *http.ResponseController) error {
	if br.Buffered() > 0 {
		return nil
	}
	return rc.Flush()
}

// nextData returns the JSON object of the next data line of the SSE text b
// ([DONE], keep-alives and other lines are skipped) and the text after
// it; ok is false when b holds no more.
func nextData(b []byte) (data, rest []byte, ok bool) {
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		d, found := bytes.CutPrefix(line, []byte("data:"))
		if !found {
			continue
		}
		if d = bytes.TrimSpace(d); len(d) > 0 && d[0] == '{' {
			return d, b, true
		}
	}
	return nil, nil, false
}

// observeEvent reads usage from one SSE event and reports whether the event
// is to be passed on to the client.
// streamEndMarks are what an upstream's last events carry, per protocol:
// OpenAI's [DONE] and a non-null finish_reason, Anthropic's message_stop,
// Gemini's finishReason, Bedrock's messageStop, Cohere's message-end and
// stream-end, the Responses API's response.completed.
var streamEndMarks = [][]byte{[]byte("[DONE]"), []byte("message_stop"),
	[]byte(`"finishReason"`), []byte("messageStop"), []byte("message-end"), []byte("stream-end"), []byte("response.completed")}

// streamEnd reports whether an upstream event is (or carries) the end of
// its stream.
//
// An event with a "finish_reason" member is an OpenAI-shaped chunk (or
// Cohere's message-end, whose finish_reason is a string): it is the end
// when that member is a string, and the other protocols' marks are not
// looked for in it. Every chunk of an OpenAI stream has the member, null
// until the last, so the common event costs one scan rather than eight; a
// chunk whose text merely spells one of the marks no longer counts as the
// end.
func streamEnd(event []byte) bool {
	if found, isString := finishReason(event); found {
		return isString
	}
	for _, m := range streamEndMarks {
		if bytes.Contains(event, m) {
			return true
		}
	}
	return false
}

// hasFinishReason reports whether b holds a "finish_reason" member whose
// value is a string (not null), with or without spaces around the colon.
func hasFinishReason(b []byte) bool {
	_, isString := finishReason(b)
	return isString
}

// finishReason reports whether b holds a "finish_reason" member (found)
// and whether one of them has a string value (isString).
func finishReason(b []byte) (found, isString bool) {
	key := []byte(`"finish_reason"`)
	for {
		i := bytes.Index(b, key)
		if i < 0 {
			return found, false
		}
		b = bytes.TrimLeft(b[i+len(key):], " \t")
		if len(b) > 0 && b[0] == ':' {
			found = true
			if v := bytes.TrimLeft(b[1:], " \t"); len(v) > 0 && v[0] == '"' {
				return true, true
			}
		}
	}
}

func observeEvent(event []byte, clientUsage bool, res *result) bool {
	if sc := &res.scan; sc.event != nil && len(sc.event) == len(event) && &sc.event[0] == &event[0] {
		// streamEvents scanned this event, a single data line, already.
		return observeData(sc.data, &sc.chunk, clientUsage, res)
	}
	for data, rest, ok := nextData(event); ok; data, rest, ok = nextData(rest) {
		c := scanChunk(data)
		if !observeData(data, &c, clientUsage, res) {
			return false
		}
	}
	return true
}

// observeData books one data line of an event from its scan c, and
// reports whether the event may still be passed on.
func observeData(data []byte, c *chunkScan, clientUsage bool, res *result) bool {
	if res.wantServed && res.served == "" {
		res.served = modelOf(data)
	}
	if !c.usage {
		res.chunks++
		res.text += c.text
		return true
	}
	u, onlyUsage, ok := usageFromChunk(data)
	if ok {
		res.usage, res.hasUsage = u, true
	}
	if onlyUsage && !clientUsage {
		return false
	}
	if !onlyUsage {
		res.chunks++
	}
	return true
}

// scanEvent reads whether event ends the stream (streamEnd) and, when it
// is a single data line, keeps its scan in res.scan for the sink: one
// scan serves both. The caller clears res.scan once the sink has the
// event.
func (res *result) scanEvent(event []byte) {
	if data, ok := oneData(event); ok {
		res.scan = eventScan{event: event, data: data, chunk: scanChunk(data)}
		if !res.ended {
			res.ended = res.scan.chunk.ended(data)
		}
	} else if !res.ended {
		res.ended = streamEnd(event)
	}
}

// eventScan is streamEvents' scan of the event it is handling, when that
// event is one data line and nothing else (oneData): the sink's
// observeEvent uses it rather than scanning the event again. event is nil
// between events.
type eventScan struct {
	event, data []byte
	chunk       chunkScan
}

// oneData returns the JSON of an event that is a single "data:" line
// holding an object, followed by nothing but line ends: what nextData
// returns first, with nothing after it. For such an event, streamEnd of
// the event and of the JSON agree (what is around the JSON is "data:",
// white space and line ends, which no end mark contains and a
// finish_reason's colon is not), and observeEvent reads only the JSON.
func oneData(event []byte) ([]byte, bool) {
	line, rest, _ := bytes.Cut(event, []byte{'\n'})
	d, found := bytes.CutPrefix(line, []byte("data:"))
	if !found {
		return nil, false
	}
	if d = bytes.TrimSpace(d); len(d) == 0 || d[0] != '{' {
		return nil, false
	}
	for _, b := range rest {
		if b != '\n' && b != '\r' {
			return nil, false
		}
	}
	return d, true
}

// chunkScan is what one pass over a chunk's quotes finds: all that the
// stream path asks of a chunk, with the results of the searches it
// replaces (bytes.Contains for "usage", finishReason, generatedBytes'
// search for `":"`), byte for byte, on any input (TestChunkScanDiffers).
type chunkScan struct {
	usage    bool  // the chunk holds `"usage"`
	frFound  bool  // finishReason's found
	frString bool  // finishReason's isString
	text     int64 // generatedBytes
}

// ended is streamEnd of the chunk.
func (c *chunkScan) ended(data []byte) bool {
	if c.frFound {
		return c.frString
	}
	for _, m := range streamEndMarks {
		if bytes.Contains(data, m) {
			return true
		}
	}
	return false
}

// scanChunk makes the chunk's scan. Every string the searches look for
// begins with a quote, so it visits the chunk's quotes, each once, and
// checks at each the three searches' patterns, resuming each search where
// the old one would: finishReason after the member name it matched,
// generatedBytes at the quote that ends the value it measured (the first
// quote after the value's start not escaped by an odd run of backslashes,
// or the chunk's end). The quotes are found eight bytes at a time: they are
// a few bytes apart in a chunk, too close for a bytes.IndexByte call per
// quote to pay.
func scanChunk(data []byte) (c chunkScan) {
	st := chunkState{valStart: -1}
	i := 0
	for ; i+8 <= len(data); i += 8 {
		// The quotes among the next eight bytes, one high bit each: x's
		// byte is 0 where data's is '"', and the sum carries into the
		// high bit of every other byte.
		x := binary.LittleEndian.Uint64(data[i:]) ^ 0x2222222222222222
		m := ^((x&0x7f7f7f7f7f7f7f7f + 0x7f7f7f7f7f7f7f7f) | x | 0x7f7f7f7f7f7f7f7f)
		for ; m != 0; m &= m - 1 {
			st.quote(data, i+bits.TrailingZeros64(m)>>3, &c)
		}
	}
	for ; i < len(data); i++ {
		if data[i] == '"' {
			st.quote(data, i, &c)
		}
	}
	if st.valStart >= 0 && st.valCounts {
		c.text += int64(len(data) - st.valStart)
	}
	return c
}

// chunkState is where scanChunk's three searches stand.
type chunkState struct {
	frFrom, genFrom int  // finishReason's and generatedBytes' searches resume here
	frDone          bool // finishReason found a string value: it is done
	valStart        int  // a value generatedBytes measures is open from here (-1: none)
	valCounts       bool // and its member is one of generatedKeys
}

// quote checks the searches' patterns at the quote data[q].
func (st *chunkState) quote(data []byte, q int, c *chunkScan) {
	if st.valStart >= 0 && q >= st.valStart {
		bs := 0
		for k := q - 1; k >= st.valStart && data[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			if st.valCounts {
				c.text += int64(q - st.valStart)
			}
			st.valStart, st.genFrom = -1, q
		}
	}
	if q+2 >= len(data) {
		return
	}
	switch data[q+1] {
	case 'u':
		if !c.usage && bytes.HasPrefix(data[q:], []byte(`"usage"`)) {
			c.usage = true
		}
	case 'f':
		if !st.frDone && q >= st.frFrom && bytes.HasPrefix(data[q:], []byte(`"finish_reason"`)) {
			st.frFrom = q + len(`"finish_reason"`)
			if b := bytes.TrimLeft(data[st.frFrom:], " \t"); len(b) > 0 && b[0] == ':' {
				c.frFound = true
				if v := bytes.TrimLeft(b[1:], " \t"); len(v) > 0 && v[0] == '"' {
					c.frString, st.frDone = true, true
				}
			}
		}
	case ':':
		if st.valStart < 0 && q >= st.genFrom && data[q+2] == '"' {
			st.valStart, st.valCounts = q+3, generatedKey(data[:q])
		}
	}
}

// generatedKey reports whether the text before a `":"` ends with one of
// generatedKeys.
func generatedKey(key []byte) bool {
	if n := len(key); n == 0 || (key[n-1] != 't' && key[n-1] != 's') {
		return false
	}
	for _, k := range generatedKeys {
		if bytes.HasSuffix(key, []byte(k)) {
			return true
		}
	}
	return false
}

// generatedKeys name the string members of a stream chunk that carry
// generated text: message content, completion text, tool-call arguments,
// reasoning.
var generatedKeys = []string{`"content`, `"text`, `"arguments`, `"reasoning_content`}

// generatedBytes is the length of the generated text in one chunk, as
// escaped JSON (a close enough measure for an estimate): the text of each
// string member named in generatedKeys, found without decoding the chunk
// (a member counts when its name's closing quote, the colon and the
// value's opening quote are adjacent, `":"`).
func generatedBytes(data []byte) int64 {
	return scanChunk(data).text
}

func isBlankLine(line []byte) bool {
	return len(line) == 1 || (len(line) == 2 && line[0] == '\r')
}

func isEventStream(h http.Header) bool {
	return strings.HasPrefix(contentType(h), "text/event-stream")
}

// contentType is h.Get("Content-Type") without canonicalising the name
// again: the key is canonical, as net/http keeps it.
func contentType(h http.Header) string {
	if v := h["Content-Type"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// hopHeaders are not forwarded from the upstream's response. Nor is its
// Date: the answer's Date is the gateway's, written by net/http when the
// handler set none (nginx's proxy does the same by default). Left out of
// the handler's map, it costs nothing there: a governed answer's map then
// stays within 28 entries, the most a 32-slot table holds, instead of
// growing to 64 slots on the 29th (docs/performance.md, datehdr).
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Content-Length": true, "Date": true,
}

// copyHeader copies the upstream's response headers, except hop-by-hop
// ones, rate-limit headers the gateway set itself (the client's limits are
// the gateway's, not the provider account's), and any x-tollgate-* or
// x-litellm-* header: those names speak for this call, and an upstream that
// is itself a Tollgate or a LiteLLM proxy describes its own.
func copyHeader(dst, src http.Header) {
	for k, v := range src {
		if hopHeaders[k] || strings.HasPrefix(k, "X-Tollgate-") || strings.HasPrefix(k, "X-Litellm-") {
			continue
		}
		if strings.HasPrefix(k, "X-Ratelimit-") && dst[k] != nil {
			continue
		}
		dst[k] = v
	}
}
