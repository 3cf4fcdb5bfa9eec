package gateway

import (
	"bytes"

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
type guardSink struct {
	inner     eventSink
	c         *call
	anthropic bool
	tail      []byte // the last guardWindow bytes of text passed
	blocked   bool
}

// guardStream wraps sink when the call has post_call guardrails or
// placeholders to map back.
func (c *call) guardStream(sink eventSink, anthropic bool) eventSink {
	cg := c.guard
	if cg == nil || (!cg.post && len(cg.restore) == 0) {
		return sink
	}
	return &guardSink{inner: sink, c: c, anthropic: anthropic}
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
	start := len(out)
	out = g.inner.end(out)
	if g.blocked {
		return out[:start]
	}
	return g.check(out, start)
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
	for rest := out[start:]; len(rest) > 0; {
		line, next, _ := bytes.Cut(rest, []byte{'\n'})
		rest = next
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		data = bytes.TrimSpace(data)
		if !ok || len(data) == 0 || data[0] != '{' {
			rewritten = append(append(rewritten, line...), '\n')
			continue
		}
		spans := guardrail.Texts(data)
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
			window := make([]string, len(texts))
			copy(window, texts)
			window[0] = string(g.tail) + window[0]
			in := g.c.guardInputOf(nil, true)
			in.Texts = window
			res := guardrail.Run(g.c.r.Context(), cg.run, guardrail.PostCall, in)
			if res.Blocked != nil {
				g.c.guardOutcomes(res.Outcomes)
				g.blocked = true
				return g.errorEvent(out[:start], res)
			}
			if res.Texts != nil {
				// Masks apply to this event's own text; what the window
				// added before it was already sent.
				masked := res.Texts[0]
				if len(masked) >= len(g.tail) && masked[:len(g.tail)] == string(g.tail) {
					res.Texts[0] = masked[len(g.tail):]
					copy(texts, res.Texts)
				} else {
					// A finding straddles the window and this event: its
					// start was sent. The event's own text is masked
					// alone, so that what is whole in it never goes out.
					in.Texts = append([]string(nil), texts...)
					own := guardrail.Run(g.c.r.Context(), cg.run, guardrail.PostCall, in)
					if own.Blocked != nil {
						g.c.guardOutcomes(own.Outcomes)
						g.blocked = true
						return g.errorEvent(out[:start], own)
					}
					if own.Texts != nil {
						copy(texts, own.Texts)
					}
				}
			}
			for _, t := range texts {
				g.tail = append(g.tail, t...)
			}
			if n := len(g.tail); n > guardWindow {
				g.tail = append(g.tail[:0], g.tail[n-guardWindow:]...)
			}
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
