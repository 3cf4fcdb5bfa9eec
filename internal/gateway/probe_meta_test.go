package gateway

import (
	"strings"
	"testing"
)

// TestProbeLargeMetadataLosesMessageLoggingOptOut: a request opts out of
// content logging with metadata.turn_off_message_logging (documented in
// content-logging.md). readMeta replaces metadata past 16 KiB with
// {"tollgate_truncated": true} before contentAllowed reads it, so a
// request with a large metadata object (a long spend_logs_metadata, a
// trace context) has its messages and answer captured and sent to the
// callbacks (and the spend row) although it said not to.
func TestProbeLargeMetadataLosesMessageLoggingOptOut(t *testing.T) {
	url, pub := contentRig(t, ContentLogging{}, answerWith(chatAnswer))
	big := strings.Repeat("x", 17<<10)
	contentPost(t, url, "/v1/chat/completions", `{"model":"g","metadata":{"turn_off_message_logging":true,"spend_logs_metadata":{"note":"`+big+`"}},"messages":[{"role":"user","content":"private"}]}`)
	if pl := nextPayload(t, pub); pl.Messages != nil || pl.Response != nil {
		t.Errorf("metadata.turn_off_message_logging ignored once metadata passes 16 KiB: content %s / %s", pl.Messages, pl.Response)
	}
}
