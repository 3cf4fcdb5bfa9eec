package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/redact"
	"github.com/tollgate/tollgate/internal/router"
	"github.com/tollgate/tollgate/internal/store"
)

// contentRig serves one OpenAI deployment (up) through a gateway with
// content logging cl and a recording publisher.
func contentRig(t *testing.T, cl ContentLogging, up http.HandlerFunc) (string, *publisher) {
	t.Helper()
	if cl.Redactor == nil {
		r, err := redact.New(redact.All())
		if err != nil {
			t.Fatal(err)
		}
		cl.Redactor = r
	}
	u := httptest.NewServer(up)
	t.Cleanup(u.Close)
	deps := []config.Deployment{{ModelName: "g", Provider: "openai", Model: "m", APIBase: u.URL, ID: "d1"}}
	rt, err := router.New(deps, router.Settings{Health: router.NewHealth(nil)})
	if err != nil {
		t.Fatal(err)
	}
	pub := &publisher{got: make(chan *callback.Payload, 8)}
	g := New(Options{Observer: &Telemetry{Callbacks: pub}, Content: cl}, auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), rt)
	mux := http.NewServeMux()
	g.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, pub
}

func contentPost(t *testing.T, url, path, body string, hdr ...string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

const (
	secretPrompt = `{"model":"g","messages":[{"role":"user","content":"I am jane@example.com, card 4111 1111 1111 1111, key sk-proj-abcDEF1234567890xyz"}]}`
	chatAnswer   = `{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Noted, jane@example.com."},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`
)

func answerWith(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}
}

func sseWith(events ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, e := range events {
			_, _ = io.WriteString(w, "data: "+e+"\n\n")
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	}
}

// noSecrets fails when raw holds any of the prompt's sensitive values.
func noSecrets(t *testing.T, what string, raw json.RawMessage) {
	t.Helper()
	for _, s := range []string{"jane@example.com", "4111 1111 1111 1111", "sk-proj-abcDEF1234567890xyz"} {
		if strings.Contains(string(raw), s) {
			t.Errorf("%s carries %q: %s", what, s, raw)
		}
	}
	if len(raw) > 0 && !json.Valid(raw) {
		t.Errorf("%s is not valid JSON: %s", what, raw)
	}
}

// TestCallbackGetsRedactedContent: the callback payload carries the
// request's messages and the whole answer, with the e-mail, the card and
// the key masked.
func TestCallbackGetsRedactedContent(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{}, answerWith(chatAnswer))
	if got := contentPost(t, url, "/v1/chat/completions", secretPrompt); !strings.Contains(got, "jane@example.com") {
		t.Fatalf("the client's answer was changed: %s", got) // redaction is for the logs only
	}
	pl := nextPayload(t, pub)
	noSecrets(t, "messages", pl.Messages)
	noSecrets(t, "response", pl.Response)
	for _, want := range []string{"<EMAIL_ADDRESS>", "<CREDIT_CARD>", "<API_KEY>", `"role":"user"`} {
		if !strings.Contains(string(pl.Messages), want) {
			t.Errorf("messages lack %s: %s", want, pl.Messages)
		}
	}
	if !strings.Contains(string(pl.Response), `"content":"Noted, <EMAIL_ADDRESS>."`) {
		t.Errorf("response: %s", pl.Response)
	}
}

