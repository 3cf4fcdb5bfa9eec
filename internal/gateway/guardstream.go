package gateway

import (
	"bytes"
	"encoding/json"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/guardrail"
	"github.com/tollgate/tollgate/internal/jsonbody"
)

// guardWindow is how much of the streamed text before an event the
// post_call guardrails see again with it, so that a finding split across
// chunk boundaries is still whole in one check.
const guardWindow = 256

// guardSink checks a stream's text as it passes: each event's text, with
// the last guardWindow bytes before it, goes through the post_call
// guardrails. A block replaces the event with an error event and drops
// the rest of the stream, while the upstream is still read to its end so
// that its usage is booked. output_parse_pii placeholders, and post_call
// masks, are applied within each event's text.
//
// When a post_call guardrail masks, the end of an event's text that could
// be the start of a finding still in progress (guardrail.Pending: an
// e-mail address up to its '@', the first groups of a card number, a key
// prefix; never ordinary words) is held back, at most
// guardrail.MaxPending bytes, and checked with the next event's text, so
// that a finding split across events is masked whole before any of it is
// sent. The held text goes out with the next event of the same kind (its
// text put first), or in an event of its own, the last that held text,
// before any other event (a ping aside: isPing), at the stream's end (also when the upstream
// breaks off or sends an event too large: release), and before the error
// event of a block.
type guardSink struct {
	inner     eventSink
	c         *call
	anthropic bool
	blocked   bool
	hold      bool // some post_call guardrail may hold text back

	// slots are the texts in progress, one per choice (OpenAI, n > 1) or
	// content block (Anthropic): each has its own window and held text,
	// so that another choice's events between the parts of a finding
	// neither send its held start nor come into its window.
	slots []*guardSlot
}

// guardSlot is one choice's (or block's) stream state.
type guardSlot struct {
	id   int    // the choice or block index; -1: the events that name none
	tail []byte // the last guardWindow bytes of text passed

	// held is text kept back; heldData is the event's data it came from
	// (a template for sending it alone: its one text span heldSpan),
	// heldHead the "event:" lines before that data.
	held     string
	heldData []byte
	heldSpan guardrail.Span
	heldHead []byte
}

// slot returns the state of choice (or block) id, made on first use.
func (g *guardSink) slot(id int) *guardSlot {
	for _, s := range g.slots {
		if s.id == id {
			return s
		}
	}
	s := &guardSlot{id: id}
	g.slots = append(g.slots, s)
	return s
}

// eventIndex is the first "index" number in data, the choice of an OpenAI
// chat or completion chunk (`"choices":[{"index":1,...`) or the block of
// an Anthropic event (`"index":0`); -1 when there is none.
func eventIndex(data []byte) int {
	i := bytes.Index(data, []byte(`"index":`))
	if i < 0 {
		return -1
	}
	n, digits := 0, 0
	for j := i + len(`"index":`); j < len(data) && data[j] >= '0' && data[j] <= '9' && digits < 6; j++ {
		n, digits = n*10+int(data[j]-'0'), digits+1
	}
	if digits == 0 {
		return -1
	}
	return n
}

// anyHeld reports whether some slot holds text back.
func (g *guardSink) anyHeld() bool {
	for _, s := range g.slots {
		if s.held != "" {
			return true
		}
	}
	return false
}

// flushAll sends the held text of every slot, each in an event of its own;
// ok is false when a guardrail blocked one, and out then ends with the
// error event.
func (g *guardSink) flushAll(out []byte) ([]byte, bool) {
	for _, s := range g.slots {
		if s.held == "" {
			continue
		}
		var ok bool
		if out, ok = g.flush(s, out); !ok {
			return out, false
		}
	}
	return out, true
}

// guardStream wraps sink when the call has post_call guardrails or
// placeholders to map back.
func (c *call) guardStream(sink eventSink, anthropic bool) eventSink {
	cg := c.guard
	if cg == nil || (!cg.post && len(cg.restore) == 0) {
		return sink
	}
	return &guardSink{inner: sink, c: c, anthropic: anthropic, hold: cg.post && guardrail.Holds(cg.run)}
}

func (g *guardSink) event(ev, out []byte) []byte {
	start := len(out)
	out = g.inner.event(ev, out)
	if g.blocked {
		return out[:start] // the client has had its error event
	}
	return g.check(out, start)
}

func (g *guardSink) end(out []byte) []byte {
	if !g.blocked {
		var ok bool
		if out, ok = g.flushAll(out); !ok {
			return out
		}
	}
	start := len(out)
	out = g.inner.end(out)
	if g.blocked {
		return out[:start]
	}
	return g.check(out, start)
}

