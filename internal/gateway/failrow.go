package gateway

import (
	"encoding/json"
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

// endedBy is what ended a failed call, as its spend row (failureInfo)
// and its callbacks' payload (logged.go) both tell it.
type endedBy uint8

const (
	endedByStatus   endedBy = iota // nothing more than the status
	endedByClient                  // the client left (status 499)
	endedByGateway                 // the gateway's own error, c.err
	endedByUpstream                // the upstream's failure passed on, c.upstreamErr
)

// failure is what ended the call with status (400 and up, or 0) and
// LiteLLM's error class for it: one choice for the row and the payload.
// The client leaving wins (finish then reports 499 whatever else
// happened), then the gateway's own error, then the upstream's answer.
func (c *call) failure(status int) (endedBy, string) {
	switch {
	case c.res.clientGone || status == 499:
		return endedByClient, "client_disconnected"
	case c.err != nil:
		e := apierror.From(c.err)
		return endedByGateway, errorClass(status, e.Type, e.Code, c.cause())
	case c.upstreamErr != nil:
		return endedByUpstream, errorClass(status, "", "", c.upstreamErr)
	}
	return endedByStatus, errorClass(status, "", "", nil)
}

// failureInfo is the spend row's account of why the call ended with
// status (failure). Only the gateway's own messages and the upstream's
// error type and code go into it: never the upstream's message, which may
// quote the prompt.
func (c *call) failureInfo(status int) *store.ErrorInformation {
	info := &store.ErrorInformation{ErrorCode: strconv.Itoa(status)}
	if t := c.target; t != nil {
		info.LLMProvider = t.D.Provider
	}
	var why endedBy
	why, info.ErrorClass = c.failure(status)
	switch why {
	case endedByClient:
		info.ErrorMessage = "the client disconnected before an answer was booked"
	case endedByGateway:
		info.ErrorMessage = apierror.From(c.err).Message
	default:
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