// TestStreamIsAssembled: an OpenAI stream becomes one chat.completion with
// the deltas' text and tool calls; the same upstream stream seen by an
// Anthropic client becomes one message with its text block.
func TestStreamIsAssembled(t *testing.T) {
	up := sseWith(
		`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello "}}]}`,
		`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"bob@example.org"}}]}`,
		`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":"}}]}}]}`,
		`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":"tool_calls"}]}`,
		`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}`,
	)
	url, pub := contentRig(t, ContentLogging{}, up)
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	pl := nextPayload(t, pub)
	var chat struct {
		Object  string
		Choices []struct {
			Message struct {
				Content   string
				ToolCalls []struct {
					ID       string
					Function struct{ Name, Arguments string }
				} `json:"tool_calls"`
			}
			FinishReason string `json:"finish_reason"`
		}
	}
	if err := json.Unmarshal(pl.Response, &chat); err != nil || len(chat.Choices) != 1 {
		t.Fatalf("response %s: %v", pl.Response, err)
	}
	c := chat.Choices[0]
	if chat.Object != "chat.completion" || c.Message.Content != "Hello <EMAIL_ADDRESS>" || c.FinishReason != "tool_calls" ||
		len(c.Message.ToolCalls) != 1 || c.Message.ToolCalls[0].Function.Arguments != `{"a":1}` || c.Message.ToolCalls[0].ID != "call_1" {
		t.Errorf("assembled %s", pl.Response)
	}

	// An Anthropic client: what it got was Messages events.
	contentPost(t, url, "/v1/messages", `{"model":"g","max_tokens":50,"stream":true,"system":"be brief","messages":[{"role":"user","content":"hi"}]}`)
	pl = nextPayload(t, pub)
	var msg struct {
		Type    string
		Content []struct{ Type, Text string }
	}
	if err := json.Unmarshal(pl.Response, &msg); err != nil || msg.Type != "message" || len(msg.Content) == 0 || msg.Content[0].Text != "Hello <EMAIL_ADDRESS>" {
		t.Errorf("anthropic response %s (%v)", pl.Response, err)
	}
	var asked struct {
		System   string
		Messages []any
	}
	if err := json.Unmarshal(pl.Messages, &asked); err != nil || asked.System != "be brief" || len(asked.Messages) != 1 {
		t.Errorf("anthropic messages %s (%v)", pl.Messages, err)
	}
}

// TestContentIsCapped: a field over the cap becomes a JSON string of its
// start with a marker, still redacted.
func TestContentIsCapped(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{MaxBytes: 1024}, answerWith(chatAnswer))
	long := strings.Repeat("lorem ipsum ", 200)
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","messages":[{"role":"user","content":"jane@example.com `+long+`"}]}`)
	pl := nextPayload(t, pub)
	var s string
	if err := json.Unmarshal(pl.Messages, &s); err != nil {
		t.Fatalf("capped messages are not a JSON string: %s", pl.Messages)
	}
	if !strings.Contains(s, "[truncated by Tollgate: 1024 of ") || len(s) > 1024+80 || !strings.Contains(s, "<EMAIL_ADDRESS>") {
		t.Errorf("capped messages (%d bytes): %s", len(s), s)
	}
	noSecrets(t, "messages", pl.Messages)
	if !strings.Contains(string(pl.Response), "Noted") {
		t.Errorf("the response within the cap was not kept whole: %s", pl.Response)
	}
}

// TestContentOptOuts: turn_off_message_logging, and each per-request
// opt-out, leave the payload without content; a request cannot turn
// logging back on.
func TestContentOptOuts(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{Off: true}, answerWith(chatAnswer))
	contentPost(t, url, "/v1/chat/completions", secretPrompt, "litellm-disable-message-redaction", "true")
	if pl := nextPayload(t, pub); pl.Messages != nil || pl.Response != nil {
		t.Errorf("turn_off_message_logging: content %s / %s", pl.Messages, pl.Response)
	}

	url, pub = contentRig(t, ContentLogging{}, answerWith(chatAnswer))
	tests := []struct {
		name, body string
		hdr        []string
	}{
		{"no-log", `{"model":"g","no-log":true,"messages":[{"role":"user","content":"x"}]}`, nil},
		{"turn_off in body", `{"model":"g","turn_off_message_logging":true,"messages":[{"role":"user","content":"x"}]}`, nil},
		{"turn_off in metadata", `{"model":"g","metadata":{"turn_off_message_logging":true},"messages":[{"role":"user","content":"x"}]}`, nil},
		{"header", secretPrompt, []string{"x-litellm-enable-message-redaction", "true"}},
	}
	for _, tt := range tests {
		contentPost(t, url, "/v1/chat/completions", tt.body, tt.hdr...)
		if pl := nextPayload(t, pub); pl.Messages != nil || pl.Response != nil {
			t.Errorf("%s: content %s / %s", tt.name, pl.Messages, pl.Response)
		}
	}
	contentPost(t, url, "/v1/chat/completions", secretPrompt)
	if pl := nextPayload(t, pub); pl.Messages == nil {
		t.Error("content is missing without an opt-out")
	}
}

