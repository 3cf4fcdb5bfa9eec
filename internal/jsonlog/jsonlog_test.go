package jsonlog

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// viaSlog is what slog's JSON handler writes for the record.
func viaSlog(t testing.TB, at time.Time, attrs ...slog.Attr) string {
	var buf bytes.Buffer
	r := slog.NewRecord(at, slog.LevelInfo, "request", 0)
	r.AddAttrs(attrs...)
	if err := slog.NewJSONHandler(&buf, nil).Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// viaLine is what the fast path writes for the same attributes, or ""
// when it declines the line.
func viaLine(t testing.TB, at time.Time, attrs ...slog.Attr) string {
	var buf bytes.Buffer
	h := New(&buf)
	l := h.Begin(context.Background(), at, slog.LevelInfo, "request")
	for _, a := range attrs {
		switch v := a.Value; v.Kind() {
		case slog.KindString:
			l.String(NewKey(a.Key), v.String())
		case slog.KindInt64:
			l.Int64(NewKey(a.Key), v.Int64())
		case slog.KindBool:
			l.Bool(NewKey(a.Key), v.Bool())
		case slog.KindFloat64:
			l.Float64(NewKey(a.Key), v.Float64())
		case slog.KindDuration:
			l.Duration(NewKey(a.Key), v.Duration())
		default:
			t.Fatalf("kind %v", v.Kind())
		}
	}
	if !h.Write(l) {
		return ""
	}
	return buf.String()
}

var when = time.Date(2026, 11, 29, 22, 5, 1, 120034000, time.UTC)

func TestLineMatchesSlog(t *testing.T) {
	strs := []string{"", "plain", `q"uote`, `back\slash`, "new\nline\r\t", "\x00\x01\x1f\x7f", "<html>&amp;",
		"héllo wörld …", "\u2028\u2029", "bad\xffutf8\xc3", "emoji 😀", "sk-...ABCD", "a/b?c=d"}
	floats := []float64{0, 1, -1, 0.1 + 0.2, 1e-6, 9.99e-7, 1e-7, 1.5e-10, 1e20, 1e21, 123456789.125, -3.5e-300, math.MaxFloat64, math.SmallestNonzeroFloat64, 0.000123}
	for _, s := range strs {
		attrs := []slog.Attr{slog.String("call_id", s), slog.String(s+"k", s)}
		if got, want := viaLine(t, when, attrs...), viaSlog(t, when, attrs...); got != want {
			t.Errorf("string %q:\n got %s\nwant %s", s, got, want)
		}
	}
	for _, f := range floats {
		for _, v := range []float64{f, -f} {
			a := slog.Float64("cost", v)
			if got, want := viaLine(t, when, a), viaSlog(t, when, a); got != want {
				t.Errorf("float %v:\n got %s\nwant %s", v, got, want)
			}
		}
	}
	full := []slog.Attr{
		slog.String("call_id", "0194f3a2b7c1d2e3f4a5b6c7d8e9f0a1"), slog.String("op", "chat"),
		slog.String("key_hash", "0123abcd"), slog.String("key_alias", `team "x"`),
		slog.String("user", "u"), slog.String("team", ""), slog.String("end_user", "e\n"),
		slog.Bool("stream", true), slog.Int("status", 200), slog.Int64("prompt_tokens", -3),
		slog.Bool("usage_reported", false), slog.Float64("cost", 0.00012), slog.Duration("latency", 1234567*time.Nanosecond),
		slog.Duration("overhead", -1), slog.Bool("cache_hit", true), slog.String("guardrails", "pii:mask,x:block"),
	}
	for _, at := range []time.Time{when, when.In(time.FixedZone("X", 3600+1800)), time.Now(), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} {
		if got, want := viaLine(t, at, full...), viaSlog(t, at, full...); got != want {
			t.Errorf("full line at %v:\n got %s\nwant %s", at, got, want)
		}
	}
}

func TestLineDeclinesWhatSlogWritesAsError(t *testing.T) {
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if got := viaLine(t, when, slog.Float64("cost", f)); got != "" {
			t.Errorf("%v: wrote %s, want the slog path", f, got)
		}
	}
}

func FuzzLineMatchesSlog(f *testing.F) {
	f.Add("a", int64(1), 0.5, true)
	f.Add("\xff\u2028\"\\\n", int64(-1), 1e-9, false)
	f.Fuzz(func(t *testing.T, s string, n int64, x float64, b bool) {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return
		}
		attrs := []slog.Attr{slog.String("s", s), slog.Int64("n", n), slog.Float64("x", x), slog.Bool("b", b), slog.Duration("d", time.Duration(n)), slog.Int64(s, n)}
		if got, want := viaLine(t, when, attrs...), viaSlog(t, when, attrs...); got != want {
			t.Errorf("\n got %s\nwant %s", got, want)
		}
	})
}

var benchCallID, benchStatus, benchCost = NewKey("call_id"), NewKey("status"), NewKey("cost")

