package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/router"
)

const leakKey = "sk-proj-abcDEF1234567890xyz"

// TestCappedFieldIsMaskedDecoded: a field longer than max_field_bytes is
// kept as a JSON string of its JSON text's start, masked with its strings
// decoded: a key on a new line (after the escape "\n"), after a tab, or
// written JSON-escaped (\u0073k-...) is masked as it is within the cap.
func TestCappedFieldIsMaskedDecoded(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{MaxBytes: 1024}, answerWith(chatAnswer))
	filler := strings.Repeat("lorem ipsum ", 200)
	for name, content := range map[string]string{
		"newline":      `my key:\n` + leakKey + `\nplease rotate it. ` + filler,
		"json-escaped": `my key: \u0073k-proj-abcDEF1234567890xyz please rotate it. ` + filler,
		"tab":          `key\t` + leakKey + ` ` + filler,
	} {
		contentPost(t, url, "/v1/chat/completions", `{"model":"g","messages":[{"role":"user","content":"`+content+`"}]}`)
		pl := nextPayload(t, pub)
		if !strings.Contains(string(pl.Messages), "truncated by Tollgate") {
			t.Fatalf("%s: the field was not capped: %.200s", name, pl.Messages)
		}
		if strings.Contains(string(pl.Messages), "abcDEF1234567890xyz") {
			t.Errorf("%s: the capped messages carry the key in clear: %.160s", name, pl.Messages)
		}
	}
	// The same prompts within the cap are masked: the defect is the cap's path.
	url, pub = contentRig(t, ContentLogging{}, answerWith(chatAnswer))
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","messages":[{"role":"user","content":"my key:\n`+leakKey+`\nplease"}]}`)
	if pl := nextPayload(t, pub); strings.Contains(string(pl.Messages), "abcDEF1234567890xyz") {
		t.Errorf("within the cap too: %s", pl.Messages)
	}
}

// TestCappedStreamIsMaskedDecoded: the same through a stream whose
// assembled answer passes the cap (the model printed a key on its own
// line).
func TestCappedStreamIsMaskedDecoded(t *testing.T) {
	long := strings.Repeat("lorem ipsum ", 200)
	up := sseWith(
		`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Here it is:\n"}}]}`,
		`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"`+leakKey+`\n"}}]}`,
		`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"`+long+`"},"finish_reason":"stop"}]}`,
	)
	url, pub := contentRig(t, ContentLogging{MaxBytes: 1024}, up)
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	pl := nextPayload(t, pub)
	if strings.Contains(string(pl.Response), "abcDEF1234567890xyz") {
		t.Errorf("the capped streamed response carries the key in clear: %.200s", pl.Response)
	}
}

// TestErrorStrIsMasked: providers echo the offending input (and sometimes
// the key) in their errors; the error_str passed to the callbacks is
// masked, and under turn_off_message_logging holds the error's class and
// status alone.
func TestErrorStrIsMasked(t *testing.T) {
	echo := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		_, _ = w.Write([]byte(`{"error":{"message":"Invalid 'messages[0].content': 'I am jane@example.com, key ` + leakKey + ` top secret plan' is flagged","type":"invalid_request_error"}}`))
	}
	for _, cl := range []ContentLogging{{}, {Off: true}} {
		url, pub := contentRig(t, cl, echo)
		req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(secretPrompt))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		pl := nextPayload(t, pub)
		if pl.ErrorStr == nil {
			t.Fatalf("off=%v: no error_str (status %d)", cl.Off, resp.StatusCode)
		}
		for _, s := range []string{leakKey, "jane@example.com"} {
			if strings.Contains(*pl.ErrorStr, s) {
				t.Errorf("off=%v: error_str carries %q: %s", cl.Off, s, *pl.ErrorStr)
			}
		}
		if flagged := strings.Contains(*pl.ErrorStr, "top secret plan"); flagged == cl.Off {
			t.Errorf("off=%v: error_str %q (want the upstream's masked text only when content may leave)", cl.Off, *pl.ErrorStr)
		}
	}
}

