package gateway

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/store"
)

// A call that reached an upstream and ended without an answer - the
// upstream's error after retries and fallbacks, a timeout, a connection
// error, a client that left before anything was booked - writes one spend
// row, as LiteLLM does: status failure (an HTTP status of 400 and up), no
// cost, and LiteLLM's error_information. Requests refused before any
// upstream call write none (docs/spend-and-limits.md).

// maxErrorMessage bounds a row's error_message.
const maxErrorMessage = 512

// forwarding marks the call's hold as sent upstream: from here on a
// failure writes a row.
func (c *call) forwarding() {
	if ch, ok := c.hold.(*charge); ok {
		ch.forwarded = true
	}
}

// failRow queues the failure row of a call whose last hold, ch, was
// released with nothing booked.
func (ch *charge) failRow(status int, info *store.ErrorInformation) {
	if ch.m.NoErrorRows {
		return
	}
	l := ch.log
	l.Status, l.ErrorInformation = status, info
	ch.enqueue(&l)
}

// failureInfo is why the call ended with status: the error that ended it
// (err, when not a response already written), or the upstream's failure
// passed on to the client (c.upstreamErr), or the client leaving. Only the
// gateway's own messages and the upstream's error type and code go into
// it: never the upstream's message, which may quote the prompt.
func (c *call) failureInfo(status int, err error) *store.ErrorInformation {
	info := &store.ErrorInformation{ErrorCode: strconv.Itoa(status)}
	if t := c.target; t != nil {
		info.LLMProvider = t.D.Provider
	}
	switch {
	case c.res.clientGone:
		info.ErrorClass = "client_disconnected" // as in the callbacks' payload (logged.go)
		info.ErrorMessage = "the client disconnected before an answer was booked"
	case err != nil && !errors.Is(err, errResponded):
		e := apierror.From(err)
		info.ErrorClass, info.ErrorMessage = errorClass(status, e.Type, e.Code, []byte(err.Error())), e.Message
	default:
		info.ErrorClass = errorClass(status, "", "", c.upstreamErr)
		msg := "upstream answered " + strconv.Itoa(status)
		if c.target != nil {
			msg = "deployment " + c.target.D.ID + " answered " + strconv.Itoa(status)
		}
		if typ, code := upstreamErrorKind(c.upstreamErr); typ != "" || code != "" {
			msg += " (type " + typ + ", code " + code + ")"
		}
		info.ErrorMessage = msg
	}
	info.ErrorMessage = clipBytes(info.ErrorMessage, maxErrorMessage)
	return info
}

// upstreamErrorKind reads the type and code of an OpenAI- or
// Anthropic-shaped error body: short identifiers, kept only when they
// look like one.
func upstreamErrorKind(body []byte) (typ, code string) {
	if len(body) == 0 {
		return "", ""
	}
	var e struct {
		Error struct {
			Type string          `json:"type"`
			Code json.RawMessage `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return "", ""
	}
	var s string
	if json.Unmarshal(e.Error.Code, &s) != nil {
		s = string(e.Error.Code) // a number, or nothing
	}
	return identifier(e.Error.Type), identifier(s)
}

// identifier is s when it is a short identifier ([A-Za-z0-9_.-], at most
// 64 bytes), else "".
func identifier(s string) string {
	if len(s) > 64 || s == "null" {
		return ""
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '.' || b == '-') {
			return ""
		}
	}
	return s
}