// TestMetadataTurnsOff: key and team metadata, as LiteLLM spells them.
func TestMetadataTurnsOff(t *testing.T) {
	tests := []struct {
		md   map[string]any
		want bool
	}{
		{nil, false},
		{map[string]any{"turn_off_message_logging": true}, true},
		{map[string]any{"turn_off_message_logging": "true"}, true},
		{map[string]any{"turn_off_message_logging": false}, false},
		{map[string]any{"logging": []any{map[string]any{"callback_name": "langfuse", "callback_vars": map[string]any{"turn_off_message_logging": true}}}}, true},
		{map[string]any{"logging": []any{map[string]any{"callback_name": "langfuse"}}}, false},
	}
	for _, tt := range tests {
		if got := metadataTurnsOff(tt.md); got != tt.want {
			t.Errorf("metadataTurnsOff(%v) = %v", tt.md, got)
		}
	}
}

// TestNoConsumerNoCapture: without spend logs or callbacks a call keeps
// nothing, however content logging is set.
func TestNoConsumerNoCapture(t *testing.T) {
	g := New(Options{Observer: &Telemetry{}, Content: ContentLogging{}}, auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), nil)
	if g.content.capture {
		t.Error("capturing with no consumer")
	}
	g = New(Options{Observer: &Telemetry{}, Content: ContentLogging{SpendLogs: true, Off: true}}, auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), nil)
	if g.content.capture || g.content.spendLogs {
		t.Error("capturing under turn_off_message_logging")
	}
}

