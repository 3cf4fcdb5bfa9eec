// Package apierror is the one error type every Tollgate handler returns and
// the one place it is rendered, in the OpenAI error shape:
//
//	{"error":{"message":"…","type":"…","param":null,"code":"…"}}
//
// The client message is kept apart from the cause, which is only logged.
package apierror

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Error is an HTTP error with an OpenAI-shaped body.
type Error struct {
	Status  int
	Type    string // invalid_request_error, authentication_error, permission_error, not_found_error, rate_limit_error, budget_exceeded, api_error, timeout_error
	Code    string // machine-readable code; defaults to the status text form
	Param   string // offending field, when there is one
	Message string // safe to show the client

	RetryAfter time.Duration     // sets Retry-After when > 0
	Header     map[string]string // extra response headers (x-ratelimit-*)
	Cause      error             // logged, never shown
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Status, e.Type, e.Message, e.Cause)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message)
}

func (e *Error) Unwrap() error { return e.Cause }

func newf(status int, typ, code, format string, args ...any) *Error {
	return &Error{Status: status, Type: typ, Code: code, Message: fmt.Sprintf(format, args...)}
}

// BadRequest is a 400 invalid_request_error naming the offending parameter.
func BadRequest(param, format string, args ...any) *Error {
	e := newf(http.StatusBadRequest, "invalid_request_error", "invalid_request", format, args...)
	e.Param = param
	return e
}

// Unauthorized is a 401 authentication_error.
func Unauthorized(format string, args ...any) *Error {
	return newf(http.StatusUnauthorized, "authentication_error", "invalid_api_key", format, args...)
}

// Forbidden is a 403 permission_error.
func Forbidden(format string, args ...any) *Error {
	return newf(http.StatusForbidden, "permission_error", "forbidden", format, args...)
}

// WithStatus is an error with a status chosen elsewhere (a hook's
// HTTPException): 401 and 403 as Unauthorized and Forbidden, 429
// rate_limit_error, other 4xx invalid_request_error, 5xx api_error. A
// status outside 400–599 is a 401: a refusal is never turned into success.
func WithStatus(status int, format string, args ...any) *Error {
	switch {
	case status == http.StatusUnauthorized || status < 400 || status > 599:
		return Unauthorized(format, args...)
	case status == http.StatusForbidden:
		return Forbidden(format, args...)
	case status == http.StatusTooManyRequests:
		return newf(status, "rate_limit_error", "rate_limit_exceeded", format, args...)
	case status >= 500:
		return newf(status, "api_error", strconv.Itoa(status), format, args...)
	}
	return newf(status, "invalid_request_error", strconv.Itoa(status), format, args...)
}

// NotFound is a 404 not_found_error.
func NotFound(param, format string, args ...any) *Error {
	e := newf(http.StatusNotFound, "not_found_error", "not_found", format, args...)
	e.Param = param
	return e
}

// TooLarge is a 413 for a request body over the configured limit.
func TooLarge(limit int64) *Error {
	return newf(http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
		"request body exceeds the limit of %d bytes (general_settings.max_request_size_mb)", limit)
}

// BodyTimeout is a 408 for a request body that did not arrive in time.
func BodyTimeout(limit time.Duration) *Error {
	return newf(http.StatusRequestTimeout, "invalid_request_error", "request_timeout",
		"the request body did not arrive within %s (general_settings.request_body_timeout)", limit)
}

