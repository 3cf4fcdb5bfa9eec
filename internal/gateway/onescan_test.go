package gateway

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/usage"
)

// The reference: the stream path's chunk searches as they were before
// scanChunk (main 9dfc1d0), copied unchanged but for their names.

func refObserveEvent(event []byte, clientUsage bool, res *result) bool {
	for data, rest, ok := nextData(event); ok; data, rest, ok = nextData(rest) {
		if res.wantServed && res.served == "" {
			res.served = modelOf(data)
		}
		if !bytes.Contains(data, []byte(`"usage"`)) {
			res.chunks++
			res.text += refGeneratedBytes(data)
			continue
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
	}
	return true
}

func refGeneratedBytes(data []byte) (n int64) {
	sep := []byte(`":"`)
	for rest, at := data, 0; ; {
		i := bytes.Index(rest, sep)
		if i < 0 {
			return n
		}
		key := data[:at+i]
		rest = rest[i+len(sep):]
		at += i + len(sep)
		end := 0
		for end < len(rest) && rest[end] != '"' {
			if rest[end] == '\\' {
				end++
			}
			end++
		}
		end = min(end, len(rest))
		for _, k := range generatedKeys {
			if bytes.HasSuffix(key, []byte(k)) {
				n += int64(end)
				break
			}
		}
		rest = rest[end:]
		at += end
	}
}

func refStreamEnd(event []byte) bool {
	if found, isString := refFinishReason(event); found {
		return isString
	}
	for _, m := range streamEndMarks {
		if bytes.Contains(event, m) {
			return true
		}
	}
	return false
}

func refFinishReason(b []byte) (found, isString bool) {
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

// refOpenAI is nativeMeter.openAI's usage test and content count before.
func refOpenAIContent(m *nativeMeter, data []byte) bool {
	if !bytes.Contains(data, []byte(`"usage"`)) {
		m.chunks++
		m.text += refGeneratedBytes(data)
		return true
	}
	return false
}

// scanCorpus is real-shaped stream events: OpenAI chat (content, tool
// calls, reasoning, refusals, the usage chunk, usage null, [DONE], an
// error), completions, the Responses API, Anthropic's events, Gemini's
// and Cohere's, and odd ones (usage spelled inside content, escaped
// quotes, spaces around colons, CRLF, no space after "data:").
var scanCorpus = []string{
	`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":" \"usage\" said \\\"x\\\\\" \n"},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"usage"},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"[DONE] message_stop \":\""},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n",
	`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason": "length"}],"usage":null}` + "\n\n",
	`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":20,"total_tokens":32,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":3}}}` + "\n\n",
	`data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}` + "\n\n",
	`data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"city\": \"Paris\"}"}}]},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"reasoning_content":"Let me think: \"a\":\"b\""},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"refusal":"no"},"finish_reason":null}]}` + "\r\n\r\n",
	`data:{"id":"cmpl-1","object":"text_completion","choices":[{"text":"once upon","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct"}` + "\n\n",
	`data: {"choices":[{"delta":{"content" : "spaced"}, "finish_reason" : null}]}` + "\n\n",
	"data: [DONE]\n\n",
	"data: [DONE]",
	": keep-alive\n\n",
	`data: {"error":{"message":"overloaded","type":"server_error","code":null}}` + "\n\n",
	"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
	"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":3}}}\n\n",
	"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
	"event: ping\ndata: {\"type\": \"ping\"}\n\n",
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello \\\"world\\\"\"}}\n\n",
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\": \\\"San\"}}\n\n",
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n",
	"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
	"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
	"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
	`data: {"type":"message_stop"}` + "\n\n",
	`data: {"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}` + "\n\n",
	`data: {"type":"response.completed","response":{"id":"resp_1","status":"completed","usage":{"input_tokens":10,"output_tokens":5,"total_tokens":15}}}` + "\n\n",
	`data: {"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":1}}` + "\n\n",
	`data: {"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":3,"output_tokens":2}}}}` + "\n\n",
	`data: {"is_finished":true,"event_type":"stream-end","finish_reason":"COMPLETE"}` + "\n\n",
	`data: {"id":"x","usage":{"prompt_tokens":1,` + "\n\n",
	`data: "usage":{"prompt_tokens":3}}` + "\n\n",
	"data: {\"a\":1}\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
	"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\nevent: message_stop\n\n",
	"data: \t{\"choices\":[{\"finish_reason\"\t:\t\"stop\"}]} \u00a0\r\n\r\n",
	`data: {"finish_reason"finish_reason":"x","content":"a\\":"b\\\\"}` + "\n\n",
	`data: {"content":"abc\`,
}

// scanPieces are what mutations insert: the patterns the searches look
// for, pieces of them, and JSON's and SSE's punctuation.
var scanPieces = []string{`"usage"`, `"usage":null`, `"usage":{"prompt_tokens":2,"completion_tokens":3}`, `"finish_reason"`, `"finish_reason":"stop"`,
	`"finish_reason":null`, ` :`, `":"`, `"content`, `"text`, `"arguments`, `"reasoning_content`, `\`, `\\`, `\"`, `"`, `:`, `{`, `}`, `[`, `]`, `,`,
	" ", "\t", "\n", "\r", "\n\n", "data:", "data: ", "[DONE]", "message_stop", "messageStop", `"finishReason"`, "message-end", "stream-end",
	"response.completed", `"choices":[]`, `"model":"m2"`, "\u00a0", "\x85", "\xff", "u", "e", "t", "s"}

func mutateChunk(r *rand.Rand, b []byte) []byte {
	out := append([]byte(nil), b...)
	for n := 1 + r.IntN(4); n > 0; n-- {
		i := 0
		if len(out) > 0 {
			i = r.IntN(len(out) + 1)
		}
		switch r.IntN(6) {
		case 0, 1: // insert a piece
			p := scanPieces[r.IntN(len(scanPieces))]
			out = append(out[:i], append([]byte(p), out[i:]...)...)
		case 2: // delete a run
			j := min(len(out), i+1+r.IntN(8))
			out = append(out[:i], out[j:]...)
		case 3: // replace a byte
			if i < len(out) {
				out[i] = byte(r.IntN(256))
			}
		case 4: // cut
			out = out[:i]
		default: // splice in part of another chunk
			o := scanCorpus[r.IntN(len(scanCorpus))]
			k := r.IntN(len(o) + 1)
			out = append(out[:i], append([]byte(o[k:]), out[i:]...)...)
		}
	}
	return out
}

// scanInput is the differential tests' next input: a corpus event, a
// mutation of one, or random bytes over a small alphabet or all 256.
func scanInput(r *rand.Rand) []byte {
	switch k := r.IntN(10); {
	case k < 2:
		return []byte(scanCorpus[r.IntN(len(scanCorpus))])
	case k < 8:
		return mutateChunk(r, []byte(scanCorpus[r.IntN(len(scanCorpus))]))
	case k < 9:
		b := make([]byte, r.IntN(64))
		const alpha = "\"\\:{}[], \t\r\nusagecontext_frd"
		for i := range b {
			b[i] = alpha[r.IntN(len(alpha))]
		}
		if r.IntN(2) == 0 {
			b = append([]byte("data: {"), b...)
		}
		return b
	default:
		b := make([]byte, r.IntN(96))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return b
	}
}

func scanInputs() int {
	if raceOn || testing.Short() {
		return 200_000
	}
	return 1_000_000
}

// TestChunkScanDiffers: scanChunk's findings equal the three searches it
// replaced, on real-shaped chunks, their mutations and random bytes.
func TestChunkScanDiffers(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 2))
	for i := range scanInputs() {
		in := scanInput(r)
		for _, b := range [][]byte{in, bytes.TrimSpace(bytes.TrimPrefix(in, []byte("data:")))} {
			c := scanChunk(b)
			found, isString := refFinishReason(b)
			if want := refGeneratedBytes(b); c.text != want || generatedBytes(b) != want {
				t.Fatalf("input %d %q: generated bytes %d, want %d", i, b, c.text, want)
			}
			if want := bytes.Contains(b, []byte(`"usage"`)); c.usage != want {
				t.Fatalf("input %d %q: usage %v, want %v", i, b, c.usage, want)
			}
			if c.frFound != found || c.frString != isString {
				t.Fatalf("input %d %q: finish_reason %v %v, want %v %v", i, b, c.frFound, c.frString, found, isString)
			}
			if got, want := c.ended(b), refStreamEnd(b); got != want {
				t.Fatalf("input %d %q: ended %v, want %v", i, b, got, want)
			}
			var m, ref nativeMeter
			if got, want := m.openAIContentOnly(b), refOpenAIContent(&ref, b); got != want || m.chunks != ref.chunks || m.text != ref.text {
				t.Fatalf("input %d %q: passthrough meter %v %d %d, want %v %d %d", i, b, got, m.chunks, m.text, want, ref.chunks, ref.text)
			}
		}
	}
}

// openAIContentOnly is nativeMeter.openAI for a chunk without usage; it
// reports whether the chunk was one (and counted).
func (m *nativeMeter) openAIContentOnly(data []byte) bool {
	if c := scanChunk(data); !c.usage {
		before := m.chunks
		m.openAI(data)
		return m.chunks == before+1
	}
	return false
}

// booked is what a stream's events leave in its result.
type booked struct {
	usage           usage.Usage
	hasUsage, ended bool
	chunks          int
	text            int64
	served          string
	passed          int
	out             string
}

func bookedOf(res *result, passed int, out []byte) booked {
	return booked{res.usage, res.hasUsage, res.ended, res.chunks, res.text, res.served, passed, string(out)}
}

// TestStreamEventScanDiffers: event by event, streamEvents' scan and the
// sink's observeEvent book and pass on what streamEnd and the old
// observeEvent did, over streams of real-shaped events, mutations and
// random bytes, the state carried from event to event (usage split
// across events, the end seen once, the served model read once).
func TestStreamEventScanDiffers(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 3))
	for s := range scanInputs() / 8 {
		clientUsage, wantServed := r.IntN(2) == 0, r.IntN(2) == 0
		old, cur := result{wantServed: wantServed}, result{wantServed: wantServed}
		var oldOut, curOut []byte
		oldPassed, curPassed := 0, 0
		sink := openAIEvents{clientUsage: clientUsage, res: &cur}
		for range 1 + r.IntN(12) {
			ev := scanInput(r)
			if !old.ended {
				old.ended = refStreamEnd(ev)
			}
			if refObserveEvent(ev, clientUsage, &old) && len(ev) > 0 {
				oldOut = append(oldOut, ev...)
				oldPassed++
			}
			cur.scanEvent(ev)
			n := len(curOut)
			curOut = sink.event(ev, curOut)
			cur.scan = eventScan{}
			if len(curOut) > n {
				curPassed++
			}
			if g, w := bookedOf(&cur, curPassed, curOut), bookedOf(&old, oldPassed, oldOut); g != w {
				t.Fatalf("stream %d, event %q:\n got %+v\nwant %+v", s, ev, g, w)
			}
		}
	}
}

// recordSink records the events streamEvents hands its inner sink.
type recordSink struct {
	inner  eventSink
	events *[][]byte
}

func (s recordSink) event(ev, out []byte) []byte {
	*s.events = append(*s.events, append([]byte(nil), ev...))
	return s.inner.event(ev, out)
}

func (s recordSink) end(out []byte) []byte { return s.inner.end(out) }

// TestStreamEventsScanDiffers: through streamEvents itself (its framing,
// its scan of each event, a sink wrapped as guardrails and capture wrap
// it), a stream's client bytes and booking are the old per-event
// functions' over the same events.
func TestStreamEventsScanDiffers(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 4))
	for s := range scanInputs() / 40 {
		var upstream []byte
		for range 1 + r.IntN(12) {
			upstream = append(upstream, scanInput(r)...)
		}
		clientUsage := r.IntN(2) == 0
		cur := result{wantServed: true}
		var events [][]byte
		w := httptest.NewRecorder()
		resp := &http.Response{StatusCode: 200, Body: io.NopCloser(bytes.NewReader(upstream))}
		wd := newWatchdog(time.Hour, func() {})
		err := streamEvents(w, resp, wd, recordSink{openAIEvents{clientUsage: clientUsage, res: &cur}, &events}, &cur, 1<<20, false)
		wd.stop()
		if err != nil {
			t.Fatalf("stream %d: %v", s, err)
		}
		old := result{wantServed: true}
		var oldOut []byte
		passed := 0
		for _, ev := range events {
			if !old.ended {
				old.ended = refStreamEnd(ev)
			}
			if !old.idSeen {
				old.id, old.idSeen = answerID(ev)
			}
			if refObserveEvent(ev, clientUsage, &old) {
				oldOut = append(oldOut, ev...)
				passed++
			}
		}
		if g, w := bookedOf(&cur, 0, w.Body.Bytes()), bookedOf(&old, 0, oldOut); g != w || cur.id != old.id || cur.scan.event != nil {
			t.Fatalf("stream %q:\n got %+v\nwant %+v", upstream, g, w)
		}
	}
}

// TestStreamEventsScanRealStream: a whole OpenAI stream as the bench's
// mock sends it, through streamEvents: the client's bytes, the usage and
// the estimate's counts are those of the old functions.
func TestStreamEventsScanRealStream(t *testing.T) {
	var upstream []byte
	for _, ev := range sseStream(7) {
		upstream = append(upstream, ev...)
	}
	res := result{}
	w := httptest.NewRecorder()
	resp := &http.Response{StatusCode: 200, Body: io.NopCloser(bytes.NewReader(upstream))}
	wd := newWatchdog(time.Hour, func() {})
	defer wd.stop()
	if err := streamEvents(w, resp, wd, openAIEvents{res: &res}, &res, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	var old result
	var want []byte
	for _, ev := range sseStream(7) {
		if !old.ended {
			old.ended = refStreamEnd(ev)
		}
		if refObserveEvent(ev, false, &old) {
			want = append(want, ev...)
		}
	}
	if !bytes.Equal(w.Body.Bytes(), want) || strings.Contains(w.Body.String(), `"usage"`) {
		t.Fatalf("client got %q, want %q", w.Body.Bytes(), want)
	}
	if bookedOf(&res, 0, nil) != bookedOf(&old, 0, nil) || !res.ended || res.text != int64(len("word0 "))*7 {
		t.Fatalf("booked %+v, want %+v", bookedOf(&res, 0, nil), bookedOf(&old, 0, nil))
	}
}

// BenchmarkChunkScan: the per-event work of a plain streamed request's
// events, old (streamEnd, then observeEvent with its Contains and
// generatedBytes) against new (one scan for both).
func BenchmarkChunkScan(b *testing.B) {
	events := sseStream(7)
	b.Run("old", func(b *testing.B) {
		res := new(result)
		out := make([]byte, 0, 4096)
		for range b.N {
			*res = result{}
			for _, ev := range events {
				if !res.ended {
					res.ended = refStreamEnd(ev)
				}
				if refObserveEvent(ev, false, res) {
					out = append(out[:0], ev...)
				}
			}
		}
	})
	b.Run("new", func(b *testing.B) {
		res := new(result)
		sink := openAIEvents{res: res}
		out := make([]byte, 0, 4096)
		for range b.N {
			*res = result{}
			for _, ev := range events {
				res.scanEvent(ev)
				out = sink.event(ev, out[:0])
				res.scan = eventScan{}
			}
		}
	})
}

// BenchmarkChunkScanContent: one content chunk's searches, old (streamEnd,
// the "usage" test, generatedBytes) against scanChunk.
func BenchmarkChunkScanContent(b *testing.B) {
	ev := sseStream(1)[0]
	data, _ := oneData(ev)
	b.Run("old", func(b *testing.B) {
		for range b.N {
			_ = refStreamEnd(ev)
			if !bytes.Contains(data, []byte(`"usage"`)) {
				_ = refGeneratedBytes(data)
			}
		}
	})
	b.Run("new", func(b *testing.B) {
		for range b.N {
			d, _ := oneData(ev)
			c := scanChunk(d)
			_ = c.ended(d)
		}
	})
}
