package gateway

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

// awsFrame is one event-stream frame with the given headers and payload,
// encoded (checksums included) by AWS's encoder.
func awsFrame(t *testing.T, payload string, headers ...string) []byte {
	t.Helper()
	var h eventstream.Headers
	for i := 0; i+1 < len(headers); i += 2 {
		h.Set(headers[i], eventstream.StringValue(headers[i+1]))
	}
	var b bytes.Buffer
	if err := eventstream.NewEncoder().Encode(&b, eventstream.Message{Headers: h, Payload: []byte(payload)}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestAWSEventsAsSSE: ConverseStream's frames read as SSE events named by
// their event type, an exception by its exception type and an error frame
// by its code (its message made the payload); a frame whose checksum does
// not hold ends the stream with an error, not with its payload.
func TestAWSEventsAsSSE(t *testing.T) {
	var stream []byte
	stream = append(stream, awsFrame(t, `{"role":"assistant"}`, ":message-type", "event", ":event-type", "messageStart")...)
	stream = append(stream, awsFrame(t, "{\"delta\":{\"text\":\"a\\nb\"},\n\"contentBlockIndex\":0}", ":message-type", "event", ":event-type", "contentBlockDelta")...)
	stream = append(stream, awsFrame(t, `{"message":"slow down"}`, ":message-type", "exception", ":exception-type", "throttlingException")...)
	stream = append(stream, awsFrame(t, "", ":message-type", "error", ":error-code", "InternalFailure", ":error-message", `it "broke"`)...)
	resp := &http.Response{Header: http.Header{"Content-Type": {"application/vnd.amazon.eventstream"}}, Body: io.NopCloser(bytes.NewReader(stream))}
	if !isAWSEventStream(resp.Header) {
		t.Fatal("not seen as an AWS event stream")
	}
	awsEventsAsSSE(resp)
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	want := "event: messageStart\ndata: {\"role\":\"assistant\"}\n\n" +
		"event: contentBlockDelta\ndata: {\"delta\":{\"text\":\"a\\nb\"}, \"contentBlockIndex\":0}\n\n" +
		"event: throttlingException\ndata: {\"message\":\"slow down\"}\n\n" +
		"event: InternalFailure\ndata: {\"message\":\"it \\\"broke\\\"\"}\n\n"
	if string(got) != want || !isEventStream(resp.Header) {
		t.Fatalf("got\n%q\nwant\n%q (%s)", got, want, resp.Header.Get("Content-Type"))
	}

	bad := awsFrame(t, `{"usage":{"inputTokens":1}}`, ":message-type", "event", ":event-type", "metadata")
	bad[len(bad)-5] ^= 0xff // the payload changed under its checksum
	resp = &http.Response{Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(bad))}
	awsEventsAsSSE(resp)
	if got, err := io.ReadAll(resp.Body); err == nil || strings.Contains(string(got), "usage") {
		t.Fatalf("a corrupt frame read as %q, %v", got, err)
	}
}
