package gateway

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/redact"
	"github.com/tollgate/tollgate/internal/store"
)

// ContentLogging says whether what a call asked and answered may leave
// the process, where to, and how it is bounded and masked.
type ContentLogging struct {
	// SpendLogs keeps content with the spend row
	// (general_settings.store_prompts_in_spend_logs).
	SpendLogs bool
	// Off is litellm_settings.turn_off_message_logging: no content
	// anywhere, whatever else is set.
	Off bool
	// MaxBytes bounds each of the two fields (messages, response);
	// DefaultMaxContentBytes when 0.
	MaxBytes int
	// Redactor masks secrets and PII in what is kept; nil masks nothing.
	Redactor *redact.Redactor
	// RedactKeyInfo is litellm_settings.redact_user_api_key_info: the
	// key's hash, alias, user, team and organization stay out of the
	// callback payloads and the spans (the spend rows keep them).
	RedactKeyInfo bool
}

// DefaultMaxContentBytes bounds a captured field unless configured.
const DefaultMaxContentBytes = 64 << 10

// contentPolicy is ContentLogging as the gateway acts on it, decided once
// at construction: when capture is false no call captures anything.
type contentPolicy struct {
	capture   bool // someone consumes content: spend rows, callbacks or the tracer
	spendLogs bool
	// tracing: the request span carries the content (an exporter takes
	// it: Options.TraceContent).
	tracing   bool
	callbacks callback.Publisher // nil: content goes to no callback
	max       int
	red       *redact.Redactor
	noKeyInfo bool // ContentLogging.RedactKeyInfo
}

func newContentPolicy(o ContentLogging, obs Observer, traced bool) contentPolicy {
	var callbacks callback.Publisher
	if t, ok := obs.(*Telemetry); ok && t != nil && t.Callbacks != nil {
		callbacks = t.Callbacks
	}
	p := contentPolicy{spendLogs: o.SpendLogs && !o.Off, max: o.MaxBytes, red: o.Redactor, callbacks: callbacks,
		tracing: traced && !o.Off, noKeyInfo: o.RedactKeyInfo}
	p.capture = !o.Off && (o.SpendLogs || callbacks != nil || p.tracing)
	if p.max <= 0 {
		p.max = DefaultMaxContentBytes
	}
	return p
}

// capture is what one call records of its content: the request's members
// and the answer the client got, raw until finish shapes them.
type capture struct {
	spend   bool   // content goes on the spend rows, which wait for it
	request []byte // the request's messages as JSON
	answer  []byte // a whole answer's body, as the client got it
	stream  *streamAnswer
	// streams: a streamed answer is assembled, because someone may take
	// it (spend rows, or a callback that wants successes); with only
	// failure callbacks a stream is not parsed for content.
	streams bool
	// rows are the spend rows queued while the call ran, held until
	// finish fills them; writer takes them then.
	rows   []store.SpendLog
	writer *ledger.Writer
	// messages and response are the shaped (capped, redacted) content.
	messages, response json.RawMessage
}

// contentMembers are the request members that hold what was asked, per
// client operation.
var contentMembers = map[provider.Op][]string{
	provider.OpChat:        {"messages"},
	provider.OpCompletions: {"prompt"},
	provider.OpEmbeddings:  {"input"},
	provider.OpMessages:    {"system", "messages"},
	provider.OpResponses:   {"instructions", "input"},
}

// startCapture sets c.cap when the call's content is to be kept.
func (c *call) startCapture() {
	if !c.g.content.capture || c.req == nil {
		return
	}
	members, ok := contentMembers[c.op]
	if !ok || !contentAllowed(c) {
		return
	}
	pol := &c.g.content
	if !pol.spendLogs && pol.callbacks == nil && !c.traced() {
		return // only the tracer takes content, and this call is not recorded
	}
	cp := &capture{spend: pol.spendLogs}
	// Streams are assembled only for a consumer that can take a success:
	// spend rows, callbacks that want successes, the tracer's span.
	cp.streams = cp.spend || pol.callbacks != nil && pol.callbacks.Wants(false) || pol.tracing && c.traced()
	var present []string
	for _, m := range members {
		if v := c.req.obj.Get(m); v != nil && string(v) != "null" {
			present = append(present, m)
		}
	}
	switch len(present) {
	case 0:
	case 1:
		cp.request = c.req.obj.Get(present[0])
	default:
		// {"system": ..., "messages": ...}: the members as the client sent them.
		b := []byte{'{'}
		for i, m := range present {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendQuote(b, m)
			b = append(b, ':')
			b = append(b, c.req.obj.Get(m)...)
		}
		cp.request = append(b, '}')
	}
	c.cap = cp
}

