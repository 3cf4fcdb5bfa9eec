package gateway

import (
	"bytes"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/jsonlog"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/usage"
)

// TestProbeRequestLineOddValues: the hand-written request line equals
// slog's for odd strings and numbers.
func TestProbeRequestLineOddValues(t *testing.T) {
	strs := []string{"\x7f\x00\x1f\b\f", "\xed\xa0\x80", "\xe2\x82", "a\xc0\xafb", "\u2029\u2028<>&'", "\U0001F600\xf4\x90\x80\x80", "\\\"/"}
	floats := []float64{math.Copysign(0, -1), 1e21, 1e-7, 999999999999999999999, 5e-324, math.MaxFloat64, -1e-6, 1e20, 123456789.125}
	ints := []int64{math.MinInt64, math.MaxInt64, -1, 0}
	for i := 0; i < len(strs)*len(floats); i++ {
		s := strs[i%len(strs)]
		alias := s
		c := &call{op: provider.OpChat, id: s, p: &auth.Principal{KeyHash: s + "0123456789",
			Key: &store.Key{KeyAlias: &alias, UserID: s, TeamID: s}},
			req: &request{model: s, user: s}, res: result{usage: usage.Usage{Prompt: ints[i%len(ints)], Completion: ints[(i+1)%len(ints)]}},
			cost: floats[i%len(floats)], r: httptest.NewRequest("POST", "/v1/chat/completions", nil)}
		var fast, slow bytes.Buffer
		lat := time.Duration(ints[i%len(ints)])
		(&Telemetry{Log: slog.New(jsonlog.New(&fast))}).logLine(c, -1, lat, -lat, s, s)
		(&Telemetry{Log: slog.New(slog.NewJSONHandler(&slow, nil))}).logLine(c, -1, lat, -lat, s, s)
		got, want := logTime.ReplaceAllString(fast.String(), "{"), logTime.ReplaceAllString(slow.String(), "{")
		if got != want {
			t.Errorf("%q %v:\n got %s\nwant %s", s, c.cost, got, want)
		}
	}
}

// TestProbeHeadersAfterRetryAndFallback: the attempt headers name the
// deployment that answered, after retries and a fallback, streamed or not.
func TestProbeHeadersAfterRetryAndFallback(t *testing.T) {
	for _, stream := range []bool{false, true} {
		ok := "ok"
		if stream {
			ok = "stream"
		}
		rg := newRig(t, []deployment{{"a", "g", 1, []string{"429"}}, {"b", "g", 2, []string{"500"}}, {"f", "fb", 1, []string{ok}}},
			config.Routing{NumRetries: 1, Fallbacks: map[string][]string{"g": {"fb"}}})
		body := `{"model":"g","messages":[{"role":"user","content":"hi"}]}`
		if stream {
			body = `{"model":"g","stream":true,"messages":[{"role":"user","content":"hi"}]}`
		}
		resp, err := http.Post(rg.srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		rg.finished(t)
		h := resp.Header
		if resp.StatusCode != 200 || h.Get(llmModelID) != "f" || h.Get(hdrModelID) != "f" || h.Get(llmModelGroup) != "fb" ||
			h.Get(llmRetries) != "1" || h.Get(llmFallbacks) != "1" || len(h.Values(llmModelID)) != 1 {
			t.Errorf("stream=%v: %d %v", stream, resp.StatusCode, h)
		}
	}
}
