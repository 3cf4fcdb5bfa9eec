package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/tollgate/tollgate/internal/callback"
)

// TestMetadataIsNotForwarded: a chat body's metadata and litellm_metadata
// (LiteLLM's: tags, generation_name) are the gateway's; the upstream gets
// the body without them, everything else as sent, and the call still
// carries the tags and the metadata. A body without them goes as sent.
func TestMetadataIsNotForwarded(t *testing.T) {
	pub := &publisher{got: make(chan *callback.Payload, 4)}
	bodies := make(chan []byte, 4)
	url := metaRig(t, pub, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- b
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`)
	})
	status, body := metaPost(t, url, `{"model":"g","metadata":{"tags":["eval"],"generation_name":"g1"},"messages":[{"role":"user","content":"hi"}],"temperature":0.5,"litellm_metadata":{"tags":["lm"]}}`)
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(<-bodies, &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got["metadata"]; ok {
		t.Errorf("metadata forwarded: %s", got["metadata"])
	}
	if _, ok := got["litellm_metadata"]; ok {
		t.Errorf("litellm_metadata forwarded: %s", got["litellm_metadata"])
	}
	if string(got["model"]) != `"m"` || string(got["temperature"]) != "0.5" || string(got["messages"]) != `[{"role":"user","content":"hi"}]` {
		t.Errorf("forwarded body %v", got)
	}
	pl := nextPayload(t, pub)
	if len(pl.RequestTags) != 2 || pl.Metadata.RequesterMetadata["generation_name"] != "g1" {
		t.Errorf("the call lost its tags or metadata: %v %v", pl.RequestTags, pl.Metadata.RequesterMetadata)
	}

	const plain = `{"model":"g", "messages":[{"role":"user","content":"hi"}] }`
	if status, body := metaPost(t, url, plain); status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	if b := <-bodies; string(b) != `{"model":"m", "messages":[{"role":"user","content":"hi"}] }` {
		t.Errorf("a body without metadata was changed beyond its model: %s", b)
	}
}
