package server

import (
	"bytes"

	"fmt"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// TestProbeBedrockResponsesMaxOutputTokens: a Responses client's
// max_output_tokens must reach Converse as inferenceConfig.maxTokens (the
// hold was sized on it).
func TestProbeBedrockResponsesMaxOutputTokens(t *testing.T) {
	e, chk := bedrockOnChecker(t, "  - model_name: claude\n    litellm_params: "+bedrockSonnet+"}\n")
	key := newKey(t, e, `{"max_budget": 5}`)
	resp, out := e.post(t, "/v1/responses", key, `{"model":"claude","max_output_tokens":17,"input":"violet indigo"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("responses: %d %v", resp.StatusCode, out)
	}
	if _, body := chk.last(); !strings.Contains(body, `"maxTokens":17`) {
		t.Fatalf("max_output_tokens 17 did not reach Converse: %s", body)
	}
}

// TestProbeBedrockDefaultModeCaps: docs/providers.md says a Bedrock
// request capped in the default budget mode gets inferenceConfig.maxTokens.
// With one request in flight on a key whose budget cannot hold the
// second's worst case (and that first one uncovered, holding its learned
// estimate), the second must be served capped, as a chat deployment's is,
// not refused.
func TestProbeBedrockDefaultModeCaps(t *testing.T) {
	e, chk := bedrockOnChecker(t, "  - model_name: claude\n    litellm_params: "+bedrockSonnet+"}\n"+
		"  - model_name: slow\n    litellm_params: "+bedrockSonnet+`, headers: {x-mock-delay-ms: "15000"}}`+"\n")
	// The slow deployment learns its answers are one token long.
	if resp, out := e.post(t, "/v1/chat/completions", newKey(t, e, `{}`), `{"model":"slow","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %v", resp.StatusCode, out)
	}
	key := newKey(t, e, `{"max_budget": 0.05}`)
	seen := chk.reached()
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(`{"model":"slow","messages":[{"role":"user","content":"hold"}]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	for deadline := time.Now().Add(30 * time.Second); chk.reached() == seen; {
		if time.Now().After(deadline) {
			t.Fatal("the slow request never reached Bedrock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"claude","messages":[{"role":"user","content":"capped please"}]}`)
	_, body := chk.last()
	capped := resp.Header.Get("X-Tollgate-Output-Capped")
	<-done
	if resp.StatusCode != 200 || capped == "" || !strings.Contains(body, fmt.Sprintf(`"maxTokens":%s`, capped)) {
		t.Fatalf("second request: %d capped %q %v; upstream body %s", resp.StatusCode, capped, out, body)
	}
}

// TestProbeBedrockBadCRCMidStream: a ConverseStream whose third frame has
// a bad checksum: the client's stream must end with an error (not a clean
// [DONE] as if complete) and the answer must be booked.
func TestProbeBedrockBadCRCMidStream(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
		enc := eventstream.NewEncoder()
		frame := func(name, payload string) []byte {
			var b bytes.Buffer
			var h eventstream.Headers
			h.Set(":message-type", eventstream.StringValue("event"))
			h.Set(":event-type", eventstream.StringValue(name))
			h.Set(":content-type", eventstream.StringValue("application/json"))
			_ = enc.Encode(&b, eventstream.Message{Headers: h, Payload: []byte(payload)})
			return b.Bytes()
		}
		w.Write(frame("messageStart", `{"role":"assistant"}`))
		w.Write(frame("contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"partial answer "}}`))
		bad := frame("contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"corrupted"}}`)
		bad[len(bad)-1] ^= 0xff // the message CRC no longer holds
		w.Write(bad)
		w.Write(frame("messageStop", `{"stopReason":"end_turn"}`))
	}))
	defer up.Close()
	cfg, err := config.Parse("c.yaml", []byte("model_list:\n  - model_name: claude\n    litellm_params: "+strings.ReplaceAll(bedrockSonnet, "BASE", up.URL)+"}\ngeneral_settings:\n  master_key: sk-1234\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{"max_budget": 5}`)
	resp, raw := e.send(t, "/v1/chat/completions", key, "application/json", `{"model":"claude","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	if resp.StatusCode != 200 || !strings.Contains(string(raw), "partial answer") {
		t.Fatalf("stream: %d %s", resp.StatusCode, raw)
	}
	rows := spendRows(t, e, key)
	if len(rows) != 1 || rows[0].Cost <= 0 || rows[0].CompletionTokens <= 0 {
		t.Fatalf("a stream cut by a bad CRC booked %+v", rows)
	}
	if strings.Contains(string(raw), "[DONE]") && !strings.Contains(string(raw), `"error"`) {
		t.Fatalf("a stream cut by a bad CRC ended like a whole answer: %s", raw)
	}
}
