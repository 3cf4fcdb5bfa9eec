package gateway

import (
	"strings"
	"testing"
)

// TestLargeMetadataKeepsMessageLoggingOptOut: a request that opts out of
// content logging with metadata.turn_off_message_logging keeps its opt-out
// when its metadata is past 16 KiB and replaced by {"tollgate_truncated":
// true}: the opt-out is read first, and no content reaches callbacks.
func TestLargeMetadataKeepsMessageLoggingOptOut(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{}, answerWith(chatAnswer))
	big := strings.Repeat("x", 17<<10)
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","metadata":{"turn_off_message_logging":true,"spend_logs_metadata":{"note":"`+big+`"}},"messages":[{"role":"user","content":"private"}]}`)
	if pl := nextPayload(t, pub); pl.Messages != nil || pl.Response != nil {
		t.Errorf("metadata.turn_off_message_logging ignored once metadata passes 16 KiB: content %s / %s", pl.Messages, pl.Response)
	}
}