// TestLargeMetadataKeepsOptOut: a request that opts out with
// metadata.turn_off_message_logging keeps its opt-out when its metadata
// object passes 16 KiB and is replaced by {"tollgate_truncated": true}.
func TestLargeMetadataKeepsOptOut(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{}, answerWith(chatAnswer))
	big := strings.Repeat("x", 17<<10)
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","metadata":{"turn_off_message_logging":true,"trace":"`+big+`"},"messages":[{"role":"user","content":"private"}]}`)
	if pl := nextPayload(t, pub); pl.Messages != nil || pl.Response != nil {
		t.Errorf("the request opted out, yet content was logged: %.100s / %.100s", pl.Messages, pl.Response)
	}
}

// TestJWTLookalikeDoesNotDelayTheClient: text of "eyJ-" repeated made
// findJWTs quadratic (most of a second for 60 KiB), and the client waited
// for it. The client's latency with 60 KiB of it is now close to 60 KiB
// of prose (loose bounds: both an absolute floor and a ratio must be
// passed to fail; TestDetectorsAreLinear in internal/redact measures the
// complexity itself).
func TestJWTLookalikeDoesNotDelayTheClient(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{}, answerWith(chatAnswer))
	adversarial := strings.Repeat("eyJ-", (60<<10)/4)
	prose := strings.Repeat("the quick brown fox ", (60<<10)/20)
	measure := func(content string) time.Duration {
		best := time.Hour
		for range 2 {
			start := time.Now()
			contentPost(t, url, "/v1/chat/completions", `{"model":"g","messages":[{"role":"user","content":"`+content+`"}]}`)
			best = min(best, time.Since(start))
			nextPayload(t, pub)
		}
		return best
	}
	p, a := measure(prose), measure(adversarial)
	t.Logf("client latency, 60 KiB prose: %v; 60 KiB of eyJ-: %v", p, a)
	if a > 200*time.Millisecond && a > 10*p {
		t.Errorf("the client waited %v for an answer whose 60 KiB prompt is masked (prose: %v): quadratic masking on the request path", a, p)
	}
}

// TestToolArgumentsKeyAfterNewlineIsMasked: tool-call arguments are a
// JSON text inside a JSON string; a key on its own line of a file the
// model writes ("# keys\nsk-...") is masked, within the cap.
func TestToolArgumentsKeyAfterNewlineIsMasked(t *testing.T) {
	answer := `{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"write_file","arguments":"{\"path\":\"keys.txt\",\"content\":\"# keys\\n` + leakKey + `\\n\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`
	url, pub := contentRig(t, ContentLogging{}, answerWith(answer))
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","messages":[{"role":"user","content":"save my key"}]}`)
	if pl := nextPayload(t, pub); strings.Contains(string(pl.Response), "abcDEF1234567890xyz") {
		t.Errorf("the response's tool-call arguments carry the key in clear: %s", pl.Response)
	}
}

// TestDateTimeIsNotAPhone: a date with a time ("2024-01-15 10:30") has
// ten digits with separators but is left alone by PHONE_NUMBER.
func TestDateTimeIsNotAPhone(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{}, answerWith(chatAnswer))
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","messages":[{"role":"user","content":"Book the meeting on 2024-01-15 10:30 please"}]}`)
	if pl := nextPayload(t, pub); !strings.Contains(string(pl.Messages), "2024-01-15 10:30") {
		t.Errorf("the date was masked: %s", pl.Messages)
	}
}