// release sends the held text (checked) when the stream stops short of
// its end: what the upstream produced before it broke off reaches the
// client, as it would have unheld.
func (g *guardSink) release(out []byte) []byte {
	if !g.blocked {
		out, _ = g.flushAll(out)
	}
	return out
}

// flush appends the held text to out in an event of its own, checked (and
// masked) with the window before it; ok is false when a guardrail blocked
// it, and out then ends with the error event.
func (g *guardSink) flush(sl *guardSlot, out []byte) ([]byte, bool) {
	text := sl.held
	sl.held = ""
	res, texts := g.checkTexts(sl, []string{text})
	if res.Blocked != nil {
		g.c.guardOutcomes(res.Outcomes)
		g.blocked = true
		return g.errorEvent(out, res), false
	}
	out = append(out, sl.heldHead...)
	out = append(out, "data: "...)
	out = append(out, guardrail.Rewrite(sl.heldData, []guardrail.Span{sl.heldSpan}, texts)...)
	return append(out, "\n\n"...), true
}

// isPing reports whether an event's data is a keep-alive that carries
// nothing (Anthropic's {"type":"ping"}, which a stream "may include any
// number of"): held text waits across it, so that a finding split around
// a ping is still checked whole.
func isPing(data []byte) bool {
	if len(data) > 64 || !bytes.Contains(data, []byte("ping")) {
		return false
	}
	var ev map[string]json.RawMessage
	return json.Unmarshal(data, &ev) == nil && len(ev) == 1 && string(ev["type"]) == `"ping"`
}

// sameSlot reports whether the event data, of one text span sp, carries
// text of the same kind as the held text: everything before its text is
// the held event's (OpenAI's choice and delta, Anthropic's block index).
func (sl *guardSlot) sameSlot(data []byte, sp guardrail.Span) bool {
	return sl.held != "" && bytes.Equal(data[:sp.Start], sl.heldData[:sl.heldSpan.Start])
}

// checkTexts runs the post_call guardrails on texts, the first seen after
// the window, and returns the result and the texts to send: masked within
// texts alone (what the window adds was already sent). The window then
// ends with the texts.
func (g *guardSink) checkTexts(sl *guardSlot, texts []string) (guardrail.Result, []string) {
	cg := g.c.guard
	window := make([]string, len(texts))
	copy(window, texts)
	window[0] = string(sl.tail) + window[0]
	in := g.c.guardInputOf(nil, true)
	in.Texts = window
	res := guardrail.Run(g.c.r.Context(), cg.run, guardrail.PostCall, in)
	if res.Blocked != nil {
		return res, nil
	}
	if res.Texts != nil {
		masked := res.Texts[0]
		if len(masked) >= len(sl.tail) && masked[:len(sl.tail)] == string(sl.tail) {
			res.Texts[0] = masked[len(sl.tail):]
			copy(texts, res.Texts)
		} else {
			// A finding straddles the window and these texts: its start
			// was sent. The texts are masked alone, so that what is
			// whole in them never goes out.
			in.Texts = append([]string(nil), texts...)
			own := guardrail.Run(g.c.r.Context(), cg.run, guardrail.PostCall, in)
			if own.Blocked != nil {
				return own, nil
			}
			if own.Texts != nil {
				copy(texts, own.Texts)
			}
		}
	}
	for _, t := range texts {
		sl.tail = append(sl.tail, t...)
	}
	if n := len(sl.tail); n > guardWindow {
		sl.tail = append(sl.tail[:0], sl.tail[n-guardWindow:]...)
	}
	return res, texts
}

