// Package spec holds the gateway to its OpenAPI document with kin-openapi's
// validator, which lives in this module so that it stays out of the
// gateway's go.mod. TestExchanges checks every exchange internal/server's
// tests made (that package's TestMain records them and runs it);
// TestDocument checks the document a real tollgate process serves.
package spec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/tollgate/tollgate/sdktest/internal/harness"
)

// exchange is one request and its answer, as internal/server's
// specrecord_test.go writes them, one JSON object a line.
type exchange struct {
	Method         string      `json:"method"`
	URL            string      `json:"url"`
	Header         http.Header `json:"header"`
	Body           []byte      `json:"body"`
	Status         int         `json:"status"`
	ResponseHeader http.Header `json:"response_header"`
	ResponseBody   []byte      `json:"response_body"`
	// ResponseUnread is set when a JSON response's body could not be read.
	ResponseUnread bool `json:"response_unread"`
}

// load reads and validates an OpenAPI document and routes by it.
func load(data []byte) (routers.Router, error) {
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is invalid: %w", err)
	}
	return gorillamux.NewRouter(doc)
}

// check validates one exchange: a request the gateway accepted must be one
// the document allows, and a JSON answer must be one it describes. It
// reports whether the document routes the request at all (an upstream
// mock's, say, it does not).
func check(router routers.Router, ex exchange) (routed bool, violation error) {
	req, err := http.NewRequest(ex.Method, ex.URL, bytes.NewReader(ex.Body))
	if err != nil {
		return false, nil
	}
	req.Header = ex.Header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		return false, nil // not one of ours
	}
	if len(ex.Body) > 0 && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json") // the gateway reads JSON whatever the header says
	}
	ctx := context.Background()
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	// Requests the gateway must refuse are sent on purpose by the tests;
	// check only those it accepted.
	reqErr := openapi3filter.ValidateRequest(ctx, in)
	if ex.Status < 300 && reqErr != nil && !strings.Contains(reqErr.Error(), "invalid character") {
		return true, fmt.Errorf("%s %s was accepted (%d) but the document rejects its request: %v", ex.Method, req.URL.Path, ex.Status, reqErr)
	}
	if !strings.HasPrefix(ex.ResponseHeader.Get("Content-Type"), "application/json") || ex.ResponseUnread {
		return true, nil // streams and text: their schema is a string
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: ex.Status, Header: ex.ResponseHeader,
		Options: opts}
	out.SetBodyBytes(ex.ResponseBody)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return true, fmt.Errorf("%s %s answered %d with a body the document does not allow: %v\n%s", ex.Method, req.URL.Path, ex.Status, err, truncate(ex.ResponseBody))
	}
	return true, nil
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// TestExchanges validates the exchanges in $TOLLGATE_SPEC_EXCHANGES
// (openapi.json and exchanges.jsonl, written by internal/server's tests)
// and fails unless at least $TOLLGATE_SPEC_MIN_EXCHANGES were routed.
func TestExchanges(t *testing.T) {
	dir := os.Getenv("TOLLGATE_SPEC_EXCHANGES")
	if dir == "" {
		t.Skip("TOLLGATE_SPEC_EXCHANGES is unset: internal/server's TestMain records the exchanges and runs this test")
	}
	want, _ := strconv.Atoi(os.Getenv("TOLLGATE_SPEC_MIN_EXCHANGES"))
	doc, err := os.ReadFile(filepath.Join(dir, "openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	router, err := load(doc)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "exchanges.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	checked, violations := 0, 0
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		var ex exchange
		if err := dec.Decode(&ex); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("exchanges.jsonl: %v", err)
		}
		routed, err := check(router, ex)
		if routed {
			checked++
		}
		if err != nil {
			if violations++; violations <= 50 {
				t.Error(err)
			}
		}
	}
	if violations > 0 {
		t.Errorf("%d violations in %d checked exchanges", violations, checked)
	}
	if checked < want {
		t.Errorf("only %d exchanges were checked against the document, want at least %d", checked, want)
	}
	t.Logf("%d exchanges checked", checked)
}

// TestDocument validates the document a real gateway serves at /openapi.json.
func TestDocument(t *testing.T) {
	dir := t.TempDir()
	bin, err := harness.Binary(dir)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := harness.Start(bin, dir, func(upstream string) string {
		return fmt.Sprintf("model_list:\n  - model_name: gpt-4\n    litellm_params: {model: openai/gpt-4o, api_base: %q}\n", upstream)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Stop()
	resp, err := http.Get(gw.URL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/openapi.json: %d %v", resp.StatusCode, err)
	}
	if _, err := load(data); err != nil {
		t.Fatal(err)
	}
}

// TestCheckCatchesViolations feeds check exchanges against a small document:
// it must count what the document routes and report what it does not allow.
func TestCheckCatchesViolations(t *testing.T) {
	router, err := load([]byte(`{"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
	  "paths": {"/v1/things": {"post": {
	    "requestBody": {"required": true, "content": {"application/json": {"schema": {
	      "type": "object", "required": ["model"], "properties": {"model": {"type": "string"}}}}}},
	    "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
	      "type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}}}}}}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	json := http.Header{"Content-Type": {"application/json"}}
	tests := []struct {
		name              string
		ex                exchange
		routed, violation bool
	}{
		{"valid", exchange{Method: "POST", URL: "http://gw/v1/things", Header: json, Body: []byte(`{"model":"m"}`),
			Status: 200, ResponseHeader: json, ResponseBody: []byte(`{"id":"x"}`)}, true, false},
		{"accepted a request the document rejects", exchange{Method: "POST", URL: "http://gw/v1/things", Header: json, Body: []byte(`{"model":5}`),
			Status: 200, ResponseHeader: json, ResponseBody: []byte(`{"id":"x"}`)}, true, true},
		{"refused a request the document rejects", exchange{Method: "POST", URL: "http://gw/v1/things", Header: json, Body: []byte(`{"model":5}`),
			Status: 400, ResponseHeader: http.Header{"Content-Type": {"text/plain"}}}, true, false},
		{"an answer the document does not describe", exchange{Method: "POST", URL: "http://gw/v1/things", Header: json, Body: []byte(`{"model":"m"}`),
			Status: 200, ResponseHeader: json, ResponseBody: []byte(`{"id":7}`)}, true, true},
		{"not routed", exchange{Method: "GET", URL: "http://upstream/v1/models", Status: 200, ResponseHeader: json,
			ResponseBody: []byte(`{}`)}, false, false},
	}
	for _, tt := range tests {
		routed, err := check(router, tt.ex)
		if routed != tt.routed || (err != nil) != tt.violation {
			t.Errorf("%s: routed %v, violation %v; want %v, %v", tt.name, routed, err, tt.routed, tt.violation)
		}
	}
}
