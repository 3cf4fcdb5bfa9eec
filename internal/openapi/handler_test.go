package openapi

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestDocumentBuiltOnFirstRequest: registering the routes builds no
// document (≈ 0.35 MB kept and tens of milliseconds at every start, for a
// route few gateways are asked for); the first GET /openapi.json builds it,
// and it is Document's bytes.
func TestDocumentBuiltOnFirstRequest(t *testing.T) {
	const version = "test-lazy-document"
	mux := http.NewServeMux()
	Register(func(pattern string, h http.Handler) { mux.Handle(pattern, h) }, version)
	if _, ok := documents.Load(version); ok {
		t.Fatal("Register built the document before anyone asked for it")
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for range 2 {
		resp, err := http.Get(srv.URL + "/openapi.json")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !bytes.Equal(body, Document(version)) {
			t.Fatalf("GET /openapi.json: %d %q, %d bytes, not Document's", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	}
	if _, ok := documents.Load(version); !ok {
		t.Fatal("the document was not kept after the first request")
	}
}