// check runs the guardrails on the text of out[start:] (the client's
// bytes for one upstream event) and returns out, rewritten or replaced.
func (g *guardSink) check(out []byte, start int) []byte {
	if len(out) == start {
		return out
	}
	cg := g.c.guard
	var rewritten []byte
	changed := false
	evStart := 0 // where the SSE event of the line being read starts in rewritten
	for rest := out[start:]; len(rest) > 0; {
		line, next, _ := bytes.Cut(rest, []byte{'\n'})
		rest = next
		if len(bytes.TrimSpace(line)) == 0 {
			rewritten = append(append(rewritten, line...), '\n')
			evStart = len(rewritten)
			continue
		}
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		data = bytes.TrimSpace(data)
		if !ok {
			rewritten = append(append(rewritten, line...), '\n')
			continue
		}
		var spans []guardrail.Span
		if len(data) > 0 && data[0] == '{' {
			spans = guardrail.Texts(data)
		}
		// The event's slot: its choice (or block) when it names one,
		// else the one of events that name none. The first "index"
		// member is the choice's in OpenAI's chunks (a tool call's comes
		// after it) and the block's in Anthropic's events; a text's own
		// quotes are escaped, so none is read inside a text.
		id := eventIndex(data)
		sl := g.slot(id)
		if g.anyHeld() && !isPing(data) {
			// Held text of another kind goes out first, in an event of
			// its own before this one: this slot's when this event is of
			// another kind, every slot's when it names no choice or
			// carries several texts. Another choice's held text waits
			// for its choice's next event.
			var flushed []byte
			ok := true
			mergeable := g.hold && len(spans) == 1 && sl.sameSlot(data, spans[0])
			if len(spans) > 1 || id < 0 {
				for _, o := range g.slots {
					if o.held != "" && (o != sl || !mergeable) && ok {
						flushed, ok = g.flush(o, flushed)
					}
				}
			} else if sl.held != "" && !mergeable {
				flushed, ok = g.flush(sl, flushed)
			}
			if !ok {
				return append(out[:start], flushed...)
			}
			if len(flushed) > 0 {
				rewritten = append(rewritten[:evStart], append(flushed, rewritten[evStart:]...)...)
				changed = true
			}
		}
		if len(spans) == 0 {
			rewritten = append(append(rewritten, line...), '\n')
			continue
		}
		texts := make([]string, len(spans))
		for i, s := range spans {
			texts[i] = s.Text
		}
		// Placeholders the request's masks made are mapped back first,
		// so that the post_call guardrails check what the client gets
		// and their own masks are never mapped back.
		if len(cg.restore) > 0 {
			texts = restoreAll(texts, cg.restore)
		}
		if cg.post {
			before := sl.held // held text now sent with this event's
			// The Responses API numbers its events (sequence_number): a
			// held text sent in an event of its own would repeat a
			// number, so its events are never held.
			holdNow := g.hold && len(spans) == 1 && !bytes.Contains(data, []byte(`"sequence_number"`))
			if holdNow {
				t := before + texts[0]
				sl.held = ""
				if p := guardrail.Pending(cg.run, t); p > 0 {
					t, sl.held = t[:len(t)-p], t[len(t)-p:]
					sl.heldData, sl.heldSpan = append(sl.heldData[:0], data...), spans[0]
					sl.heldHead = append(sl.heldHead[:0], rewritten[evStart:]...)
				}
				texts[0] = t
			}
			tail := len(sl.tail)
			res, checked := g.checkTexts(sl, texts)
			if res.Blocked != nil {
				g.c.guardOutcomes(res.Outcomes)
				g.blocked = true
				sl.held = ""
				head := out[:start]
				if before != "" {
					// The text held before this event is sent if it
					// passes alone: what was produced before the block
					// reaches the client, as it would have unheld (and
					// so is what other choices hold).
					sl.tail = sl.tail[:min(tail, len(sl.tail))]
					sl.held = before
				}
				var ok bool
				if head, ok = g.flushAll(head); !ok {
					return head
				}
				g.blocked = true
				return g.errorEvent(head, res)
			}
			texts = checked
		}
		nd := guardrail.Rewrite(data, spans, texts)
		if !bytes.Equal(nd, data) {
			changed = true
		}
		rewritten = append(append(append(rewritten, "data: "...), nd...), '\n')
	}
	if !changed {
		return out
	}
	if !bytes.HasSuffix(out, []byte{'\n'}) && bytes.HasSuffix(rewritten, []byte{'\n'}) {
		rewritten = rewritten[:len(rewritten)-1]
	}
	return append(out[:start], rewritten...)
}

// errorEvent ends a stream a guardrail blocked, in the client's dialect,
// with the type and code of the whole answer's error: a policy violation
// (invalid_request_error, guardrail_violation), or a guardrail that could
// not answer and fails closed (guardrail_unavailable).
func (g *guardSink) errorEvent(out []byte, res guardrail.Result) []byte {
	e := apierror.From(guardError(res))
	msg := jsonbody.Quote(e.Message)
	if g.anthropic {
		typ := "invalid_request_error"
		if res.Unavailable {
			typ = "overloaded_error" // Anthropic's type of a 503, as the whole answer's
		}
		out = append(out, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\""+typ+"\",\"message\":"...)
		out = append(out, msg...)
		return append(out, "}}\n\n"...)
	}
	out = append(out, `data: {"error":{"message":`...)
	out = append(out, msg...)
	out = append(out, `,"type":`...)
	out = append(out, jsonbody.Quote(e.Type)...)
	if e.Param != "" {
		out = append(out, `,"param":`...)
		out = append(out, jsonbody.Quote(e.Param)...)
	}
	out = append(out, `,"code":`...)
	out = append(out, jsonbody.Quote(e.Code)...)
	return append(out, "}}\n\n"...)
}
