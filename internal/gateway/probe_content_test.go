package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const probeKey = "sk-proj-abcDEF1234567890xyz"

// TestProbeCappedFieldMasksRawJSONText: a field longer than
// max_field_bytes is masked as its raw JSON text (capture.go shape), not
// as the strings it holds. A key on a new line of a long prompt is
// preceded by the escape "\n" there, so the "n" glues it to a word and
// API_KEY never matches; a key the client wrote JSON-escaped
// (\u0073k-...) is not decoded. Both reach the callback (and the spend
// row) in clear, while the same prompt within the cap is masked.
func TestProbeCappedFieldMasksRawJSONText(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{MaxBytes: 1024}, answerWith(chatAnswer))
	filler := strings.Repeat("lorem ipsum ", 200)
	for name, content := range map[string]string{
		"newline":      `my key:\n` + probeKey + `\nplease rotate it. ` + filler,
		"json-escaped": `my key: \u0073k-proj-abcDEF1234567890xyz please rotate it. ` + filler,
		"tab":          `key\t` + probeKey + ` ` + filler,
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
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","messages":[{"role":"user","content":"my key:\n`+probeKey+`\nplease"}]}`)
	if pl := nextPayload(t, pub); strings.Contains(string(pl.Messages), "abcDEF1234567890xyz") {
		t.Errorf("within the cap too: %s", pl.Messages)
	}
}

// TestProbeCappedStreamMasksRawJSONText: the same through a stream whose
// assembled answer passes the cap (the model printed a key on its own
// line): the response field keeps it in clear.
func TestProbeCappedStreamMasksRawJSONText(t *testing.T) {
	long := strings.Repeat("lorem ipsum ", 200)
	up := sseWith(
		`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Here it is:\n"}}]}`,
		`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"`+probeKey+`\n"}}]}`,
		`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"`+long+`"},"finish_reason":"stop"}]}`,
	)
	url, pub := contentRig(t, ContentLogging{MaxBytes: 1024}, up)
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	pl := nextPayload(t, pub)
	if strings.Contains(string(pl.Response), "abcDEF1234567890xyz") {
		t.Errorf("the capped streamed response carries the key in clear: %.200s", pl.Response)
	}
}

// TestProbeErrorStrIsNotMasked: an upstream error body is passed to the
// callbacks as error_str (logged.go payload) without masking, and even
// under turn_off_message_logging. Providers echo the offending input (and
// sometimes the key) in their 400s, so the prompt's key, e-mail and
// text leave the process although messages are masked or dropped.
func TestProbeErrorStrIsNotMasked(t *testing.T) {
	echo := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		_, _ = w.Write([]byte(`{"error":{"message":"Invalid 'messages[0].content': 'I am jane@example.com, key ` + probeKey + ` top secret plan' is flagged","type":"invalid_request_error"}}`))
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
		for _, s := range []string{probeKey, "jane@example.com"} {
			if strings.Contains(*pl.ErrorStr, s) {
				t.Errorf("off=%v: error_str carries %q: %s", cl.Off, s, *pl.ErrorStr)
			}
		}
	}
}

// TestProbeLargeMetadataLosesOptOut: a request that opts out with
// metadata.turn_off_message_logging keeps its content logged when its
// metadata object passes 16 KiB: readMeta replaces it with
// {"tollgate_truncated": true} before contentAllowed reads it.
func TestProbeLargeMetadataLosesOptOut(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{}, answerWith(chatAnswer))
	big := strings.Repeat("x", 17<<10)
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","metadata":{"turn_off_message_logging":true,"trace":"`+big+`"},"messages":[{"role":"user","content":"private"}]}`)
	if pl := nextPayload(t, pub); pl.Messages != nil || pl.Response != nil {
		t.Errorf("the request opted out, yet content was logged: %.100s / %.100s", pl.Messages, pl.Response)
	}
}

// TestProbeJWTLookalikeIsQuadratic: masking is documented linear ("about
// 100 MB/s", "at most a millisecond or so per field ... spent in the
// call's finish, after the answer was written"), but findJWTs spans from
// every word-starting "eyJ" over '-' (a token byte that is not a word
// byte), so text of "eyJ-" repeated costs O(n²): one 60 KiB message (under
// the default cap) costs most of a second of CPU, and the client waits for
// it: the answer's end reaches it only when the handler returns.
func TestProbeJWTLookalikeIsQuadratic(t *testing.T) {
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

// TestProbeToolArgumentsKeyAfterNewline: tool-call arguments are a JSON
// text inside a JSON string; redact.JSON decodes the string once, so the
// arguments' own escapes stay: a key on its own line of a file the model
// writes ("# .env\nsk-...") sits after "\n" and is not masked, within
// the cap.
func TestProbeToolArgumentsKeyAfterNewline(t *testing.T) {
	answer := `{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"write_file","arguments":"{\"path\":\"keys.txt\",\"content\":\"# keys\\n` + probeKey + `\\n\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`
	url, pub := contentRig(t, ContentLogging{}, answerWith(answer))
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","messages":[{"role":"user","content":"save my key"}]}`)
	if pl := nextPayload(t, pub); strings.Contains(string(pl.Response), "abcDEF1234567890xyz") {
		t.Errorf("the response's tool-call arguments carry the key in clear: %s", pl.Response)
	}
}

// TestProbeDateTimeMaskedAsPhone: content-logging.md says dates are left
// alone by PHONE_NUMBER, yet a date with a time ("2024-01-15 10:30")
// becomes "<PHONE_NUMBER>:30" (ten digits with separators), destroying
// ordinary text in every log of a scheduling conversation.
func TestProbeDateTimeMaskedAsPhone(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{}, answerWith(chatAnswer))
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","messages":[{"role":"user","content":"Book the meeting on 2024-01-15 10:30 please"}]}`)
	if pl := nextPayload(t, pub); !strings.Contains(string(pl.Messages), "2024-01-15 10:30") {
		t.Errorf("the date was masked: %s", pl.Messages)
	}
}

// TestProbeOptOutMembersForwardedUpstream: the per-request opt-out
// "turn_off_message_logging": true in the body (content-logging.md) is a
// LiteLLM parameter, not the provider's, yet it is forwarded to the
// upstream ("no-log" is not), where OpenAI refuses unknown members
// ("Unrecognized request argument supplied"): a client that opts out of
// logging this documented way cannot be served by OpenAI.
func TestProbeOptOutMembersForwardedUpstream(t *testing.T) {
	bodies := make(chan string, 4)
	up := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
		answerWith(chatAnswer)(w, r)
	}
	url, pub := contentRig(t, ContentLogging{}, up)
	for _, m := range []string{`"no-log":true`, `"turn_off_message_logging":true`} {
		contentPost(t, url, "/v1/chat/completions", `{"model":"g",`+m+`,"messages":[{"role":"user","content":"x"}]}`)
		nextPayload(t, pub)
		if got := <-bodies; strings.Contains(got, m[:strings.Index(m, ":")]) {
			t.Errorf("the upstream was sent %s: %s", m, got)
		}
	}
}
