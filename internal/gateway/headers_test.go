package gateway

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/store"
)

func TestAnswerID(t *testing.T) {
	tests := []struct {
		name, event, want string
		ok                bool
	}{
		{"openai chunk", "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\n", "chatcmpl-1", true},
		{"spaced", "data: { \"id\" : \"chatcmpl-2\" }\n\n", "chatcmpl-2", true},
		{"anthropic message_start", "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\"}}\n\n", "msg_1", true},
		{"an id value is not a member", "data: {\"type\":\"id\",\"x\":{\"id\":\"inner\"}}\n\n", "inner", true},
		{"escaped", "data: {\"id\":\"a\\\"b\"}\n\n", "a\"b", true},
		{"no id", "data: {\"choices\":[]}\n\n", "", true},
		{"keep-alive", ": ping\n\n", "", false},
		{"done", "data: [DONE]\n\n", "", false},
		{"whole answer", "{\"id\":\"msg_2\",\"type\":\"message\"}", "msg_2", true},
		{"cut short", "data: {\"id\":\"chatcm", "", true},
	}
	for _, tt := range tests {
		if id, ok := answerID([]byte(tt.event)); id != tt.want || ok != tt.ok {
			t.Errorf("%s: %q %v, want %q %v", tt.name, id, ok, tt.want, tt.ok)
		}
	}
}

func BenchmarkAnswerID(b *testing.B) {
	ev := []byte("data: {\"id\":\"chatcmpl-AbCdEf0123456789\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n")
	b.ReportAllocs()
	for b.Loop() {
		if id, _ := answerID(ev); id == "" {
			b.Fatal("no id")
		}
	}
}

// BenchmarkResponseHeaders is what one answer's gateway headers cost: the
// headers before issue 22 (Tollgate's names set with Header.Set) against
// now (Tollgate's and LiteLLM's names by map assignment, values shared).
func BenchmarkResponseHeaders(b *testing.B) {
	tpm, budget := int64(100000), 5.0
	c := &call{g: &Gateway{version: []string{"1.2.3"}}, id: "0123456789abcdef0123456789abcdef", start: time.Now(),
		p: &auth.Principal{Key: &store.Key{Limits: store.Limits{TPMLimit: &tpm, MaxBudget: &budget}}}}
	t := &provider.Target{D: &config.Deployment{ID: "deployment-1", APIBase: "https://api.example.com/v1"}}
	b.Run("before: Set, tollgate names", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := http.Header{}
			h.Set("x-tollgate-call-id", c.id)
			h.Set("x-tollgate-model-id", t.D.ID)
			h.Set("x-tollgate-attempted-retries", strconv.Itoa(c.retries))
			h.Set("x-tollgate-attempted-fallbacks", strconv.Itoa(c.fellBack))
			h.Del("x-tollgate-output-capped")
			h.Del("x-tollgate-unpriced")
			h["X-Tollgate-Response-Cost"] = []string{strconv.FormatFloat(0.00123, 'g', -1, 64)}
			h["X-Tollgate-Key-Spend"] = []string{strconv.FormatFloat(1.5, 'g', -1, 64)}
		}
	})
	b.Run("now: both names", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := http.Header{}
			c.callHeaders(h)
			c.attemptHeaders(h, t, "gpt-4")
			delete(h, hdrOutputCapped)
			delete(h, hdrUnpriced)
			setBoth(h, hdrCost, llmCost, strconv.FormatFloat(0.00123, 'g', -1, 64))
			setBoth(h, hdrKeySpend, llmKeySpend, strconv.FormatFloat(1.5, 'g', -1, 64))
			c.durationHeaders(h, time.Millisecond)
		}
	})
}

// TestUpstreamDoesNotSpeakForTheCall: an upstream that is itself a proxy
// sends no x-tollgate-* or x-litellm-* header through (its region is not
// this call's), nor replaces the call's rate-limit headers, nor its Date
// (the gateway's own is written); its other headers pass.
func TestUpstreamDoesNotSpeakForTheCall(t *testing.T) {
	dst := http.Header{hdrCallID: {"ours"}, llmCallID: {"ours"}, "X-Ratelimit-Remaining-Requests": {"5"}}
	src := http.Header{hdrCallID: {"theirs"}, llmCallID: {"theirs"}, "X-Ratelimit-Remaining-Requests": {"999"},
		"X-Litellm-Model-Region": {"eu"}, "X-Tollgate-Response-Cost": {"9"}, "X-Ratelimit-Limit-Tokens": {"7"}, "X-Request-Id": {"req-1"}, "Connection": {"close"},
		"Date": {"Mon, 30 Nov 2026 12:00:00 GMT"}}
	copyHeader(dst, src)
	want := http.Header{hdrCallID: {"ours"}, llmCallID: {"ours"}, "X-Ratelimit-Remaining-Requests": {"5"}, "X-Ratelimit-Limit-Tokens": {"7"}, "X-Request-Id": {"req-1"}}
	if len(dst) != len(want) {
		t.Fatalf("%v, want %v", dst, want)
	}
	for k, v := range want {
		if dst.Get(k) != v[0] {
			t.Errorf("%s: %q, want %q", k, dst.Get(k), v[0])
		}
	}
}