// RateLimited is a 429 rate_limit_error with Retry-After.
func RateLimited(retryAfter time.Duration, format string, args ...any) *Error {
	e := newf(http.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded", format, args...)
	e.RetryAfter = retryAfter
	return e
}

// BudgetExceeded is the 400 budget_exceeded error LiteLLM clients expect.
func BudgetExceeded(format string, args ...any) *Error {
	return newf(http.StatusBadRequest, "budget_exceeded", "budget_exceeded", format, args...)
}

// BadGateway is a 502 for an upstream that could not be reached or answered nonsense.
func BadGateway(cause error, format string, args ...any) *Error {
	e := newf(http.StatusBadGateway, "api_error", "upstream_error", format, args...)
	e.Cause = cause
	return e
}

// GatewayTimeout is a 504 for an upstream that did not answer in time.
func GatewayTimeout(cause error, format string, args ...any) *Error {
	e := newf(http.StatusGatewayTimeout, "timeout_error", "upstream_timeout", format, args...)
	e.Cause = cause
	return e
}

// Unavailable is a 503, e.g. a store that cannot be reached for an unknown key.
func Unavailable(cause error, format string, args ...any) *Error {
	e := newf(http.StatusServiceUnavailable, "api_error", "service_unavailable", format, args...)
	e.Cause = cause
	return e
}

// Internal is a 500 whose cause is logged and never shown; a cause that is
// a backing service (the database, Redis) not answering in time or not
// reachable is a 503 instead, which a client may retry.
func Internal(cause error) *Error {
	if Unreachable(cause) {
		return Unavailable(cause, "a backing service (database or Redis) is unreachable or did not answer in time; try again")
	}
	e := newf(http.StatusInternalServerError, "api_error", "internal_error", "internal error")
	e.Cause = cause
	return e
}

// Unreachable reports whether err says a dependency did not answer in time
// (a deadline passed) or could not be reached (a network error, a
// connection that broke off).
func Unreachable(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, driver.ErrBadConn)
}

// From converts any error into an *Error: an *Error found in the chain is
// returned as is, anything else becomes a 500.
func From(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Internal(err)
}

type body struct {
	Error bodyError `json:"error"`
}

type bodyError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// Write renders err as JSON with its status and headers. It is the only
// function that writes an error response.
func Write(w http.ResponseWriter, err error) *Error {
	e := From(err)
	h := w.Header()
	for k, v := range e.Header {
		h.Set(k, v)
	}
	if e.RetryAfter > 0 {
		secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	h.Set("Content-Type", "application/json")
	h.Del("Content-Length")
	b := body{Error: bodyError{Message: e.Message, Type: e.Type, Code: e.Code}}
	if e.Code == "" {
		b.Error.Code = strconv.Itoa(e.Status)
	}
	if e.Param != "" {
		b.Error.Param = &e.Param
	}
	out, _ := json.Marshal(b)
	w.WriteHeader(e.Status)
	_, _ = w.Write(out)
	return e
}

// anthropicTypes are Anthropic's error types by status.
var anthropicTypes = map[int]string{400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
	404: "not_found_error", 408: "invalid_request_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error"}

// WriteAnthropic renders err in the Anthropic Messages API's error shape,
// {"type":"error","error":{"type","message"}}, for /v1/messages clients.
func WriteAnthropic(w http.ResponseWriter, err error) *Error {
	e := From(err)
	h := w.Header()
	for k, v := range e.Header {
		h.Set(k, v)
	}
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10))
	}
	h.Set("Content-Type", "application/json")
	h.Del("Content-Length")
	typ, ok := anthropicTypes[e.Status]
	if !ok {
		typ = "api_error"
		if e.Status < 500 {
			typ = "invalid_request_error"
		}
	}
	out, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": e.Message}})
	w.WriteHeader(e.Status)
	_, _ = w.Write(out)
	return e
}

// AnthropicHandler is Handler with errors in Anthropic's shape.
func AnthropicHandler(log *slog.Logger, h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				recovered(log, w, r, v, true)
			}
		}()
		err := h(w, r)
		if err == nil || errors.Is(err, ErrResponded) {
			return
		}
		e := WriteAnthropic(w, err)
		if e.Status >= 500 {
			log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", e.Status, "err", e.Error())
		}
	})
}

// HandlerFunc is an HTTP handler that returns its error instead of writing it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// ErrResponded is returned by a handler that wrote its own response (an
// upstream error passed through, a stream cut short): nothing more is written.
var ErrResponded = errors.New("response already written")

// Handler adapts h so that its returned error is rendered once, here.
// Server-side failures (5xx) are logged with their cause, and a panic in h
// is a logged 500 (see Recover).
func Handler(log *slog.Logger, h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				recovered(log, w, r, v, false)
			}
		}()
		err := h(w, r)
		if err == nil || errors.Is(err, ErrResponded) {
			return
		}
		e := Write(w, err)
		if e.Status >= 500 {
			log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", e.Status, "err", e.Error())
		}
	})
}
