package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/tollgate/tollgate/internal/openapi"
)

// specCheck validates every request the package's tests send through
// http.DefaultClient, and its response, against the OpenAPI document: the
// document cannot drift from what the gateway really accepts and answers.
// Requests the document does not route (an upstream mock, say) pass
// unchecked; TestMain fails the run on any violation.
type specCheck struct {
	base   http.RoundTripper
	router routers.Router

	mu         sync.Mutex
	checked    int
	violations []string
}

func newSpecCheck() (*specCheck, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openapi.Document("test"))
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is invalid: %w", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &specCheck{base: http.DefaultTransport, router: router}, nil
}

func (c *specCheck) fail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.violations) < 50 {
		c.violations = append(c.violations, fmt.Sprintf(format, args...))
	}
}

func (c *specCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		return c.base.RoundTrip(req) // not one of ours
	}
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	check := req.Clone(req.Context())
	check.Body = io.NopCloser(bytes.NewReader(body))
	if len(body) > 0 && check.Header.Get("Content-Type") == "" {
		check.Header.Set("Content-Type", "application/json") // the gateway reads JSON whatever the header says
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	in := &openapi3filter.RequestValidationInput{Request: check, PathParams: params, Route: route, Options: opts}
	// Requests the gateway must refuse are sent on purpose by the tests;
	// check only those it accepted.
	reqErr := openapi3filter.ValidateRequest(req.Context(), in)
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	c.mu.Lock()
	c.checked++
	c.mu.Unlock()
	if resp.StatusCode < 300 && reqErr != nil && !strings.Contains(reqErr.Error(), "invalid character") {
		c.fail("%s %s was accepted (%d) but the document rejects its request: %v", req.Method, req.URL.Path, resp.StatusCode, reqErr)
	}
	ct := resp.Header.Get("Content-Type")
	if !strings.HasPrefix(ct, "application/json") {
		return resp, nil // streams and text: their schema is a string
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	if err != nil {
		return resp, nil
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: opts}
	out.SetBodyBytes(data)
	if err := openapi3filter.ValidateResponse(req.Context(), out); err != nil {
		c.fail("%s %s answered %d with a body the document does not allow: %v\n%s", req.Method, req.URL.Path, resp.StatusCode, err, truncate(data))
	}
	return resp, nil
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}