// TestCapturedMembersPerRoute: completions keep prompt (a stream as one
// text_completion), embeddings keep input and the answer.
func TestCapturedMembersPerRoute(t *testing.T) {
	up := func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/completions", "/completions":
			sseWith(`{"id":"cmpl-1","object":"text_completion","model":"m","choices":[{"index":0,"text":"one "}]}`,
				`{"id":"cmpl-1","object":"text_completion","model":"m","choices":[{"index":0,"text":"two","finish_reason":"length"}]}`)(w, r)
		default:
			answerWith(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"m","usage":{"prompt_tokens":2,"total_tokens":2}}`)(w, r)
		}
	}
	url, pub := contentRig(t, ContentLogging{}, up)
	contentPost(t, url, "/v1/completions", `{"model":"g","stream":true,"prompt":"say 10.1.2.3"}`)
	pl := nextPayload(t, pub)
	if string(pl.Messages) != `"say <IP_ADDRESS>"` {
		t.Errorf("completions messages %s", pl.Messages)
	}
	var cmpl struct {
		Object  string
		Choices []struct {
			Text         string
			FinishReason string `json:"finish_reason"`
		}
	}
	if json.Unmarshal(pl.Response, &cmpl) != nil || cmpl.Object != "text_completion" || len(cmpl.Choices) != 1 ||
		cmpl.Choices[0].Text != "one two" || cmpl.Choices[0].FinishReason != "length" {
		t.Errorf("completions response %s", pl.Response)
	}
	contentPost(t, url, "/v1/embeddings", `{"model":"g","input":["a@b.io","x"]}`)
	pl = nextPayload(t, pub)
	if string(pl.Messages) != `["<EMAIL_ADDRESS>","x"]` || !strings.Contains(string(pl.Response), `[0.1,0.2]`) {
		t.Errorf("embeddings %s / %s", pl.Messages, pl.Response)
	}
}

// rowStore takes the spend writer's rows; nothing else of the store is used.
type rowStore struct {
	store.Store
	rows chan store.SpendLog
}

func (s *rowStore) ApplySpend(_ context.Context, batch []store.SpendLog) error {
	for _, l := range batch {
		s.rows <- l
	}
	return nil
}

// TestSpendRowAndCallbackShareOneCapture: the spend row handed to the
// writer and the callback payload carry the same redacted content with
// store_prompts_in_spend_logs; without it the row has none while the
// callback still gets it.
func TestSpendRowAndCallbackShareOneCapture(t *testing.T) {
	for _, spend := range []bool{false, true} {
		rs := &rowStore{rows: make(chan store.SpendLog, 8)}
		w := ledger.NewWriter(rs, slog.Default())
		go w.Run()
		t.Cleanup(func() { w.Close() })
		r, _ := redact.New(redact.All())
		u := httptest.NewServer(answerWith(chatAnswer))
		t.Cleanup(u.Close)
		deps := []config.Deployment{{ModelName: "g", Provider: "openai", Model: "m", APIBase: u.URL, ID: "d1"}}
		rt, err := router.New(deps, router.Settings{Health: router.NewHealth(nil)})
		if err != nil {
			t.Fatal(err)
		}
		pub := &publisher{got: make(chan *callback.Payload, 8)}
		books := &Books{Book: ledger.NewBook(nil), Writer: w, Snap: auth.NewSnapshot(&store.Snapshot{})}
		g := New(Options{Observer: &Telemetry{Callbacks: pub}, Meter: books, Content: ContentLogging{SpendLogs: spend, Redactor: r}},
			auth.NewAuthenticator(&config.Config{}, nil, auth.Options{}), rt)
		mux := http.NewServeMux()
		g.Register(mux)
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)

		contentPost(t, srv.URL, "/v1/chat/completions", secretPrompt)
		pl := nextPayload(t, pub)
		w.Flush()
		var row store.SpendLog
		select {
		case row = <-rs.rows:
		case <-time.After(time.Minute):
			t.Fatal("no spend row was written")
		}
		if pl.Messages == nil || pl.Response == nil {
			t.Errorf("spend %v: the callback lacks content", spend)
		}
		noSecrets(t, "row messages", row.Messages)
		noSecrets(t, "row response", row.Response)
		if spend && (string(row.Messages) != string(pl.Messages) || string(row.Response) != string(pl.Response)) {
			t.Errorf("row %s / %s, payload %s / %s", row.Messages, row.Response, pl.Messages, pl.Response)
		}
		if !spend && (row.Messages != nil || row.Response != nil) {
			t.Errorf("store_prompts off, yet the row carries %s / %s", row.Messages, row.Response)
		}
	}
}

// TestShapeKeepsJSONValid: whatever was captured, a shaped field is valid
// JSON, masked, and within the cap plus its marker.
func TestShapeKeepsJSONValid(t *testing.T) {
	r, _ := redact.New(redact.All())
	for _, red := range []*redact.Redactor{r, nil} {
		p := newContentPolicy(ContentLogging{MaxBytes: 1024, Redactor: red}, nil, false)
		for _, raw := range []string{
			`[{"role":"user","content":"a@b.io"},]`, // relaxed JSON, as the gateway accepts it
			`"` + strings.Repeat("x", 5000) + ` a@b.io"`,
			`[1,2,3]`,
		} {
			out := p.shape([]byte(raw))
			if !json.Valid(out) || len(out) > 1024+100 {
				t.Errorf("shape(%.40s...) = %.80s (%d bytes)", raw, out, len(out))
			}
			if red != nil && strings.Contains(string(out), "a@b.io") {
				t.Errorf("unmasked: %s", out)
			}
		}
	}
}

// FuzzStreamAnswer: any events, in any client format, assemble into valid
// JSON within the limit, without panicking.
func FuzzStreamAnswer(f *testing.F) {
	f.Add("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\",\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n", 0)
	f.Add("data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\"}}\n\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n", 1)
	f.Add("data: {\"type\":\"response.output_text.delta\",\"delta\":\"x\"}\n\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\"}}\n\n", 2)
	f.Add("data: {\"choices\":[{\"index\":-1,\"text\":\"x\"}]}\n\n", 3)
	ops := []provider.Op{provider.OpChat, provider.OpMessages, provider.OpResponses, provider.OpCompletions}
	f.Fuzz(func(t *testing.T, sse string, op int) {
		a := &streamAnswer{op: ops[(op%4+4)%4], limit: 64}
		a.observe([]byte(sse))
		out := a.json()
		if !json.Valid(out) {
			t.Fatalf("assembled %q is not valid JSON", out)
		}
		if a.kept > a.limit {
			t.Fatalf("kept %d bytes past the limit %d", a.kept, a.limit)
		}
	})
}

// TestResponsesCapture: a Responses API call keeps instructions and input,
// and the answer as the client got it.
func TestResponsesCapture(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{}, answerWith(`{"id":"resp_1","object":"response","status":"completed","model":"m","output":[{"type":"message","id":"msg_1","role":"assistant","content":[{"type":"output_text","text":"call +44 20 7946 0958"}]}],"usage":{"input_tokens":3,"output_tokens":2,"total_tokens":5}}`))
	contentPost(t, url, "/v1/responses", `{"model":"g","instructions":"be brief","input":"my ip is 192.168.0.1"}`)
	pl := nextPayload(t, pub)
	if string(pl.Messages) != `{"instructions":"be brief","input":"my ip is <IP_ADDRESS>"}` {
		t.Errorf("messages %s", pl.Messages)
	}
	if r := string(pl.Response); !strings.Contains(r, `"text":"call <PHONE_NUMBER>"`) || !json.Valid(pl.Response) {
		t.Errorf("response %s", r)
	}
}