// contentAllowed decides whether a call's content may leave the process:
// never with turn_off_message_logging; not when the key or its team turns
// message logging off (metadata.turn_off_message_logging, or a
// metadata.logging entry's callback_vars.turn_off_message_logging), nor
// when the request does (LiteLLM's no-log or turn_off_message_logging in
// the body, its x-litellm-enable-message-redaction header). A request can
// only take content away, never add it.
func contentAllowed(c *call) bool {
	if !c.g.content.capture {
		return false
	}
	if p := c.p; p != nil {
		if k := p.Key; k != nil && metadataTurnsOff(k.Metadata) {
			return false
		}
		if t := p.Team; t != nil && metadataTurnsOff(t.Metadata) {
			return false
		}
	}
	if c.req != nil {
		if c.meta.noLog || rawTrue(c.req.obj.Get("no-log")) || rawTrue(c.req.obj.Get("turn_off_message_logging")) {
			return false
		}
		if c.meta.metadata != nil && isTrue(c.meta.metadata["turn_off_message_logging"]) {
			return false
		}
	}
	if v := c.r.Header.Get("X-Litellm-Enable-Message-Redaction"); v != "" && isTrue(v) {
		return false
	}
	return true
}

// metadataTurnsOff reports whether a key's or team's metadata turns
// message logging off.
func metadataTurnsOff(md map[string]any) bool {
	if md == nil {
		return false
	}
	if isTrue(md["turn_off_message_logging"]) || isTrue(md["no-log"]) {
		return true
	}
	list, _ := md["logging"].([]any)
	for _, e := range list {
		entry, _ := e.(map[string]any)
		vars, _ := entry["callback_vars"].(map[string]any)
		if isTrue(vars["turn_off_message_logging"]) {
			return true
		}
	}
	return false
}

// isTrue accepts true and the strings "true", "True", "1".
func isTrue(v any) bool {
	switch v := v.(type) {
	case bool:
		return v
	case string:
		return strings.EqualFold(v, "true") || v == "1"
	}
	return false
}

// rawTrue is isTrue of a raw JSON value.
func rawTrue(raw []byte) bool {
	switch string(bytes.TrimSpace(raw)) {
	case "true", `"true"`, `"True"`, `"1"`, "1":
		return true
	}
	return false
}

// holdRow keeps a spend row until finish gives it its content.
func (cp *capture) holdRow(l *store.SpendLog, w *ledger.Writer) {
	cp.rows = append(cp.rows, *l)
	cp.writer = w
}

// finishContent shapes what the call captured, once, after the answer was
// written: capped, redacted, and put on the held spend rows, which then
// go to the writer.
func (c *call) finishContent(status int) {
	cp := c.cap
	if cp == nil {
		return
	}
	pol := &c.g.content
	// Shaped only for someone who takes it: a held spend row, or a
	// callback that wants a call that ended so.
	if !(cp.spend && len(cp.rows) > 0) && (pol.callbacks == nil || !pol.callbacks.Wants(status >= 400 || status == 0)) &&
		!(pol.tracing && c.traced()) {
		for _, l := range cp.rows {
			cp.writer.Enqueue(l)
		}
		cp.rows = nil
		return
	}
	cp.messages = pol.shape(cp.request)
	if status > 0 && status < 300 && !c.res.clientGone {
		switch {
		case cp.answer != nil:
			cp.response = pol.shape(cp.answer)
		case cp.stream != nil:
			cp.response = pol.shape(cp.stream.json())
		}
	} else if cp.stream != nil && (status == 499 || c.res.brokeOff != nil) {
		// A client that left, or whose stream the upstream broke off, got
		// part of a stream: that part.
		cp.response = pol.shape(cp.stream.json())
	}
	for i := range cp.rows {
		if cp.spend {
			cp.rows[i].Messages = cp.messages
			if i == len(cp.rows)-1 {
				cp.rows[i].Response = cp.response
			}
		}
		cp.writer.Enqueue(cp.rows[i])
	}
	cp.rows = nil
}

// shape bounds and masks one captured field. A field within the cap keeps
// its JSON with its string values redacted; a longer one becomes a JSON
// string holding the start of its JSON text, its strings decoded and
// redacted, and a marker. Either way the result is valid UTF-8 (a byte that
// is not, which JSON's grammar lets through in strings, becomes U+FFFD):
// PostgreSQL refuses such text, and LiteLLM's consumers expect UTF-8.
func (p *contentPolicy) shape(raw []byte) json.RawMessage {
	if len(raw) == 0 {
		return nil
	}
	if len(raw) <= p.max {
		if p.red == nil && !json.Valid(raw) {
			return redact.Quote(string(raw)) // a relaxed body's member (comments, trailing commas)
		}
		out := p.red.JSON(raw)
		if !utf8.Valid(out) {
			return bytes.ToValidUTF8(out, []byte("\uFFFD"))
		}
		if len(out) > 0 && &out[0] == &raw[0] {
			out = bytes.Clone(out) // raw is the request's or the answer's buffer
		}
		return out
	}
	// Mask a little past the cap, so that no secret cut at the cap leaves
	// its first part behind, then cut. The strings are decoded before they
	// are masked (a key after "\n" or written "\u0073k-..." is found), and
	// a JSON text in a string (tool-call arguments) is walked in turn.
	head := clipBytes(string(raw[:min(len(raw), p.max+512)]), p.max+512)
	text := clipBytes(string(p.red.JSONPrefix([]byte(head))), p.max)
	return redact.Quote(text + " [truncated by Tollgate: " + strconv.Itoa(p.max) + " of " + strconv.Itoa(len(raw)) + " bytes kept]")
}
