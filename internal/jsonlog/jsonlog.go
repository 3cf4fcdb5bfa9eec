// Package jsonlog is log/slog's JSON handler with a fast path for one hot
// line: a caller that logs the same attributes on every request can append
// them to a pooled buffer itself, in exactly the bytes slog.JSONHandler
// would write, and hand the line to the same writer in one Write.
//
// Handler is an ordinary slog.Handler (slog.NewJSONHandler with default
// options); a logger derived from it with With or WithGroup is plain slog
// again, and callers that find no *Handler under their logger take the
// slog path.
package jsonlog

import (
	"context"
	"io"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Handler writes slog records as JSON (slog.NewJSONHandler(w, nil)) and
// lines built with Begin and Line's appenders, serialised on one mutex so
// that the two kinds never interleave inside a line.
type Handler struct {
	*slog.JSONHandler
	w *lockedWriter
}

// New is a JSON handler writing to w.
func New(w io.Writer) *Handler {
	lw := &lockedWriter{w: w}
	return &Handler{JSONHandler: slog.NewJSONHandler(lw, nil), w: lw}
}

// Of is the *Handler under l, or nil when l's handler is another one.
func Of(l *slog.Logger) *Handler {
	if l == nil {
		return nil
	}
	h, _ := l.Handler().(*Handler)
	return h
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Line is a log line being built; its appenders write what slog's JSON
// handler writes for an attribute of that kind (slog.String, slog.Int64,
// slog.Bool, slog.Float64, slog.Duration).
type Line struct {
	buf []byte
	bad bool // a value slog renders as an error (NaN, ±Inf): log the slow way
}

var lines = sync.Pool{New: func() any { return &Line{buf: make([]byte, 0, 1024)} }}

// Begin starts a line at t with level and message, or returns nil when
// the handler does not log level.
func (h *Handler) Begin(ctx context.Context, t time.Time, level slog.Level, msg string) *Line {
	if !h.Enabled(ctx, level) {
		return nil
	}
	l := lines.Get().(*Line)
	l.buf, l.bad = l.buf[:0], false
	b := append(l.buf, `{"time":`...)
	b = appendTime(b, t)
	b = append(b, `,"level":`...)
	b = appendString(b, level.String())
	b = append(b, `,"msg":`...)
	l.buf = appendString(b, msg)
	return l
}

// Write ends l and writes it; false (nothing written) when a value could
// not be written as slog would, so the caller logs the line through slog.
// l must not be used afterwards.
func (h *Handler) Write(l *Line) bool {
	ok := !l.bad
	if ok {
		l.buf = append(l.buf, "}\n"...)
		_, _ = h.w.Write(l.buf)
	}
	if cap(l.buf) <= 16<<10 {
		lines.Put(l)
	}
	return ok
}

// Key is a line's attribute key, encoded once: the bytes `,"k":` that
// every appender writes before its value, as slog's JSON handler writes
// them. A caller makes its keys with NewKey once (package variables)
// rather than escaping the same keys on every line. The zero Key is not a
// key.
type Key struct{ enc string }

// NewKey is k encoded as slog's JSON handler writes an attribute key.
func NewKey(k string) Key {
	b := appendString([]byte{','}, k)
	return Key{enc: string(append(b, ':'))}
}

func (l *Line) key(k Key) []byte { return append(l.buf, k.enc...) }

// String appends slog.String(k, v).
func (l *Line) String(k Key, v string) { l.buf = appendString(l.key(k), v) }

// Int64 appends slog.Int64(k, v) (and slog.Int).
func (l *Line) Int64(k Key, v int64) { l.buf = strconv.AppendInt(l.key(k), v, 10) }

// Bool appends slog.Bool(k, v).
func (l *Line) Bool(k Key, v bool) { l.buf = strconv.AppendBool(l.key(k), v) }

// Duration appends slog.Duration(k, v): nanoseconds, as json.Marshal.
func (l *Line) Duration(k Key, v time.Duration) {
	l.buf = strconv.AppendInt(l.key(k), int64(v), 10)
}

// Float64 appends slog.Float64(k, v), which slog writes with
// json.Marshal's float format.
func (l *Line) Float64(k Key, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		l.bad = true
		return
	}
	l.buf = appendFloat(l.key(k), v)
}

// appendTime is slog's JSON time: RFC 3339 with nanoseconds, the
// monotonic reading dropped. Years outside 0–9999 are left to slog.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.Round(0).AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendFloat is encoding/json's float64 encoding (floatEncoder).
func appendFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	fmt := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		fmt = 'e'
	}
	b = strconv.AppendFloat(b, f, fmt, -1, 64)
	if fmt == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hex = "0123456789abcdef"

// load8 is the eight bytes of s at i as a little-endian word (one load).
func load8(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// plain8 reports whether each of the eight bytes in x is ASCII that a JSON
// string holds as it is: none is 0x80 or above, a control byte, a quote or
// a backslash (the classic tests for a zero byte and for a byte below n,
// on all eight at once; exact as a yes or no).
func plain8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q, bs := x^(ones*'"'), x^(ones*'\\')
	return ((q-ones)&^q|(bs-ones)&^bs|(x-ones*0x20)&^x|x)&highs == 0
}

// appendString is slog's JSON string (appendEscapedJSONString): quotes,
// backslashes and control characters escaped, invalid UTF-8 as \ufffd,
// U+2028 and U+2029 escaped, HTML characters as they are.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		// Eight bytes at a time while all are ASCII that stands as it is
		// (the per-byte path below would only step over them).
		for i+8 <= len(s) && plain8(load8(s, i)) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
