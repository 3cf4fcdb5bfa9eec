package gateway

import (
	"bytes"
	"io"
	"log/slog"
	"math"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/cache"
	"github.com/tollgate/tollgate/internal/guardrail"
	"github.com/tollgate/tollgate/internal/jsonlog"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/usage"
)

var logTime = regexp.MustCompile(`^\{"time":"[^"]+",`)

// TestRequestLineMatchesSlog writes representative request lines through
// the appender (the gateway's own handler, jsonlog) and through slog's JSON
// handler, and wants the same bytes but for the time.
func TestRequestLineMatchesSlog(t *testing.T) {
	alias := `ops "blue" <team>&`
	long := strings.Repeat("é", maxEchoedName)
	tests := []struct {
		name string
		c    *call
	}{
		{"plain", &call{op: provider.OpChat, id: "0194f3a2b7c1d2e3f4a5b6c7d8e9f0a1", p: &auth.Principal{},
			req: &request{model: "gpt-4o"}, res: result{usage: usage.Usage{Prompt: 12, Completion: 40}, hasUsage: true}, cost: 0.000123}},
		{"keyed, escaped", &call{op: provider.OpMessages, id: "x", p: &auth.Principal{KeyHash: "0123456789abcdef",
			Key: &store.Key{KeyAlias: &alias, UserID: "u\n1", TeamID: "t\\\x01"}},
			req: &request{model: "m\u2028" + long, user: "bad\xff", stream: true}, cost: 1e-9}},
		{"cache hit and guardrails", &call{op: provider.OpEmbeddings, id: "y", p: &auth.Principal{KeyHash: "abc"},
			req: &request{model: "e"}, res: result{usage: usage.Usage{Prompt: -1}}, cost: 1e21,
			cache: &cacheState{hit: &cache.Entry{}},
			guard: &callGuard{outcomes: []guardrail.Outcome{{Guardrail: "pii", Action: "masked"}, {Guardrail: `"q"`, Action: "passed"}}}}},
		{"NaN cost goes through slog", &call{op: provider.OpChat, id: "z", p: &auth.Principal{}, req: &request{}, cost: math.NaN()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.r = httptest.NewRequest("POST", "/v1/chat/completions", nil)
			var fast, slow bytes.Buffer
			(&Telemetry{Log: slog.New(jsonlog.New(&fast))}).logLine(tt.c, 200, 1500*time.Microsecond, 300*time.Microsecond, "dep-1", "openai")
			(&Telemetry{Log: slog.New(slog.NewJSONHandler(&slow, nil))}).logLine(tt.c, 200, 1500*time.Microsecond, 300*time.Microsecond, "dep-1", "openai")
			got, want := logTime.ReplaceAllString(fast.String(), "{"), logTime.ReplaceAllString(slow.String(), "{")
			if got != want || !strings.HasPrefix(want, `{"level":"INFO","msg":"request","call_id":`) {
				t.Errorf("\n got %s\nwant %s", got, want)
			}
		})
	}
}

// BenchmarkRequestLine is one request line of a keyed call through slog's
// JSON handler and through the appender.
func BenchmarkRequestLine(b *testing.B) {
	alias := "team-a"
	c := &call{op: provider.OpChat, id: "0194f3a2b7c1d2e3f4a5b6c7d8e9f0a1", p: &auth.Principal{KeyHash: "0123456789abcdef",
		Key: &store.Key{KeyAlias: &alias, UserID: "u1", TeamID: "t1"}},
		req: &request{model: "gpt-4o", user: "end"}, res: result{usage: usage.Usage{Prompt: 12, Completion: 40}, hasUsage: true}, cost: 0.000123,
		r: httptest.NewRequest("POST", "/v1/chat/completions", nil)}
	for _, bb := range []struct {
		name string
		h    slog.Handler
	}{{"slog", slog.NewJSONHandler(io.Discard, nil)}, {"jsonlog", jsonlog.New(io.Discard)}} {
		o := &Telemetry{Log: slog.New(bb.h)}
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				o.logLine(c, 200, 1500*time.Microsecond, 300*time.Microsecond, "dep-1", "openai")
			}
		})
	}
}