func BenchmarkLine(b *testing.B) {
	h := New(discard{})
	b.ReportAllocs()
	for b.Loop() {
		l := h.Begin(context.Background(), when, slog.LevelInfo, "request")
		l.String(benchCallID, "0194f3a2b7c1d2e3f4a5b6c7d8e9f0a1")
		l.Int64(benchStatus, 200)
		l.Float64(benchCost, 0.00012)
		h.Write(l)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestStringEveryByteAtEveryOffset: a string value with one byte of every
// value (and a two-, three- and four-byte rune, U+2028, a cut rune) at each
// offset of a 20-byte ASCII string is written as slog writes it (for any
// reader of appendString that skips runs of plain bytes).
func TestStringEveryByteAtEveryOffset(t *testing.T) {
	const base = "abcdefghijklmnopqrst"
	var specials []string
	for c := range 256 {
		specials = append(specials, string([]byte{byte(c)}))
	}
	specials = append(specials, "é", "€", "😀", "\u2028", "\u2029", "\xe2\x82")
	for _, sp := range specials {
		for at := 0; at <= len(base); at++ {
			s := base[:at] + sp + base[at:]
			if got, want := viaLine(t, when, slog.String("v", s)), viaSlog(t, when, slog.String("v", s)); got != want {
				t.Fatalf("%q at %d:\n got %s\nwant %s", sp, at, got, want)
			}
		}
	}
}

func BenchmarkAppendString(b *testing.B) {
	s := "chatcmpl-0123456789abcdef0123456789abcdef gpt-4 /v1/chat/completions"
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf = appendString(buf[:0], s)
	}
}

// TestPlain8MatchesBytes: plain8 says yes exactly when each of the eight
// bytes is one the per-byte path steps over (ASCII, not a control byte, a
// quote or a backslash): every byte value at every position of a plain
// word, pairs of them, and random words.
func TestPlain8MatchesBytes(t *testing.T) {
	plain := func(c byte) bool { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\' }
	check := func(w [8]byte) {
		want := true
		for _, c := range w {
			want = want && plain(c)
		}
		if got := plain8(load8(string(w[:]), 0)); got != want {
			t.Fatalf("% x: plain8 %v, want %v", w, got, want)
		}
	}
	base := [8]byte{'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'}
	for c := range 256 {
		for p := range 8 {
			w := base
			w[p] = byte(c)
			check(w)
			for d := range 256 {
				for q := p + 1; q < 8; q += 3 {
					w2 := w
					w2[q] = byte(d)
					check(w2)
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		var w [8]byte
		for i := range w {
			// Mostly bytes near the edges: 0x1f/0x20, '"', '\\', 0x7f/0x80.
			w[i] = []byte{0x1f, 0x20, 0x21, '"', '#', '[', '\\', ']', 0x7f, 0x80, 0xff, 0x00}[r.IntN(12)]
			if r.IntN(3) == 0 {
				w[i] = byte(r.IntN(256))
			}
		}
		check(w)
	}
}

// TestLongStringsMatchSlog: strings longer than a word with one special
// byte or rune at every offset, so that the eight-byte steps meet it at
// every alignment, are written as slog writes them.
func TestLongStringsMatchSlog(t *testing.T) {
	const base = "0123456789abcdef0123456789abcdef0123456"
	for _, sp := range []string{"\"", "\\", "\n", "\x00", "\x1f", "\x7f", "\x80", "é", "\u2028", "\xe2\x82", "<"} {
		for at := 0; at <= len(base); at++ {
			for _, n := range []int{at, len(base)} {
				s := base[:at] + sp + base[at:n]
				if got, want := viaLine(t, when, slog.String("v", s)), viaSlog(t, when, slog.String("v", s)); got != want {
					t.Fatalf("%q at %d of %d:\n got %s\nwant %s", sp, at, n, got, want)
				}
			}
		}
	}
}

// TestNewKeyMatchesSlog: a key made once with NewKey writes what slog
// writes for that key, for plain keys and for keys slog must escape
// (quotes, backslashes, control bytes, invalid UTF-8, U+2028), and one Key
// used on many lines writes the same bytes each time.
func TestNewKeyMatchesSlog(t *testing.T) {
	for _, k := range []string{"call_id", "", "a\"b", "back\\slash", "tab\t", "nl\n", "\x00\x1f", "\xff", "é", "\u2028x", "<&>"} {
		want := viaSlog(t, when, slog.String(k, "v"), slog.Int64(k, 1))
		key := NewKey(k)
		for range 3 {
			var buf bytes.Buffer
			h := New(&buf)
			l := h.Begin(context.Background(), when, slog.LevelInfo, "request")
			l.String(key, "v")
			l.Int64(key, 1)
			h.Write(l)
			if got := buf.String(); got != want {
				t.Fatalf("key %q:\n got %s\nwant %s", k, got, want)
			}
		}
	}
}
