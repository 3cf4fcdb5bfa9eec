package mockupstream

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func call(t *testing.T, url, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func dataLines(body string) []string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if d, ok := strings.CutPrefix(l, "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

func TestChat(t *testing.T) {
	s := New(Options{})
	ts := httptest.NewServer(s)
	defer ts.Close()
	// 40 bytes of prompt text: 10 prompt tokens; the reply is 3 + 2 words.
	_, b := call(t, ts.URL+"/v1/chat/completions", `{"model":"m","messages":[{"role":"system","content":"`+strings.Repeat("s", 32)+`"},{"role":"user","content":"ab cdefg"}]}`)
	var out struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message      struct{ Role, Content string } `json:"message"`
			FinishReason string                         `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
			TotalTokens      int `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal([]byte(b), &out); err != nil {
		t.Fatal(err, b)
	}
	if out.Object != "chat.completion" || out.Model != "m" || out.Choices[0].Message.Content != "Hello! You said: ab cdefg" || out.Choices[0].FinishReason != "stop" {
		t.Errorf("response = %s", b)
	}
	if out.Usage.PromptTokens != 10 || out.Usage.CompletionTokens != 5 || out.Usage.TotalTokens != 15 {
		t.Errorf("usage = %+v", out.Usage)
	}
	_, b = call(t, ts.URL+"/v1/chat/completions", `{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"x"}]}`)
	if !strings.Contains(b, `"content":"Hello! You"`) || !strings.Contains(b, `"finish_reason":"length"`) || !strings.Contains(b, `"completion_tokens":2`) {
		t.Errorf("max_tokens not honoured: %s", b)
	}
	_, b = call(t, ts.URL+"/v1/chat/completions", `{"model":"m","messages":[]}`, "x-mock-completion-tokens", "50", "x-mock-no-usage", "1")
	if strings.Contains(b, "usage") || strings.Count(b, "lorem") != 47 {
		t.Errorf("x-mock-completion-tokens / no-usage: %s", b)
	}
}

func TestChatStream(t *testing.T) {
	s := New(Options{Chunks: 2})
	ts := httptest.NewServer(s)
	defer ts.Close()
	tests := []struct {
		name      string
		body      string
		wantUsage bool
	}{
		{"without usage", `{"model":"m","stream":true,"messages":[{"role":"user","content":"one two three"}]}`, false},
		{"with usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"one two three"}]}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := call(t, ts.URL+"/v1/chat/completions", tt.body)
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("content type %q", ct)
			}
			lines := dataLines(b)
			// role, two content chunks, finish, [usage], [DONE]
			want := 5
			if tt.wantUsage {
				want = 6
			}
			if len(lines) != want || lines[len(lines)-1] != "[DONE]" {
				t.Fatalf("%d events: %q", len(lines), lines)
			}
			var text strings.Builder
			for _, l := range lines[:3] {
				var c struct {
					Choices []struct{ Delta struct{ Content string } } `json:"choices"`
				}
				json.Unmarshal([]byte(l), &c)
				text.WriteString(c.Choices[0].Delta.Content)
			}
			if text.String() != "Hello! You said: one two three" {
				t.Errorf("streamed text %q", text.String())
			}
			if !strings.Contains(lines[3], `"finish_reason":"stop"`) {
				t.Errorf("finish chunk %s", lines[3])
			}
			if tt.wantUsage && !strings.Contains(lines[4], `"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":6,"total_tokens":9}`) {
				t.Errorf("usage chunk %s", lines[4])
			}
		})
	}
	if st := s.Stats(); st.StreamsCompleted != 2 || st.Requests != 2 || st.ByPath["/v1/chat/completions"] != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestStreamFlushesEachChunkAndCountsAborts(t *testing.T) {
	s := New(Options{Chunks: 5, ChunkDelay: time.Hour})
	ts := httptest.NewServer(s)
	defer ts.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true,"messages":[]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"role":"assistant"`) {
		t.Fatalf("first chunk not flushed before the hour-long delay: %q %v", line, err)
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().StreamsAborted != 1 {
		if time.Now().After(deadline) {
			t.Fatal("aborted stream not counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEmbeddingsCompletionsModels(t *testing.T) {
	ts := httptest.NewServer(New(Options{}))
	defer ts.Close()
	_, b := call(t, ts.URL+"/v1/embeddings", `{"model":"e","input":["a","b"],"dimensions":3}`)
	var emb struct {
		Data []struct {
			Embedding []float64 `json:"embedding"`
			Index     int       `json:"index"`
		} `json:"data"`
	}
	json.Unmarshal([]byte(b), &emb)
	if len(emb.Data) != 2 || len(emb.Data[1].Embedding) != 3 || emb.Data[1].Index != 1 {
		t.Errorf("embeddings %s", b)
	}
	_, b = call(t, ts.URL+"/v1/embeddings", `{"model":"e","input":"hello","encoding_format":"base64"}`)
	if !strings.Contains(b, `"embedding":"`) {
		t.Errorf("base64 embeddings %s", b)
	}
	_, b = call(t, ts.URL+"/v1/embeddings", `{"model":"e"}`)
	if !strings.Contains(b, "input is required") {
		t.Errorf("missing input %s", b)
	}
	_, b = call(t, ts.URL+"/completions", `{"model":"c","prompt":"say hi"}`)
	if !strings.Contains(b, `"object":"text_completion"`) || !strings.Contains(b, `"text":"Hello! You said: say hi"`) {
		t.Errorf("completions %s", b)
	}
	resp, err := http.Get(ts.URL + "/v1/models")
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestAzureAndFailures(t *testing.T) {
	s := New(Options{})
	ts := httptest.NewServer(s)
	defer ts.Close()
	resp, b := call(t, ts.URL+"/openai/deployments/dep1/chat/completions?api-version=2024-10-21", `{"messages":[]}`)
	if resp.StatusCode != 200 || !strings.Contains(b, `"model":"dep1"`) {
		t.Errorf("azure: %d %s", resp.StatusCode, b)
	}
	resp, _ = call(t, ts.URL+"/openai/deployments/dep1/chat/completions", `{"messages":[]}`)
	if resp.StatusCode != 400 {
		t.Errorf("azure without api-version: %d", resp.StatusCode)
	}
	resp, b = call(t, ts.URL+"/v1/chat/completions", `{"model":"m"}`, "x-mock-status", "503")
	if resp.StatusCode != 503 || !strings.Contains(b, `"type":"api_error"`) {
		t.Errorf("x-mock-status: %d %s", resp.StatusCode, b)
	}
	resp, _ = call(t, ts.URL+"/v1/chat/completions", `{"model":`)
	if resp.StatusCode != 400 {
		t.Errorf("malformed JSON: %d", resp.StatusCode)
	}
	if got := s.LastRequest(); got.Body == nil || got.Path != "/v1/chat/completions" {
		t.Errorf("last request %+v", got)
	}
	failing := httptest.NewServer(New(Options{FailStatus: 429}))
	defer failing.Close()
	resp, b = call(t, failing.URL+"/v1/messages", `{}`, "anthropic-version", "2023-06-01")
	if resp.StatusCode != 429 || !strings.Contains(b, `"type":"error"`) {
		t.Errorf("FailStatus on anthropic path: %d %s", resp.StatusCode, b)
	}
}

func TestAnthropicMessages(t *testing.T) {
	ts := httptest.NewServer(New(Options{Chunks: 2}))
	defer ts.Close()
	body := `{"model":"claude","max_tokens":100,"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"hi there"}]}]}`
	resp, _ := call(t, ts.URL+"/v1/messages", body)
	if resp.StatusCode != 400 {
		t.Errorf("missing anthropic-version: %d", resp.StatusCode)
	}
	_, b := call(t, ts.URL+"/v1/messages", body, "anthropic-version", "2023-06-01")
	if !strings.Contains(b, `"type":"message"`) || !strings.Contains(b, `"text":"Hello! You said: hi there"`) || !strings.Contains(b, `"input_tokens":4`) || !strings.Contains(b, `"stop_reason":"end_turn"`) {
		t.Errorf("message %s", b)
	}
	_, b = call(t, ts.URL+"/v1/messages", strings.Replace(body, `"max_tokens":100`, `"max_tokens":100,"stream":true`, 1), "anthropic-version", "2023-06-01")
	var events []string
	for _, l := range strings.Split(b, "\n") {
		if e, ok := strings.CutPrefix(l, "event: "); ok {
			events = append(events, e)
		}
	}
	want := "message_start content_block_start ping content_block_delta content_block_delta content_block_stop message_delta message_stop"
	if got := strings.Join(events, " "); got != want {
		t.Errorf("events\n got %s\nwant %s", got, want)
	}
	_, b = call(t, ts.URL+"/v1/messages/count_tokens", body, "anthropic-version", "2023-06-01")
	if b != "{\"input_tokens\":4}\n" {
		t.Errorf("count_tokens %q", b)
	}
}

func BenchmarkChat(b *testing.B) {
	ts := httptest.NewServer(New(Options{NoRecord: true}))
	defer ts.Close()
	body := `{"model":"m","messages":[{"role":"user","content":"hello there"}]}`
	b.ReportAllocs()
	for b.Loop() {
		resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