// TestOptOutMembersAreNotForwarded: the per-request opt-outs "no-log" and
// "turn_off_message_logging" in the body are LiteLLM's, not the
// provider's: they are not sent upstream (OpenAI refuses unknown members),
// and they still turn content off.
func TestOptOutMembersAreNotForwarded(t *testing.T) {
	bodies := make(chan string, 4)
	up := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
		answerWith(chatAnswer)(w, r)
	}
	url, pub := contentRig(t, ContentLogging{}, up)
	for _, m := range []string{`"no-log":true`, `"turn_off_message_logging":true`} {
		contentPost(t, url, "/v1/chat/completions", `{"model":"g",`+m+`,"messages":[{"role":"user","content":"x"}]}`)
		if pl := nextPayload(t, pub); pl.Messages != nil {
			t.Errorf("%s: content was logged: %s", m, pl.Messages)
		}
		if got := <-bodies; strings.Contains(got, m[:strings.Index(m, ":")]) {
			t.Errorf("the upstream was sent %s: %s", m, got)
		}
	}
}

// blockingPublisher holds the end of the call (Publish, after the content
// was shaped) until release is closed.
type blockingPublisher struct {
	release chan struct{}
	got     chan *callback.Payload
}

func (p *blockingPublisher) Wants(bool) bool { return true }
func (p *blockingPublisher) Publish(pl *callback.Payload) {
	<-p.release
	p.got <- pl
}

// TestAnswerReachesTheClientBeforeContentIsShaped: a whole answer is
// flushed to the client before its content is masked, so that a client
// never waits on redaction or on the rest of the call's end: the client
// reads the whole body while the call's end is held.
func TestAnswerReachesTheClientBeforeContentIsShaped(t *testing.T) {
	u := httptest.NewServer(answerWith(chatAnswer))
	t.Cleanup(u.Close)
	rt, err := router.New([]config.Deployment{{ModelName: "g", Provider: "openai", Model: "m", APIBase: u.URL, ID: "d1"}}, router.Settings{Health: router.NewHealth(nil)})
	if err != nil {
		t.Fatal(err)
	}
	pub := &blockingPublisher{release: make(chan struct{}), got: make(chan *callback.Payload, 1)}
	g := New(Options{Observer: &Telemetry{Callbacks: pub}}, auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), rt)
	mux := http.NewServeMux()
	g.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	released := false
	release := func() {
		if !released {
			released = true
			close(pub.release)
		}
	}
	defer release()
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(secretPrompt))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !strings.Contains(string(b), "Noted") {
		t.Fatalf("the client did not get its answer while the content was being shaped: %v %.100s", err, b)
	}
	release()
	select {
	case pl := <-pub.got:
		if pl.Messages == nil {
			t.Error("no content in the payload")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no payload")
	}
}

// TestFailureOnlyCallbackDoesNotAssembleStreams: with no spend rows and a
// callback that wants failures only, a stream's answer can reach no one,
// so it is not assembled; a failure still carries its messages.
func TestFailureOnlyCallbackDoesNotAssembleStreams(t *testing.T) {
	g := &Gateway{}
	g.content = newContentPolicy(ContentLogging{}, &Telemetry{Callbacks: &publisher{failures: true}}, false)
	if !g.content.capture {
		t.Fatal("a failure callback consumes content")
	}
	for _, tc := range []struct {
		cl       ContentLogging
		failures bool
		want     bool
	}{{ContentLogging{}, true, false}, {ContentLogging{}, false, true}, {ContentLogging{SpendLogs: true}, true, true}} {
		g.content = newContentPolicy(tc.cl, &Telemetry{Callbacks: &publisher{failures: tc.failures}}, false)
		r := httptest.NewRequest("POST", "/v1/chat/completions", nil)
		req, err := decode([]byte(`{"model":"g","stream":true,"messages":[{"role":"user","content":"x"}]}`), "")
		if err != nil {
			t.Fatal(err)
		}
		c := &call{g: g, r: r, op: provider.OpChat, req: req}
		c.startCapture()
		if c.cap == nil || c.cap.streams != tc.want || c.cap.request == nil {
			t.Errorf("spend %v, failures only %v: capture %+v, want streams %v", tc.cl.SpendLogs, tc.failures, c.cap, tc.want)
		}
	}
}
