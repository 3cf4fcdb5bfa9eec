package gateway

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/apierror"
)

// TestFailureRowAndPayloadAgree: a failed call's spend row and its
// callbacks' payload name the same error class, whichever signals are set
// (the client leaving, the gateway's own error, the upstream's answer),
// and the client leaving wins over the others.
func TestFailureRowAndPayloadAgree(t *testing.T) {
	own := apierror.BadGateway(errors.New("dial tcp: refused"), "deployment d broke off")
	budget := &apierror.Error{Status: 400, Type: "budget_exceeded", Code: "budget_exceeded", Message: "over"}
	upstream := []byte(`{"error":{"type":"invalid_request_error","code":"context_length_exceeded","message":"the prompt: secret"}}`)
	tests := []struct {
		name     string
		status   int
		gone     bool
		err      error
		upstream []byte
		want     string
	}{
		{"client gone", 499, true, nil, nil, "client_disconnected"},
		{"client gone after an upstream error", 499, true, nil, upstream, "client_disconnected"},
		{"client gone with an error set", 499, true, own, upstream, "client_disconnected"},
		{"status 499 alone", 499, false, context.Canceled, nil, "client_disconnected"},
		{"gateway's own error", 502, false, own, nil, "APIConnectionError"},
		{"gateway's error wins over the upstream's body", 400, false, budget, upstream, "BudgetExceededError"},
		{"upstream's answer", 400, false, nil, upstream, "ContextWindowExceededError"},
		{"status alone", 503, false, nil, nil, "ServiceUnavailableError"},
	}
	for _, tt := range tests {
		c := &call{g: &Gateway{}, req: &request{}, r: httptest.NewRequest("POST", "/v1/chat/completions", nil)}
		c.res.clientGone, c.err, c.upstreamErr = tt.gone, tt.err, tt.upstream
		row := c.failureInfo(tt.status)
		pl := c.payload(tt.status)
		if pl.ErrorInformation == nil {
			t.Fatalf("%s: no error_information in the payload", tt.name)
		}
		if row.ErrorClass != tt.want || pl.ErrorInformation.ErrorClass != tt.want {
			t.Errorf("%s: row %q, payload %q, want %q", tt.name, row.ErrorClass, pl.ErrorInformation.ErrorClass, tt.want)
		}
		if tt.upstream != nil && !tt.gone && tt.err == nil && strings.Contains(row.ErrorMessage, "secret") {
			t.Errorf("%s: the row carries the upstream's message: %q", tt.name, row.ErrorMessage)
		}
	}
}
